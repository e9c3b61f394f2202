#!/usr/bin/env python
"""Index a data set: write index.tsv (file, label) and labels.npy (int64), in the same order.

    index_dataset.py --root /data/imagenet/val \\
        --labels /data/imagenet/val_map.txt --images all \\
        --out DIR/index.tsv --labels-out DIR/labels.npy
    index_dataset.py --root /data/ILSVRC2012/val \
        --labels /data/ILSVRC2012/devkit/data/ILSVRC2012_validation_ground_truth.txt \
        --devkit-meta /data/ILSVRC2012/devkit/data/meta.mat \
        --out DIR/index.tsv --labels-out DIR/labels.npy

A synthetic set is indexed the same way, from the folder and val_map.txt that
make_synthetic.py writes.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench import files  # noqa: E402
from infbench.data import (  # noqa: E402
    LAYOUTS,
    bad_images_error,
    index_imagenet,
    label_layout,
    scan_images,
    write_bad_images,
    write_index,
)
from infbench.errors import UserError, main_guard  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="all", help="all | N (the first N of the sorted index)")
    parser.add_argument("--root", help="imagenet: the validation folder (dataset.root)")
    parser.add_argument(
        "--labels",
        help="imagenet, flat layout: val_map.txt, the devkit's"
        " ILSVRC2012_validation_ground_truth.txt or LOC_val_solution.csv (dataset.labels)",
    )
    parser.add_argument(
        "--synsets",
        help="imagenet: synsets in label order (dataset.synsets)",
    )
    parser.add_argument(
        "--devkit-meta",
        help="imagenet: the ILSVRC2012 devkit's meta.mat (dataset.devkit_meta)",
    )
    parser.add_argument(
        "--bad-images",
        default="fail",
        choices=["fail", "skip"],
        help="every image is decoded once: fail lists every unreadable one in one error,"
        " skip leaves them out (dataset.bad_images)",
    )
    parser.add_argument("--bad-out", help="bad_images.tsv to write (file, reason)")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes of the scan")
    parser.add_argument("--out", required=True, help="index.tsv to write")
    parser.add_argument("--labels-out", required=True, help="labels.npy to write (int64, index order)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.root:
        raise UserError("dataset.root is not set; set it to the ImageNet validation folder")
    rows = index_imagenet(
        args.root,
        labels=args.labels,
        synsets=args.synsets,
        images=args.images,
        devkit_meta=args.devkit_meta,
    )
    source = (
        f"dataset.root {args.root}, labelled by dataset.labels {args.labels} ({LAYOUTS[label_layout(args.labels)]})"
        if args.labels
        else f"the synset folders of dataset.root {args.root}"
    )
    started = time.perf_counter()
    bad = scan_images([file for file, _ in rows], workers=args.workers)
    seconds = time.perf_counter() - started
    print(
        f"scanned {len(rows)} images for unreadable files in {seconds:.1f} s"
        f" ({len(rows) / max(seconds, 1e-9):.0f} images/s, {args.workers} workers): {len(bad)} unreadable",
        file=sys.stderr,
    )
    if bad and args.bad_images == "fail":
        raise UserError(bad_images_error(bad, len(rows)))
    if args.bad_out:
        write_bad_images(args.bad_out, bad)
    if bad:
        skipped = {file for file, _ in bad}
        rows = [row for row in rows if row[0] not in skipped]
        print(
            f"left out {len(bad)} unreadable images (dataset.bad_images: skip), listed in {args.bad_out}",
            file=sys.stderr,
        )
        if not rows:
            file, why = bad[0]
            raise UserError(
                f"none of the {len(bad)} images of the data set can be read (the first: {file}, {why});"
                " check dataset.root and dataset.labels"
            )
    labels = np.asarray([label for _, label in rows], dtype=np.int64)
    with files.atomic_output(args.labels_out) as tmp:
        with open(tmp, "xb") as f:
            np.save(f, labels)
    write_index(args.out, rows)
    print(
        f"indexed {len(rows)} images ({len(set(labels.tolist()))} classes) from {source} into {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main_guard(main)
