"""The summary of one H200 run (benchmarks/h200/run.sh), as JSON: what the project commits as
docs/results/h200/run.json.

    python summary.py versions NAME ...      # this interpreter's version and those packages'
    python summary.py run --run DIR --results results --logs logs --snakemake-rc N --wall S ...

``run`` gathers: the dates, the command, the commit, the versions (the ``versions-*.json``
files ``versions`` wrote into the run's folder, the GPU and driver from ``gpu.csv``, the
locks the pack carried, one per Python), Snakemake's exit status and wall seconds, the timed seconds
(benchmarks/idle_ratio.py --json), every engine's build seconds and options from its
sidecar, and the sentence of every engine that did not build (the last ``infbench:`` line of
its log). Standard library only.
"""

import argparse
import glob
import json
import os
import platform
import sys


def package_versions(names):
    """{"python": this interpreter's version, name: installed version or None, ...}."""
    import importlib.metadata

    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def engines(results):
    """{"model/precision-bsN": what its sidecar says about the build}, in name order."""
    found = {}
    for path in sorted(glob.glob(os.path.join(results, "engines", "*", "*.json"))):
        with open(path) as f:
            sidecar = json.load(f)
        if not isinstance(sidecar, dict) or "build_seconds" not in sidecar:
            continue
        flags, cache = sidecar.get("flags", {}), sidecar.get("timing_cache_use") or {}
        found[f"{os.path.basename(os.path.dirname(path))}/{os.path.splitext(os.path.basename(path))[0]}"] = {
            "build_seconds": sidecar["build_seconds"],
            "tactic_sources": flags.get("tactic_sources"),
            "builder_optimization_level": flags.get("builder_optimization_level"),
            "builder_flags": flags.get("builder_flags"),
            "timing_cache_loaded": cache.get("loaded"),
            "tensorrt": sidecar.get("environment", {}).get("tensorrt"),
        }
    return found


def failed_engines(logs, built):
    """{"model/precision-bsN": the last ``infbench:`` sentence of its build log} for the
    engines whose build log exists but whose engine is not in ``built``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(logs, "engines", "*", "*.log"))):
        key = f"{os.path.basename(os.path.dirname(path))}/{os.path.splitext(os.path.basename(path))[0]}"
        if key in built:
            continue
        with open(path, errors="replace") as f:
            said = [line.strip() for line in f if line.startswith("infbench: ")]
        found[key] = said[-1] if said else "no sentence in the log (see it)"
    return found


def gpu_state(path):
    """The GPU's name and driver from the first line of run.sh's gpu.csv, if there is one."""
    try:
        with open(path) as f:
            first = f.readline().split(", ")
    except OSError:
        return {}
    return {"gpu": first[1], "driver": first[2]} if len(first) > 2 else {}


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pinned(path):
    """{name: version} of one of the pack's locks (``name==version --hash=...`` lines)."""
    try:
        with open(path) as f:
            return dict(line.split()[0].split("==", 1) for line in f if "==" in line)
    except OSError:
        return {}


def phases(path):
    """[(UTC time, what)] of run.sh's phases.txt lines ``HH:MM:SS what``."""
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(" ", 1) for line in f if " " in line]
    except OSError:
        return []


def summarise(args):
    built = engines(args.results)
    versions = {}
    for path in sorted(glob.glob(os.path.join(args.run, "versions-*.json"))):
        versions[os.path.splitext(os.path.basename(path))[0][len("versions-") :]] = read_json(path)
    idle = read_json(os.path.join(args.run, "idle.json")) or {}
    return {
        "date": {"started": args.started, "finished": args.finished},
        "command": args.command,
        "commit": args.commit or None,
        "machine": gpu_state(os.path.join(args.run, "gpu.csv")),
        "versions": versions,
        "pack": {
            "libraries": args.libraries,
            "locks": {os.path.splitext(os.path.basename(path))[0]: pinned(path) for path in args.locks},
        },
        "snakemake": {"exit_status": args.snakemake_rc, "wall_seconds": args.wall},
        "timed_seconds": idle.get("timed_seconds"),
        "wall_over_timed": round(args.wall / idle["timed_seconds"], 3) if idle.get("timed_seconds") else None,
        "results": {"speed": idle.get("speed_results"), "accuracy": idle.get("accuracy_results")},
        "engines": built,
        "engine_build_seconds": round(sum(e["build_seconds"] for e in built.values()), 1),
        "engines_failed": failed_engines(args.logs, built),
        "phases": phases(os.path.join(args.run, "phases.txt")),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    versions = verbs.add_parser("versions")
    versions.add_argument("names", nargs="*")
    run = verbs.add_parser("run")
    run.add_argument("--run", required=True, help="run.sh's folder (gpu.csv, idle.json, versions-*.json)")
    run.add_argument("--results", default="results")
    run.add_argument("--logs", default="logs")
    run.add_argument("--snakemake-rc", type=int, required=True)
    run.add_argument("--wall", type=float, required=True, help="Snakemake's wall seconds")
    run.add_argument("--started", required=True)
    run.add_argument("--finished", required=True)
    run.add_argument("--command", required=True)
    run.add_argument("--commit", default="")
    run.add_argument("--libraries", default=None, help="real or stand-ins (the pack's LIBRARIES)")
    run.add_argument("--locks", nargs="*", default=[], help="the pack's locks (lock310.txt, lock312.txt)")
    args = parser.parse_args()
    if args.verb == "versions":
        json.dump(package_versions(args.names), sys.stdout)
    else:
        json.dump(summarise(args), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
