"""Turn every speed and accuracy result file into the report's tables.

Writes speed-bs{bs}.md per configured batch size, precision.md, cells.csv and report.md
into --out-dir (see infbench/tables.py for what each holds).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.tables import write_tables  # noqa: E402


def read_config(path):
    """The validated config that the rule dumped as JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(
            f"config dump {path} cannot be read ({err.__class__.__name__}); delete it so the"
            " workflow writes it again"
        ) from None
    if not isinstance(config, dict):
        raise UserError(
            f"config dump {path} is not a JSON object; delete it so the workflow writes it again"
        )
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="the workflow's config as JSON")
    parser.add_argument(
        "--speed", nargs="*", default=[], metavar="F", help="speed result files (.json)"
    )
    parser.add_argument(
        "--accuracy", nargs="*", default=[], metavar="F", help="accuracy summaries (.json)"
    )
    parser.add_argument("--out-dir", required=True, help="where the tables go")
    args = parser.parse_args()
    done = write_tables(read_config(args.config), args.speed, args.accuracy, args.out_dir)
    for path in done["unused"]:
        print(f"infbench: {path} is for a cell not in the config; left out", file=sys.stderr)
    for path in done["written"]:
        print(path)


if __name__ == "__main__":
    main_guard(main)
