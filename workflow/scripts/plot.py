#!/usr/bin/env python
"""Draw the report's figures from cells.csv into results/plots/ (see infbench.plots).

plot.py --cells results/tables/cells.csv --out-dir results/plots
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.plots import write_plots  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", required=True, help="cells.csv of the tables step")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    if not os.path.exists(args.cells):
        raise UserError(f"{args.cells} does not exist; run the tables step first")
    for path in write_plots(args.cells, args.out_dir):
        print(path)


if __name__ == "__main__":
    main_guard(main)
