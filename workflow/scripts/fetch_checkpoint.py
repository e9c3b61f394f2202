#!/usr/bin/env python
"""Put a model's .pth checkpoint in place: a sha256-verified download, or seeded random weights.

    fetch_checkpoint.py --arch resnet50 --out resources/checkpoints/resnet50.pth \\
        --url https://download.pytorch.org/models/resnet50-0676ba61.pth --sha256 0676ba61... \\
        --model resnet50 [--retries 3] [--timeout_s 60]
    fetch_checkpoint.py --arch alexnet --out resources/checkpoints/alexnet.pth --random 0
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.checkpoints import download, random_checkpoint  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="alexnet | vgg16 | resnet50 | inception_v3")
    parser.add_argument("--out", required=True, help="where the .pth file goes")
    parser.add_argument("--url", help="checkpoint url (with --sha256)")
    parser.add_argument("--sha256", help="expected sha256 of the file at --url")
    parser.add_argument("--random", type=int, metavar="SEED", help="write seeded random weights instead")
    parser.add_argument("--model", help="the config's model name, for error messages")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="extra attempts on network errors, each resuming the last (checkpoint.retries)",
    )
    parser.add_argument(
        "--timeout",
        "--timeout_s",
        dest="timeout",
        type=float,
        default=60.0,
        help="seconds without data before an attempt fails (checkpoint.timeout_s)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    key = f"models.{args.model}.checkpoint" if args.model else "the model's checkpoint"
    if args.random is not None:
        if args.url or args.sha256:
            raise UserError(f"{key} gives both random and url/sha256; keep only one of them")
        path = random_checkpoint(args.arch, args.random, args.out)
        print(
            f"wrote random {args.arch} weights (seed {args.random}) to {path}",
            file=sys.stderr,
        )
        return
    if not (args.url and args.sha256):
        raise UserError(f"{key} needs both url and sha256 (or random: SEED)")
    path = download(
        args.url,
        args.sha256,
        args.out,
        retries=args.retries,
        timeout=args.timeout,
        model=args.model,
    )
    print(f"downloaded {args.url} to {path} (sha256 verified)", file=sys.stderr)


if __name__ == "__main__":
    main_guard(main)
