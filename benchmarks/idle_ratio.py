"""How busy a workflow run kept its device: the timed windows against the run's wall time.

Reads every speed and accuracy result under RESULTS (default results/) and prints the sum of
the timed windows, the wall time (--wall, e.g. the run's from Snakemake's log; else the span
from the first speed/accuracy step's launch to the last one's end), their ratio (wall /
timed: 1.0 would be a device that did nothing but timed inference), and where the steps'
time went, phase by phase, summed over the steps (the phases each result records).

    python benchmarks/idle_ratio.py results/ --wall 635
"""

import argparse
import collections
import datetime
import glob
import json
import os


def load(results):
    rows = []
    for kind in ("speed", "accuracy"):
        for path in sorted(glob.glob(os.path.join(results, kind, "*", "*", "*.json"))):
            with open(path) as f:
                data = json.load(f)
            rows.append((kind, path, data))
    return rows


def stamp(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument(
        "--wall",
        type=float,
        help="the whole run's wall time in seconds (default: the span"
        " from the first speed/accuracy step's launch to the last one's end)",
    )
    parser.add_argument("--json", help="also write the figures here: timed, wall and span seconds, the phases")
    args = parser.parse_args()
    rows = load(args.results)
    if not rows:
        raise SystemExit(f"no speed or accuracy results under {args.results}")
    timed = sum(sum(d["result"]["window_seconds"]) for k, _, d in rows if k == "speed")

    def launched(d):  # "started" is stamped after start-up, imports and inputs
        phases = d["provenance"].get("phases") or {}
        return stamp(d["provenance"]["started"]) - sum(phases.get(p) or 0 for p in ("start_up", "imports", "inputs"))

    span = max(stamp(d["provenance"]["finished"]) for _, _, d in rows) - min(launched(d) for _, _, d in rows)
    wall = args.wall or span
    phases = collections.defaultdict(float)
    for kind, _, d in rows:
        for name, seconds in (d["provenance"].get("phases") or {}).items():
            if seconds is not None and name != "total_in_script":
                phases[f"{kind}: {name}"] += seconds
    print(
        f"{sum(k == 'speed' for k, _, _ in rows)} speed and {sum(k == 'accuracy' for k, _, _ in rows)}"
        f" accuracy results under {args.results}"
    )
    print(f"speed and accuracy steps span {span:.1f} s")
    print(
        f"timed windows {timed:.1f} s; wall {wall:.1f} s; wall / timed {wall / timed:.2f}"
        if timed
        else f"wall {wall:.1f} s; no timed windows"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "speed_results": sum(k == "speed" for k, _, _ in rows),
                    "accuracy_results": sum(k == "accuracy" for k, _, _ in rows),
                    "timed_seconds": round(timed, 3),
                    "wall_seconds": round(wall, 3),
                    "span_seconds": round(span, 3),
                    "wall_over_timed": round(wall / timed, 3) if timed else None,
                    "phases": {name: round(seconds, 3) for name, seconds in sorted(phases.items())},
                },
                f,
                indent=2,
            )
    print("| phase (summed over steps) | seconds |")
    print("|---|---|")
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
