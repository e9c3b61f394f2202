"""Export a model with its framework-neutral weights to a single-file fp32 ONNX.

Input "input" float32 [batch, 3, crop, crop] (normalised), output "logits" [batch, 1000],
dynamic batch axis "batch".
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import main_guard  # noqa: E402
from infbench.precision import export_fp32  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True, help="a torchvision classification arch (resnet50, ...)")
    parser.add_argument("--weights", required=True, help="framework-neutral .safetensors")
    parser.add_argument("--crop", required=True, type=int, help="input height and width")
    parser.add_argument("--out", required=True, help="the fp32 .onnx to write")
    args = parser.parse_args()
    export_fp32(args.arch, args.weights, args.crop, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
