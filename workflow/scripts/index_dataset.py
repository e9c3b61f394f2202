#!/usr/bin/env python
"""Index a data set: write index.tsv (file, label) and labels.npy (int64), in the same order.

    index_dataset.py --kind synthetic --images 64 --seed 0 --image-dir DIR/images \\
        --out DIR/index.tsv --labels-out DIR/labels.npy
    index_dataset.py --kind imagenet --root /data/imagenet/val \\
        --labels /data/imagenet/val_map.txt --images all \\
        --out DIR/index.tsv --labels-out DIR/labels.npy

--kind defaults to imagenet. A synthetic set writes its JPEGs to --image-dir first.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench.data import index_imagenet, make_synthetic, write_index  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", default="imagenet", choices=["synthetic", "imagenet"])
    parser.add_argument(
        "--images", default="all", help="all | N (the first N of the sorted index)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="synthetic: seed of images and labels"
    )
    parser.add_argument(
        "--image-dir", help="synthetic: folder the JPEGs are written to"
    )
    parser.add_argument("--root", help="imagenet: the validation folder (dataset.root)")
    parser.add_argument(
        "--labels",
        help="imagenet, flat layout: '<file name> <class index>' file (dataset.labels)",
    )
    parser.add_argument(
        "--synsets",
        help="imagenet, folder layout: synsets in label order (dataset.synsets)",
    )
    parser.add_argument("--out", required=True, help="index.tsv to write")
    parser.add_argument(
        "--labels-out", required=True, help="labels.npy to write (int64, index order)"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.kind == "synthetic":
        if not args.image_dir:
            raise UserError(
                "--image-dir is required for a synthetic data set; give the folder for its JPEGs"
            )
        rows = make_synthetic(args.image_dir, args.images, args.seed)
    else:
        if not args.root:
            raise UserError(
                "dataset.root is not set; set it to the ImageNet validation folder"
            )
        rows = index_imagenet(
            args.root, labels=args.labels, synsets=args.synsets, images=args.images
        )
    labels = np.asarray([label for _, label in rows], dtype=np.int64)
    os.makedirs(os.path.dirname(os.path.abspath(args.labels_out)), exist_ok=True)
    np.save(args.labels_out, labels)
    write_index(args.out, rows)
    print(
        f"indexed {len(rows)} images ({len(set(labels.tolist()))} classes) into {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main_guard(main)
