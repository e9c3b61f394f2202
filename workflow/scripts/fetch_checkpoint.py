#!/usr/bin/env python
"""Put a model's .pth checkpoint in place: a sha256-verified download, or seeded random weights.

    fetch_checkpoint.py --arch vgg16 --out resources/checkpoints/vgg16.pth \\
        --url https://download.pytorch.org/models/vgg16-397923af.pth --sha256 397923af8e79... \\
        --model vgg16 [--retries 3] [--timeout_s 60] [--deadline_s 1800] [--max_mib 1024]
    fetch_checkpoint.py ... --sha256 0676ba61 --trust_first_download True  (a published prefix)
    fetch_checkpoint.py --arch alexnet --out resources/checkpoints/alexnet.pth --random 0
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.checkpoints import DEADLINE_S, MAX_MIB, download, random_checkpoint  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402


def _boolean(text):
    """The rule passes each config value as Python writes it (True, False)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() == "true"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="a torchvision classification arch (resnet50, ...)")
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
    parser.add_argument(
        "--deadline_s",
        type=float,
        default=DEADLINE_S,
        help="seconds one attempt may take in all before it fails (checkpoint.deadline_s)",
    )
    parser.add_argument(
        "--max_mib",
        type=float,
        default=MAX_MIB,
        help="the largest file accepted, in MiB (checkpoint.max_mib)",
    )
    parser.add_argument(
        "--trust_first_download",
        type=_boolean,
        default=False,
        help="with a --sha256 prefix: accept the first download that matches it and record its"
        " full digest, required from then on (checkpoint.trust_first_download)",
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
        trust_first_download=args.trust_first_download,
        max_bytes=int(args.max_mib * 2**20),
        deadline=args.deadline_s,
    )
    checked = "sha256 verified" if len(args.sha256.strip()) == 64 else "sha256 checked as the note above says"
    print(f"downloaded {args.url} to {path} ({checked})", file=sys.stderr)


if __name__ == "__main__":
    main_guard(main)
