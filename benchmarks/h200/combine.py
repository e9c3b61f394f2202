"""One set of tables from the result files of several parts of the H200 matrix.

The seed matrix does not fit one device session, so it is run in parts
(docs/results/h200/README.md), each part's result files committed under
docs/results/h200/<part>/results. This script writes the workflow's own tables
(speed-bs*.md, energy-bs*.md, precision.md, cells.csv, report.md: infbench.tables, the
same code as the `tables` rule) from all of them, under one config:

    python benchmarks/h200/combine.py --config docs/results/h200/2026-12-02-part-b/h200.yaml \\
        --models alexnet vgg16 resnet50 inception_v3 --out-dir docs/results/h200/combined \\
        docs/results/h200/2026-12-02-tensorrt docs/results/h200/2026-12-02-part-b

Nothing is measured here and no figure is changed: a cell shows the result file a part
measured, if its recorded config is the config given (else ``stale``, as in the workflow);
a cell that failed in a part and was measured by none shows ``failed`` with the reason that
part's ``tables/cells.csv`` gave; every other cell ``not run``. A cell measured by two parts
takes the later part's file (parts in the order given), and says so. cells.csv names each
cell's result file (``source``, as the path was given: run it from the repository's root).
MACs per image (for "% of peak") are counted here, as the workflow's weight step counts them.
"""

import argparse
import csv
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "workflow", "scripts"))

import yaml  # noqa: E402

from infbench.configcheck import check  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.flops import macs_per_image  # noqa: E402
from infbench.tables import write_tables  # noqa: E402


def read_config(path):
    """The config a part ran (its h200.yaml), checked and given its defaults as the workflow does."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"--config {path} cannot be read ({err.__class__.__name__}); give a part's h200.yaml") from None
    with open(os.path.join(REPO, "workflow", "schemas", "config.schema.yaml"), encoding="utf-8") as f:
        check(config, yaml.safe_load(f))
    return config


def part_results(parts):
    """{path under results/: the part's file} over the parts, a later part's file replacing
    an earlier one's; and the sentences that say which were replaced."""
    found, replaced = {}, []
    for part in parts:
        results = os.path.join(part, "results")
        if not os.path.isdir(results):
            raise UserError(f"{part} has no results/ folder; give the folders of docs/results/h200/ that hold one")
        for root, _, names in os.walk(results):
            for name in sorted(names):
                if not name.endswith(".json"):
                    continue
                path = os.path.join(root, name)
                key = os.path.relpath(path, results)
                if key in found:
                    replaced.append(f"{key}: {path} replaces {found[key]}")
                found[key] = path
    return found, replaced


def part_failures(parts):
    """{(kind, runtime, model, precision, batch size or None): reason} of the cells a part's
    tables/cells.csv shows ``failed``, the reason prefixed with the part's folder name."""
    failures = {}
    for part in parts:
        path = os.path.join(part, "tables", "cells.csv")
        if not os.path.exists(path):
            continue
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["status"] != "failed":
                    continue
                bs = int(row["batch_size"]) if row["batch_size"] else None
                key = (row["kind"], row["runtime"], row["model"], row["precision"], bs)
                failures[key] = f"in part {os.path.basename(os.path.normpath(part))}: {row['reason']}"
    return failures


def combine(config, parts, out_dir):
    """Write the tables of ``parts`` under ``config`` into ``out_dir``; returns
    write_tables's answer and the sentences on replaced files."""
    found, replaced = part_results(parts)
    speed = [p for k, p in sorted(found.items()) if k.startswith("speed" + os.sep)]
    latency = [p for k, p in sorted(found.items()) if k.startswith("latency" + os.sep)]
    # accuracy summaries are results/accuracy/<runtime>/<model>/<precision>.json (their
    # predictions and logits are not committed)
    accuracy = [p for k, p in sorted(found.items()) if k.startswith("accuracy" + os.sep) and k.count(os.sep) == 3]
    failures = part_failures(parts)
    macs = {name: macs_per_image(m["arch"], m["crop"]) for name, m in config["models"].items() if "arch" in m}
    done = write_tables(config, speed, accuracy, out_dir, failures, macs, latency_files=latency)
    return done, replaced


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the config the tables are of (a part's h200.yaml)")
    parser.add_argument("--models", nargs="+", help="the rows, in order (default: the config's order)")
    parser.add_argument("--out-dir", required=True, help="where the tables go")
    parser.add_argument("parts", nargs="+", help="the parts' folders (each with results/), earliest first")
    args = parser.parse_args()
    config = read_config(args.config)
    if args.models:
        unknown = [m for m in args.models if m not in config["models"]]
        if unknown:
            raise UserError(f"--models names {', '.join(unknown)}, not in {args.config}'s models; name only those")
        config["models"] = {m: config["models"][m] for m in args.models}
    done, replaced = combine(config, args.parts, args.out_dir)
    for sentence in replaced:
        print(f"infbench: {sentence}", file=sys.stderr)
    for path in done["unused"]:
        print(f"infbench: {path} is for a cell not in the config; left out", file=sys.stderr)
    cells = done["cells"]
    counts = cells.groupby(["kind", "status"]).size().to_dict()
    print(json.dumps({f"{kind} {status}": int(n) for (kind, status), n in sorted(counts.items())}))
    for path in done["written"]:
        print(path)


if __name__ == "__main__":
    main_guard(main)
