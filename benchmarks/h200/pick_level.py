"""Pick TensorRT's builder optimisation level from the level study (benchmarks/tensorrt_levels.py).

    python3 benchmarks/h200/pick_level.py levels-int8.json levels-fp16.json

Each file holds one precision's rows (level, build_seconds, images_per_s). The rule: the
lowest level whose engines run within TOLERANCE of the fastest level measured, in every
precision studied (lower levels build faster). Prints the level; the reasoning goes to stderr.
"""

import json
import sys

TOLERANCE = 0.02


def pick(studies):
    """studies: {name: [row, ...]}; returns (level, lines explaining it)."""
    speeds = {name: {row["level"]: row["images_per_s"] for row in rows} for name, rows in studies.items() if rows}
    if not speeds:
        raise SystemExit("pick_level: no level was measured")
    best = {name: max(by_level.values()) for name, by_level in speeds.items()}
    common = sorted(set.intersection(*(set(by_level) for by_level in speeds.values())))
    lines, picked = [], None
    for level in common:
        ratios = {name: speeds[name][level] / best[name] for name in speeds}
        ok = all(r >= 1 - TOLERANCE for r in ratios.values())
        lines.append(f"level {level}: " + ", ".join(f"{n} {r:.3f} of best" for n, r in sorted(ratios.items()))
                     + (" (within tolerance)" if ok else ""))
        if ok and picked is None:
            picked = level
    if picked is None:  # no level is near the best in every precision: the one with the best worst ratio
        picked = max(common, key=lambda lv: min(speeds[n][lv] / best[n] for n in speeds))
    lines.append(f"picked {picked}: the lowest level within {TOLERANCE:.0%} of the fastest in every precision")
    return picked, lines


def main(paths):
    studies = {path: json.load(open(path)) for path in paths}
    level, lines = pick(studies)
    print("\n".join(lines), file=sys.stderr)
    print(level)


if __name__ == "__main__":
    main(sys.argv[1:])
