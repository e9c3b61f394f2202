"""TensorRT builder optimisation levels: engine build time against inference speed.

For each level, an engine is built from the same ONNX with an empty timing cache of its
own (so that no level profits from another's timings), then timed through the workflow's
harness (``infbench.timing.measure``) on the same staged batches. Prints one table row per
level; with --json, writes the rows there too. Levels left when --budget-s has passed are
skipped (and printed as skipped).

    PYTHONPATH=workflow/scripts .venv-tensorrt/bin/python benchmarks/tensorrt_levels.py \\
        --onnx results/onnx/resnet50/fp16.onnx --precision fp16 --batch-size 8 --levels 0 1 2 3 4 5

Needs TensorRT 8.6 or later and an NVIDIA GPU.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench import runtimes, timing  # noqa: E402
from infbench.runtimes.tensorrt import build as engine  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--precision", default="fp16", choices=sorted(engine.ONNX_FOR_PRECISION))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--tactic-sources", default=None, help="comma-separated TacticSource names")
    parser.add_argument("--cuda-graphs", type=int, default=1, choices=(0, 1))
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timed", type=int, default=500)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=1e9, help="start no level after this many seconds")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    sources = None if args.tactic_sources is None else [t for t in args.tactic_sources.split(",") if t]

    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (args.batch_size, args.crop, args.crop, 3), dtype=np.uint8) for _ in range(4)]
    rows, started = [], time.perf_counter()
    print(f"{os.path.basename(args.onnx)} {args.precision} bs{args.batch_size}; tactic sources {sources or 'default'}")
    print("| level | build s | img/s (median of windows) | spread |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for level in args.levels:
            if time.perf_counter() - started > args.budget_s:
                print(f"| {level} | skipped (budget) | | |")
                continue
            plan = os.path.join(work, f"level{level}.plan")
            try:
                record = engine.build_engine(
                    args.onnx,
                    plan,
                    engine.sidecar_path(plan),
                    args.batch_size,
                    args.precision,
                    4096,
                    False,
                    os.path.join(work, f"level{level}.cache"),
                    sources,
                    level,
                    model=os.path.basename(os.path.dirname(os.path.abspath(args.onnx))),
                )
            except UserError as err:  # a level that does not build: say so, try the next
                print(f"| {level} | failed: {err} | | |", flush=True)
                continue
            options = {
                "cuda_graphs": bool(args.cuda_graphs),
                "tactic_sources": sources,
                "builder_optimization_level": level,
            }
            spec = SessionSpec(
                "tensorrt", "bench", "bench", args.precision, args.batch_size, "cuda", plan, args.crop, options
            )
            session = runtimes.load("tensorrt").open_session(spec)
            try:
                result = timing.measure(session, batches, args.warmup, args.timed, args.windows)
            finally:
                session.close()
            row = {
                "level": level,
                "build_seconds": record["build_seconds"],
                "images_per_s": result["images_per_s"],
                "spread": result["spread"],
                "flags": record["flags"],
                "environment": record["environment"],
            }
            rows.append(row)
            print(
                f"| {level} | {row['build_seconds']:.1f} | {row['images_per_s']:,.0f} | {row['spread']:.1%} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main_guard(main)
