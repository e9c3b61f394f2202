"""Convert an fp32 ONNX to fp16 inside, keeping float32 input and output."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import main_guard  # noqa: E402
from infbench.precision import to_fp16  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True, help="the fp32 .onnx")
    parser.add_argument("--out", required=True, help="the fp16 .onnx to write")
    args = parser.parse_args()
    to_fp16(args.onnx, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
