"""Turn every speed, latency and accuracy result file into the report's tables.

Writes speed-bs{bs}.md and energy-bs{bs}.md per configured batch size, latency-bs{bs}.md
per latency batch size, precision.md, cells.csv and report.md into --out-dir (see
infbench/tables.py for what each holds).

With --what-ran PLAN (the workflow's onerror hook writes the plan after a failed or
interrupted run), the tables are made from the result files that exist and say first that
they are partial: a cell whose job, or a step it needs, failed shows ``failed`` with the
one sentence of that step's log, and a cell that was evaluated but not scored (its
reference failed) shows top-1 and top-5, scored here without the reference into PLAN's
``partial_dir``.
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.flops import read_macs  # noqa: E402
from infbench.tables import write_tables  # noqa: E402


def read_config(path):
    """The validated config that the rule dumped as JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(
            f"config dump {path} cannot be read ({err.__class__.__name__}); delete it so the workflow writes it again"
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"config dump {path} is not a JSON object; delete it so the workflow writes it again")
    return config


# the line launch.sh ends every step's log with: the step's exit status
EXIT_LINE = "infbench-exit:"
# the statuses of a step ended by Ctrl-C (SIGINT) or SIGTERM: interrupted, not failed
INTERRUPTED = ("130", "143")


def read_log(path):
    """A step's log as its non-empty lines and its exit status: (lines, status), status
    None where the log has no exit line (the step was killed, or is older than that line);
    None for a log that does not exist (the step never ran)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return None
    status = None
    if lines and lines[-1].startswith(EXIT_LINE):
        status = lines.pop()[len(EXIT_LINE) :].strip()
    return lines, status


def log_reason(lines, mentioning=None):
    """The sentence a failed step left in its log: its ``infbench:`` line (the one that
    mentions ``mentioning``, if one does, e.g. a cell's batch size), else its last line."""
    said = [line[len("infbench:") :].strip() for line in lines if line.startswith("infbench:")]
    if said:
        return next((s for s in said if mentioning and mentioning in s), said[-1])
    return lines[-1][:300] if lines else "its log is empty"


def killed(signal_number):
    """The reason of a step whose process a signal ended (its shell saw status 128 + N)."""
    import signal

    try:
        name = signal.Signals(signal_number).name
    except ValueError:
        name = f"signal {signal_number}"
    why = " (the kernel's out-of-memory killer sends it when memory runs out)" if name == "SIGKILL" else ""
    return f"its process was killed by {name}{why}"


def step_failure(step, mentioning=None):
    """Why a step that a cell needs did not give it a result, or None: it failed (its log
    ends with a non-zero exit status), or it was interrupted (no exit status, and its
    outputs are missing). A step that never ran, or finished, says nothing."""
    log = read_log(step["log"])
    if log is None:
        return None
    lines, status = log
    if status == "0":
        return None
    if status is None:
        if all(os.path.exists(p) for p in step["outputs"]):
            return None  # a finished step whose log predates the exit line
        reason = "it was interrupted before it finished"
    elif status in INTERRUPTED:
        reason = "it was interrupted before it finished"
    elif status.isdigit() and int(status) > 128 and not any(line.startswith("infbench:") for line in lines):
        reason = killed(int(status) - 128)
    else:
        reason = log_reason(lines, mentioning)
    return reason if step.get("own") else f"{step['name']} failed: {reason}"


def first_failure(steps, mentioning=None):
    """The first step of a cell (upstream first, its own job last) that explains why the
    cell has no current result."""
    return next((r for r in (step_failure(s, mentioning) for s in steps) if r is not None), None)


def what_ran(plan):
    """(speed files, accuracy files, failures, latency files) from a plan of the configured
    cells.

    Every result file that exists is passed on (the tables show only those measured
    under the current config); a cell's failure is the first of the steps it needs that
    failed or was interrupted, so a cell whose checkpoint download failed says so."""
    from score import summarise

    from infbench import results

    speed, accuracy, failures, latency = [], [], {}, []
    for kind, found in (("speed", speed), ("latency", latency)):
        for cell in plan.get(kind, []):
            if os.path.exists(cell["result"]):
                found.append(cell["result"])
            if (reason := first_failure(cell["steps"], f"batch size {cell['key'][-1]}")) is not None:
                failures[(kind, *cell["key"])] = reason
    for cell in plan["accuracy"]:
        key = ("accuracy", *cell["key"], None)
        if os.path.exists(cell["result"]):
            accuracy.append(cell["result"])
        elif os.path.exists(cell["predictions"]):  # evaluated; its score did not run
            reference = cell["reference_predictions"]
            partial = os.path.join(plan["partial_dir"], cell["result"].replace(os.sep, "-"))
            try:
                results.write(
                    partial,
                    summarise(
                        cell["predictions"],
                        cell["labels"],
                        reference if os.path.exists(reference) else None,
                        cell["reference"],
                        cell["random_weights"],
                        cell["bad_images"] if os.path.exists(cell.get("bad_images") or "") else None,
                    ),
                )
            except UserError as err:  # one unreadable file costs its cell, not the tables
                failures[key] = str(err)
                continue
            accuracy.append(partial)
        if key not in failures and (reason := first_failure(cell["steps"])) is not None:
            failures[key] = reason
    return speed, accuracy, failures, latency


def model_macs(config, paths):
    """{model: MACs per image} from the records convert_weights wrote (those of the
    config's arch and crop), for the tables' "% of peak"; an unreadable record is said and
    costs only its model's MACs."""
    macs, problems = read_macs(paths, config.get("models") or {})
    for problem in problems:
        print(f"infbench: {problem}", file=sys.stderr)
    return macs


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="the workflow's config as JSON (unless --what-ran)")
    parser.add_argument("--what-ran", metavar="PLAN", help="tables from the result files that exist (JSON plan)")
    parser.add_argument("--models", help="the models in the config file's order, JSON (rows follow it)")
    parser.add_argument("--speed", nargs="*", default=[], metavar="F", help="speed result files (.json)")
    parser.add_argument("--latency", nargs="*", default=[], metavar="F", help="latency result files (.json)")
    parser.add_argument("--accuracy", nargs="*", default=[], metavar="F", help="accuracy summaries (.json)")
    parser.add_argument("--macs", nargs="*", default=[], metavar="F", help="MACs per image records (.json)")
    parser.add_argument("--out-dir", required=True, help="where the tables go")
    args = parser.parse_args()
    if args.what_ran:
        plan = read_config(args.what_ran)
        speed, accuracy, failures, latency = what_ran(plan)
        # a model whose conversion failed has no record: its cells have no result either
        macs = model_macs(plan["config"], [p for p in plan.get("macs", []) if os.path.exists(p)])
        done = write_tables(
            plan["config"], speed, accuracy, args.out_dir, failures, macs, partial=True, latency_files=latency
        )
    elif args.config:
        config = read_config(args.config)
        if args.models:  # the dump's keys are sorted; the rows keep the config file's order
            config["models"] = {m: config["models"][m] for m in json.loads(args.models)}
        done = write_tables(
            config,
            args.speed,
            args.accuracy,
            args.out_dir,
            macs=model_macs(config, args.macs),
            latency_files=args.latency,
        )
        # every cell has its summary now: partial ones from a failed run are stale
        shutil.rmtree(os.path.join(args.out_dir, "what-ran"), ignore_errors=True)
    else:
        raise UserError("give --config (with --speed, --latency and --accuracy) or --what-ran PLAN")
    for path in done["unused"]:
        print(f"infbench: {path} is for a cell not in the config; left out", file=sys.stderr)
    for path in done["written"]:
        print(path)


if __name__ == "__main__":
    main_guard(main)
