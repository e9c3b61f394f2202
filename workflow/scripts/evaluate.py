"""Predict every image of the data set with one (runtime, model, precision) cell.

Writes an .npz with the top-5 classes of every image and the logits of the first images.
"""

import time

SCRIPT_STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench import files, metrics, provenance, runtimes  # noqa: E402
from infbench.cli import add_cell_args, cell_of, open_cache, spec_from_args  # noqa: E402
from infbench.errors import main_guard, out_of_memory_names  # noqa: E402
from infbench.progress import Progress  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    add_cell_args(parser)
    parser.add_argument("--cache", required=True, help="uint8 NHWC .npy tensor cache")
    parser.add_argument("--keep-logits", type=int, default=1000)
    parser.add_argument("--config", default="{}", help="config that mattered, JSON (recorded)")
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args()

    phases = provenance.Phases(SCRIPT_STARTED)
    runtimes.load(args.runtime)  # the runtime's own imports
    phases.mark("imports")
    spec = spec_from_args(args)
    cache = open_cache(args.cache, spec.crop)
    phases.mark("inputs")
    started = provenance.now()
    with out_of_memory_names(spec):
        session = runtimes.load(spec.runtime).open_session(spec)
    phases.mark("open_session")
    try:
        progress = Progress(f"evaluate {spec.runtime} {spec.model} {spec.precision}", len(cache))
        with out_of_memory_names(spec):
            top5, logits, nonfinite = metrics.evaluate(session, cache, spec.batch_size, args.keep_logits, progress)
        progress.finish()
        phases.mark("evaluate")
        info = session.info()
    finally:
        session.close()
    phases.mark("close")
    meta = {
        "cell": cell_of(spec),
        # phases: where this process's time went (seconds)
        "provenance": provenance.result_block(
            info, started, provenance.now(), args.artifact, phases, config=json.loads(args.config)
        ),
    }
    with files.atomic_output(args.out) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a name
            np.savez(f, top5=top5, logits=logits, nonfinite=nonfinite, meta=json.dumps(meta))
    print(f"{spec.runtime} {spec.model} {spec.precision}: {len(top5)} images predicted")
    if nonfinite.any():
        print(f"{spec.runtime} {spec.model} {spec.precision}: non-finite logits in {int(nonfinite.sum())} images")


if __name__ == "__main__":
    main_guard(main)
