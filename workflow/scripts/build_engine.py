"""Build a TensorRT engine from one precision's ONNX, with its sidecar (see infbench.runtimes.tensorrt.build).

Example:
    python workflow/scripts/build_engine.py --onnx results/onnx/resnet50/fp16.onnx \\
        --batch-size 8 --precision fp16 --workspace-mib 4096 --allow-tf32 0 \\
        --timing-cache results/engines/timing.cache --builder-optimization-level 3 \\
        --out results/engines/resnet50/fp16-bs8.plan --sidecar results/engines/resnet50/fp16-bs8.json
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.runtimes.tensorrt import build as engine  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="the precision's ONNX (fp32.onnx, fp16.onnx, int8-s8s8.onnx)")
    parser.add_argument("--batch-size", type=int, required=True, help="the engine's one batch size (min=opt=max)")
    parser.add_argument("--precision", required=True, choices=sorted(engine.ONNX_FOR_PRECISION))
    parser.add_argument("--workspace-mib", type=int, required=True, help="builder workspace limit in MiB")
    parser.add_argument("--allow-tf32", type=int, choices=(0, 1), required=True, help="1 lets fp32 layers use TF32")
    parser.add_argument(
        "--tactic-sources",
        default=None,
        help="comma-separated TacticSource names (e.g. EDGE_MASK_CONVOLUTIONS,JIT_CONVOLUTIONS);"
        " omitted: TensorRT's default",
    )
    parser.add_argument(
        "--builder-optimization-level",
        type=int,
        default=None,
        choices=range(6),
        metavar="0-5",
        help="TensorRT 8.6+ builder optimisation level; omitted: TensorRT's default (3)",
    )
    parser.add_argument("--timing-cache", required=True, help="timing cache file shared by all builds (locked, merged)")
    parser.add_argument("--out", required=True, help="the engine file to write (.plan)")
    parser.add_argument("--sidecar", required=True, help="the sidecar JSON to write beside it")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    if not os.path.exists(args.onnx):
        raise UserError(f"{args.onnx} does not exist; run the workflow's ONNX export for this model first")
    if args.batch_size < 1 or args.workspace_mib < 1:
        raise UserError(
            "--batch-size and --workspace-mib must be positive; fix batch_sizes or runtimes.tensorrt.workspace_mib"
        )
    record = engine.build_engine(
        onnx_path=args.onnx,
        engine_path=args.out,
        sidecar=args.sidecar,
        batch_size=args.batch_size,
        precision=args.precision,
        workspace_mib=args.workspace_mib,
        allow_tf32=bool(args.allow_tf32),
        timing_cache=args.timing_cache,
        tactic_sources=None if args.tactic_sources is None else [t for t in args.tactic_sources.split(",") if t],
        builder_optimization_level=args.builder_optimization_level,
    )
    env, flags = record["environment"], record["flags"]
    print(
        f"built {args.out} in {record['build_seconds']:.1f} s with TensorRT {env['tensorrt']}"
        f" on {env['gpu_name']} (sm {env['compute_capability']}); builder flags"
        f" {flags['builder_flags']}, tactic sources {flags['tactic_sources']},"
        f" optimisation level {flags['builder_optimization_level']}"
    )


if __name__ == "__main__":
    main_guard(main)
