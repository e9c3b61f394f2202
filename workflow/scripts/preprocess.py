#!/usr/bin/env python
"""Decode, resize and centre-crop every indexed image into one uint8 NHWC cache (.npy).

    preprocess.py --index results/datasets/imagenet/index.tsv --resize 256 --crop 224 \\
        --out results/cache/imagenet/256-224.npy --workers 8
    preprocess.py ... --interpolation bicubic --out results/cache/imagenet/256-224-bicubic.npy
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.data import DEFAULT_INTERPOLATION, INTERPOLATIONS, preprocess, read_index  # noqa: E402
from infbench.errors import main_guard  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="index.tsv from index_dataset.py")
    parser.add_argument("--resize", required=True, type=int, help="shorter side after resizing")
    parser.add_argument("--crop", required=True, type=int, help="side of the centre crop")
    parser.add_argument(
        "--interpolation",
        default=DEFAULT_INTERPOLATION,
        choices=sorted(INTERPOLATIONS),
        help="the resize's filter (the model's interpolation)",
    )
    parser.add_argument("--out", required=True, help=".npy file to write (uint8, N x crop x crop x 3)")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = read_index(args.index)
    started = time.perf_counter()
    preprocess(rows, args.resize, args.crop, args.out, workers=args.workers, interpolation=args.interpolation)
    seconds = time.perf_counter() - started
    print(
        f"preprocessed {len(rows)} images to {args.out} in {seconds:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main_guard(main)
