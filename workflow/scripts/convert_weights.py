"""Convert a model checkpoint (.pth) to framework-neutral weights (.safetensors), and count
the model's MACs per image at its crop (for the tables' share of a GPU's peak)."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import main_guard  # noqa: E402
from infbench.flops import write_macs  # noqa: E402
from infbench.weights import convert_checkpoint  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--crop", required=True, type=int, help="the model's input size")
    parser.add_argument("--macs-out", required=True, help="where the MACs per image go (JSON)")
    args = parser.parse_args()
    convert_checkpoint(args.arch, args.checkpoint, args.out)
    record = write_macs(args.arch, args.crop, args.macs_out)
    print(f"{args.arch} at {args.crop} px: {record['macs_per_image'] / 1e9:.3f} GMACs per image")


if __name__ == "__main__":
    main_guard(main)
