"""Generate the synthetic data set: deterministic JPEGs laid out like ImageNet's val folder.

Writes DIR/synthetic_NNNNNN.JPEG and DIR/val_map.txt (`<file name> <class index>`), so
that it is indexed exactly as an ImageNet validation folder is.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench import files  # noqa: E402
from infbench.data import make_synthetic  # noqa: E402
from infbench.errors import main_guard  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the folder to create")
    args = parser.parse_args()
    with files.atomic_output(args.out) as tmp:  # a folder, replaced as a whole
        rows = make_synthetic(tmp, args.images, args.seed)
        with open(os.path.join(tmp, "val_map.txt"), "w") as f:
            f.writelines(f"{os.path.basename(file)} {label}\n" for file, label in rows)


if __name__ == "__main__":
    main_guard(main)
