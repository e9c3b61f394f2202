"""Summarise one accuracy cell: top-1, top-5, mismatches and logit agreement vs the reference."""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench import metrics, results  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402


def load_predictions(path):
    try:
        with np.load(path) as f:
            top5 = f["top5"]
            # files from before the non-finite check hold no flags: nothing was flagged
            nonfinite = f["nonfinite"] if "nonfinite" in f.files else np.zeros(len(top5), dtype=bool)
            return top5, f["logits"], nonfinite, json.loads(str(f["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise UserError(
            f"{path} is not a prediction file of this workflow ({err.__class__.__name__});"
            " delete it so that the workflow evaluates the cell again"
        ) from None


def read_bad_images(path):
    """The files the index step left out as unreadable (dataset.bad_images: skip), in order."""
    if not path:
        return []
    lines = open(path).read().splitlines()
    return [line.split("\t")[0] for line in lines[1:] if line]


def summarise(predictions, labels, reference, reference_name, random_weights, bad_images=None):
    """The accuracy summary of one cell, as the score rule writes it (reference may be None)."""
    top5, logits, nonfinite, meta = load_predictions(predictions)
    labels = np.load(labels)
    scored_against, reference_config = None, None
    if reference:
        ref_top5, ref_logits, _, ref_meta = load_predictions(reference)
        scored_against = (ref_top5, ref_logits)
        reference_config = ref_meta["provenance"].get("config")
    summary = metrics.score(top5, labels, logits, scored_against, nonfinite)
    return {
        "cell": meta["cell"],
        **summary,
        "reference": reference_name,
        "reference_available": scored_against is not None,
        # what the reference predictions were made under: mismatches hold only while it is current
        "reference_config": reference_config,
        "random_weights": bool(random_weights),
        # images of the data set that no cell saw: unreadable, left out by the index step
        "skipped_images": len(skipped := read_bad_images(bad_images)),
        "skipped_files": skipped[:20],
        "provenance": {**meta["provenance"], "predictions": str(predictions)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="the cell's .npz")
    parser.add_argument("--labels", required=True, help="labels.npy of the data set")
    parser.add_argument("--reference", help="the reference cell's .npz (absent: not run)")
    parser.add_argument("--reference-name", required=True, help="e.g. oneflow/fp32")
    parser.add_argument("--random-weights", type=int, choices=[0, 1], default=0)
    parser.add_argument("--bad-images", help="bad_images.tsv of the index step (images left out)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results.write(
        args.out,
        summarise(
            args.predictions, args.labels, args.reference, args.reference_name, args.random_weights, args.bad_images
        ),
    )


if __name__ == "__main__":
    main_guard(main)
