"""Convert a model checkpoint (.pth) to framework-neutral weights (.safetensors)."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import main_guard  # noqa: E402
from infbench.weights import convert_checkpoint  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    convert_checkpoint(args.arch, args.checkpoint, args.out)


if __name__ == "__main__":
    main_guard(main)
