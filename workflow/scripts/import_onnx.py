"""Check a model's own ONNX file against its sha256 and write it as the workflow's fp32 ONNX.

    import_onnx.py --model mine --onnx models/mine.onnx --sha256 <64 hex digits> \\
        --out results/onnx/mine/fp32.onnx

Its input is renamed ``input`` and, for an NHWC file, put behind a Transpose (NCHW in);
nothing else changes. fp16 and int8 are made from the result as for any model.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import main_guard  # noqa: E402
from infbench.onnxfile import import_onnx  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the config's model name, for error messages")
    parser.add_argument("--onnx", required=True, help="the model's ONNX file (checkpoint.onnx)")
    parser.add_argument("--sha256", required=True, help="its sha256 (checkpoint.sha256)")
    parser.add_argument("--out", required=True, help="the fp32 .onnx to write")
    args = parser.parse_args()
    spec = import_onnx(args.onnx, args.sha256, args.out, key=f"models.{args.model}.checkpoint")
    batch = "dynamic" if spec["batch"] is None else spec["batch"]
    print(f"wrote {args.out}: input {spec['name']!r} {spec['layout']} {spec['size']} px, batch {batch}")


if __name__ == "__main__":
    main_guard(main)
