"""Each speed cell of one run against another's: images/s and their ratio, flagged past a tolerance.

    python benchmarks/compare_cells.py docs/results/h200/2026-12-02-tensorrt/results results \\
        --tolerance 0.02 --json compare.json

For a run over several GPUs against a run on one (issue: each cell within 2 %). Cells are
matched by runtime, model, precision and batch size; a cell in one run only is listed as
such. The ratio is the second run's images/s over the first's. Exits 1 when a matched
cell is off by more than the tolerance.
"""

import argparse
import glob
import json
import os
import sys


def speed_cells(results):
    """{"runtime/model/precision/bsN": images/s} of every speed result under ``results``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(results, "speed", "*", "*", "*.json"))):
        with open(path) as f:
            record = json.load(f)
        cell = record["cell"]
        found[f"{cell['runtime']}/{cell['model']}/{cell['precision']}/bs{cell['batch_size']}"] = record["result"][
            "images_per_s"
        ]
    return found


def compare(first, second, tolerance):
    """[{cell, first, second, ratio, off}] for the cells of both, and the cells of one only."""
    rows = []
    for cell in sorted(first.keys() & second.keys()):
        ratio = second[cell] / first[cell]
        rows.append({"cell": cell, "first": first[cell], "second": second[cell], "ratio": ratio,
                     "off": abs(ratio - 1) > tolerance})  # fmt: skip
    only = {"first": sorted(first.keys() - second.keys()), "second": sorted(second.keys() - first.keys())}
    return rows, only


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="the reference run's results folder (e.g. one GPU)")
    parser.add_argument("second", help="the run compared with it (e.g. several GPUs)")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows, only = compare(speed_cells(args.first), speed_cells(args.second), args.tolerance)
    print(f"| cell | {args.first} img/s | {args.second} img/s | ratio |")
    print("|---|---:|---:|---:|")
    for row in rows:
        mark = f" (off by more than {args.tolerance:.0%})" if row["off"] else ""
        print(f"| {row['cell']} | {row['first']:,.1f} | {row['second']:,.1f} | {row['ratio']:.3f}{mark} |")
    off = [row["cell"] for row in rows if row["off"]]
    print(f"\n{len(rows)} cells in both, {len(off)} off by more than {args.tolerance:.0%}; in one run only: {only}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tolerance": args.tolerance, "rows": rows, "only": only}, f, indent=1)
    sys.exit(1 if off else 0)


if __name__ == "__main__":
    main()
