"""Do other GPUs' jobs disturb a timed cell? The same cells timed alone and beside each kind.

With ``--resources gpu=N`` the workflow times a cell on one GPU, pinned to that GPU's share
of the cores (infbench/slots.py), while the other GPUs run other jobs: timed cells, accuracy
runs, engine builds, and CPU steps (int8 calibration) on the cores the timed cells leave.
This replays finished speed jobs (each result's provenance holds its interpreter and
command) through launch.sh as the workflow starts them, so with the same GPU slots and
pinning: on the first GPU of ``--gpus`` alone, then while each kind of load runs on the
other GPUs (``timed``: the same speed jobs, round robin; ``accuracy``: evaluate.py on their
artifacts; ``build``: TensorRT engine builds from the sidecars under results/engines, each
from an empty timing cache; ``cpu``: int8 calibration of the measured model on the CPU, as
many at once as ``--cpu-jobs``). Rounds alternate the order of the kinds. Each cell's ratio
is its median images/s beside a kind over its median alone; the issue's bar is 0.98.

    python benchmarks/interference.py results/speed/*/resnet50/*-bs8.json --gpus 0 1 \\
        --load timed accuracy build cpu --rounds 3 --json interference.json

Prints a markdown table (cell, alone, each kind: images/s and ratio) and writes every
round's numbers to ``--json``. ``--timing`` replaces the jobs' timing block (shorter windows
for a short session); the ratios compare like with like either way.
"""

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "workflow", "scripts")
LAUNCH = os.path.join(SCRIPTS, "launch.sh")
BAR = 0.98
KINDS = ("timed", "accuracy", "build", "cpu")


def option_values(argv, option):
    """The values after ``option`` in ``argv`` up to the next option."""
    i = argv.index(option) + 1
    values = []
    while i < len(argv) and not argv[i].startswith("--"):
        values.append(argv[i])
        i += 1
    return values


def replace_option(argv, option, values):
    """``argv`` with ``option``'s values replaced by ``values`` (dropped where None)."""
    i = argv.index(option)
    j = i + 1 + len(option_values(argv, option))
    return argv[:i] + ([option, *values] if values is not None else []) + argv[j:]


def speed_jobs(paths, pythons=None):
    """The speed jobs that made these result files, once each: {"python", "argv" (this
    checkout's measure_speed.py and the job's arguments), "cells" (runtime/model/precision/bs
    of each --out, in order)}. The interpreter is the result's own, or ``pythons[runtime]``:
    the one the workflow was given (a wrapper that sets its environment, say)."""
    jobs = {}
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        provenance = result["provenance"]
        argv = [os.path.join(SCRIPTS, os.path.basename(provenance["command"][0])), *provenance["command"][1:]]
        key = json.dumps(argv)
        if key not in jobs:
            runtime = option_values(argv, "--runtime")[0]
            python = (pythons or {}).get(runtime, provenance["host"]["executable"])
            jobs[key] = {"python": python, "argv": argv, "cells": cells_of(argv)}
    return list(jobs.values())


def cells_of(argv):
    """The cells a measure_speed.py command times, in the order of its --out files."""
    name = "/".join(option_values(argv, option)[0] for option in ("--runtime", "--model", "--precision"))
    return [f"{name}/bs{bs}" for bs in option_values(argv, "--batch-size")]


def speed_command(job, out_dir, timing=None):
    """A speed job's command, its results written into ``out_dir`` (and its timing block
    replaced by ``timing``, JSON, where given)."""
    outs = [os.path.join(out_dir, f"cell{i}.json") for i in range(len(job["cells"]))]
    argv = replace_option(job["argv"], "--out", outs)
    if timing is not None:
        argv = replace_option(argv, "--timing", [timing])
    return [job["python"], *argv]


def evaluate_command(job, out):
    """evaluate.py on a speed job's cell (its first batch size and artifact): the accuracy run
    of the same cell, predictions to ``out``."""
    argv = job["argv"]
    keep = ("--runtime", "--model", "--arch", "--precision", "--device", "--crop", "--options", "--cache")
    args = []
    for option in keep:
        args += [option, *option_values(argv, option)]
    args += ["--batch-size", option_values(argv, "--batch-size")[0], "--artifact", option_values(argv, "--artifact")[0]]
    script = os.path.join(SCRIPTS, "evaluate.py")
    return [job["python"], script, *args, "--keep-logits", "0", "--out", out]


def build_command(sidecar, python, out_dir, index):
    """build_engine.py for the engine a sidecar describes, from an empty timing cache (the
    build times every tactic, as the first build of a run does), into ``out_dir``."""
    build = sidecar["build"]
    plan = os.path.join(out_dir, f"engine{index}.plan")
    argv = [python, os.path.join(SCRIPTS, "build_engine.py"), "--onnx", sidecar["onnx"],
            "--batch-size", str(build["batch_size"]), "--precision", build["precision"],
            "--workspace-mib", str(build["workspace_mib"]), "--allow-tf32", str(int(build["allow_tf32"])),
            "--timing-cache", os.path.join(out_dir, f"timing{index}.cache"),
            "--out", plan, "--sidecar", plan[: -len(".plan")] + ".json"]  # fmt: skip
    if build.get("tactic_sources") is not None:
        argv.append(f"--tactic-sources={','.join(build['tactic_sources'])}")
    if build.get("builder_optimization_level") is not None:
        argv += ["--builder-optimization-level", str(build["builder_optimization_level"])]
    return argv


def calibrate_command(job, python, out_dir, index, images=100):
    """calibrate_int8.py of the job's model from its fp32 ONNX, on ``images`` of its tensor
    cache (entropy; 100: config/gpu.yaml's calibration), into ``out_dir``."""
    argv = job["argv"]
    cache = option_values(argv, "--cache")[0]
    results = os.path.dirname(os.path.dirname(os.path.dirname(cache)))  # results/cache/<kind>/<size>.npy
    kind = os.path.basename(os.path.dirname(cache))
    model = option_values(argv, "--model")[0]
    out = os.path.join(out_dir, f"calibration{index}")
    return [python, os.path.join(SCRIPTS, "calibrate_int8.py"),
            "--onnx", os.path.join(results, "onnx", model, "fp32.onnx"), "--cache", cache,
            "--index", os.path.join(results, "datasets", kind, "index.tsv"), "--images", str(images),
            "--method", "entropy", "--out-s8s8", f"{out}-s8s8.onnx", "--out-u8s8", f"{out}-u8s8.onnx",
            "--out-list", f"{out}.tsv"]  # fmt: skip


def launched(command, log, gpu=None):
    """``command`` (interpreter, script, arguments) started through launch.sh, as a step of
    the workflow, on GPU ``gpu`` (CUDA_VISIBLE_DEVICES, so that its slot is that GPU's), in a
    process group of its own."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    python, script, *args = command
    return subprocess.Popen(
        ["bash", LAUNCH, python, f"{python} does not exist", script, log, *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


class Load:
    """Commands run back to back on each of their GPUs (or the CPU) until ``stop``: one
    thread per lane, each starting the next command as the last one ends."""

    def __init__(self, lanes, work):
        self.lanes, self.work = lanes, work  # lanes: [(gpu or None, [command factory, ...])]
        self.stopping = threading.Event()
        self.running, self.finished, self.failed, self.lock = {}, 0, [], threading.Lock()
        self.threads = [threading.Thread(target=self.lane, args=(i,), daemon=True) for i in range(len(lanes))]

    def lane(self, i):
        gpu, factories = self.lanes[i]
        n = 0
        while not self.stopping.is_set():
            out_dir = tempfile.mkdtemp(dir=self.work)
            command = factories[n % len(factories)](out_dir)
            log = os.path.join(out_dir, "step.log")
            with self.lock:
                if self.stopping.is_set():
                    return
                proc = self.running[i] = launched(command, log, gpu)
            status = proc.wait()
            with self.lock:
                if not self.stopping.is_set():
                    if status == 0:
                        self.finished += 1
                    else:
                        self.failed.append(log)
            n += 1

    def start(self, settle_s):
        for thread in self.threads:
            thread.start()
        time.sleep(settle_s)  # past the loads' start-up, into their steady work

    def stop(self):
        """Stop every lane (its step killed: SIGTERM to its process group); the load steps
        that finished and the logs of those that failed while it ran."""
        with self.lock:
            self.stopping.set()
            for proc in self.running.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
        for thread in self.threads:
            thread.join(timeout=60)
        return self.finished, self.failed


def measure(job, gpu, work, timing):
    """One replay of a speed job on ``gpu``: {cell: images/s}."""
    out_dir = tempfile.mkdtemp(dir=work)
    proc = launched(speed_command(job, out_dir, timing), os.path.join(out_dir, "step.log"), gpu)
    if proc.wait() != 0:
        with open(os.path.join(out_dir, "step.log")) as f:
            raise SystemExit(f"interference: the replay of {job['cells']} failed:\n{f.read()[-3000:]}")
    rates = {}
    for i, cell in enumerate(job["cells"]):
        with open(os.path.join(out_dir, f"cell{i}.json")) as f:
            rates[cell] = json.load(f)["result"]["images_per_s"]
    return rates


def load_lanes(kind, jobs, others, args, work):
    """The lanes of a kind of load: [(gpu, [command factory])]."""
    if kind == "timed":
        return [(g, [lambda d, j=j: speed_command(j, d, args.timing) for j in jobs]) for g in others]
    if kind == "accuracy":
        return [(g, [lambda d, j=j: evaluate_command(j, os.path.join(d, "p.npz")) for j in jobs]) for g in others]
    if kind == "build":
        sidecars = sorted(glob.glob(os.path.join(args.results, "engines", "*", "*.json")))
        python = next((j["python"] for j in jobs if option_values(j["argv"], "--runtime")[0] == "tensorrt"), None)
        if not sidecars or python is None:
            return None
        made = []
        for i, path in enumerate(sidecars):
            with open(path) as f:
                made.append(lambda d, s=json.load(f), i=i: build_command(s, python, d, i))
        return [(g, made) for g in others]
    if kind == "cpu":
        return [
            (None, [lambda d, i=i: calibrate_command(jobs[0], sys.executable, d, i, args.cpu_images)])
            for i in range(args.cpu_jobs)
        ]
    raise ValueError(kind)


def ratios(rounds, kinds):
    """{cell: {"alone": median, kind: median, kind + "_ratio": median beside / median alone}}
    from ``rounds``: [{"kind": ..., "rates": {cell: images/s}}]."""
    table = {}
    for cell in sorted({c for r in rounds for c in r["rates"]}):
        alone = statistics.median(r["rates"][cell] for r in rounds if r["kind"] == "alone" and cell in r["rates"])
        row = {"alone": alone}
        for kind in kinds:
            beside = [r["rates"][cell] for r in rounds if r["kind"] == kind and cell in r["rates"]]
            if beside:
                row[kind] = statistics.median(beside)
                row[f"{kind}_ratio"] = row[kind] / alone
        table[cell] = row
    return table


def markdown(table, kinds, rounds=()):
    """The table, each kind's lowest ratio against the bar, and the kinds whose load steps
    failed (their ratios do not say what the load does: fix the load and run again)."""
    lines = ["| cell | alone img/s | " + " | ".join(f"beside {k} (ratio)" for k in kinds) + " |"]
    lines.append("|---|---:|" + "---:|" * len(kinds))
    for cell, row in table.items():
        cols = [f"{row[k]:,.1f} ({row[k + '_ratio']:.3f})" if k in row else "-" for k in kinds]
        lines.append(f"| {cell} | {row['alone']:,.1f} | " + " | ".join(cols) + " |")
    worst = {k: min(row[f"{k}_ratio"] for row in table.values() if f"{k}_ratio" in row) for k in kinds
             if any(f"{k}_ratio" in row for row in table.values())}  # fmt: skip
    lines.append("")
    failed = {k: sum(r.get("load_steps_failed") or 0 for r in rounds if r["kind"] == k) for k in kinds}
    for kind, low in worst.items():
        verdict = f"{'at least' if low >= BAR else 'below'} {BAR}"
        if failed[kind]:
            verdict += f"; but {failed[kind]} of its load steps failed, so this says nothing of that load"
        lines.append(f"beside {kind}: lowest ratio {low:.3f} ({verdict})")
    return "\n".join(lines)


def run_rounds(jobs, measured, others, args, work):
    """Every round's replays: [{round, kind, rates, load_steps_finished, load_steps_failed}]."""
    rounds = []
    for r in range(args.rounds):
        order = ["alone", *args.load] if r % 2 == 0 else [*args.load[::-1], "alone"]
        for kind in order:
            lanes = None if kind == "alone" else load_lanes(kind, jobs, others, args, work)
            if kind != "alone" and not lanes:
                print(f"round {r + 1}: no {kind} load here (no other GPU, or nothing to build)", flush=True)
                continue
            load = Load(lanes, work) if lanes else None
            if load:
                load.start(args.settle_s)
            entries = []
            try:
                for job in jobs:
                    rates = measure(job, measured, work, args.timing)
                    entries.append({"round": r + 1, "kind": kind, "rates": rates})
                    print(f"round {r + 1}, {kind}: " + ", ".join(f"{c} {v:,.1f}" for c, v in rates.items()), flush=True)
            finally:
                finished, failed = load.stop() if load else (None, [])
            for entry in entries:  # the load steps that ended while these were timed (None: alone)
                entry["load_steps_finished"], entry["load_steps_failed"] = finished, len(failed)
            for log in failed[:1]:
                with open(log) as f:
                    print(f"round {r + 1}, {kind}: a load step failed ({log}):\n{f.read()[-2000:]}", flush=True)
            rounds += entries
    return rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("speed", nargs="+", help="speed result files of the cells to time (results/speed/...)")
    parser.add_argument("--gpus", nargs="+", required=True, help="GPU indices: cells on the first, loads on the rest")
    parser.add_argument("--load", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-jobs", type=int, default=2, help="calibrations at once for the cpu load")
    parser.add_argument("--cpu-images", type=int, default=100, help="images each calibration of the cpu load reads")
    parser.add_argument("--settle-s", type=float, default=5.0, help="load running before a timed replay starts")
    parser.add_argument("--timing", help="a timing block (JSON) in place of the jobs' own")
    parser.add_argument("--results", default="results", help="the run's results folder (engines for the build load)")
    parser.add_argument(
        "--python", nargs="*", default=[], metavar="RUNTIME=PATH",
        help="a runtime's interpreter as the workflow had it (e.g. tensorrt=/tmp/trtpy); default: the result's own",
    )  # fmt: skip
    parser.add_argument("--json", help="every round's numbers and the table, as JSON")
    args = parser.parse_args()

    jobs = speed_jobs(args.speed, dict(item.split("=", 1) for item in args.python))
    measured, others = args.gpus[0], args.gpus[1:]
    work = tempfile.mkdtemp(prefix="interference-")
    try:
        rounds = run_rounds(jobs, measured, others, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # replayed results, engines, calibrations

    table = ratios(rounds, args.load)
    print(markdown(table, args.load, rounds))
    if args.json:
        with open(args.json, "w") as f:
            record = {"command": shlex.join(sys.argv), "gpus": args.gpus, "rounds": rounds, "table": table}
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
