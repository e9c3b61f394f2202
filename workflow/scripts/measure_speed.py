"""Time one (runtime, model, precision, batch size) cell and write its result JSON.

Runs under the runtime's own interpreter (OneFlow's is a Python 3.10 environment).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench import provenance, runtimes, timing  # noqa: E402
from infbench.cli import add_cell_args, cell_of, open_cache, spec_from_args, write_json  # noqa: E402
from infbench.errors import main_guard  # noqa: E402


def staged_batches(cache, batch_size, count):
    """``count`` distinct batches from the start of the cache (wrapping if it is short)."""
    idx = np.arange(batch_size * count) % cache.shape[0]
    return [np.asarray(cache[idx[i * batch_size : (i + 1) * batch_size]]) for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    add_cell_args(parser)
    parser.add_argument("--cache", required=True, help="uint8 NHWC .npy tensor cache")
    parser.add_argument("--timing", required=True, help="the config's timing block, JSON")
    parser.add_argument("--config", default="{}", help="config that mattered, JSON (recorded)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    spec = spec_from_args(args)
    cfg = json.loads(args.timing)
    cache = open_cache(args.cache, spec.crop)
    batches = staged_batches(cache, spec.batch_size, cfg["staged_batches"])

    started = provenance.now()
    session = runtimes.load(spec.runtime).open_session(spec)
    try:
        result = timing.measure(
            session, batches, cfg["warmup_batches"], cfg["timed_batches"], cfg["windows"]
        )
        info = session.info()
    finally:
        session.close()
    finished = provenance.now()

    write_json(
        args.out,
        {
            "cell": cell_of(spec),
            "result": result,
            "flagged": result["spread"] > cfg["max_spread"],
            "provenance": {
                "runtime": info,
                "host": provenance.host(),
                "started": started,
                "finished": finished,
                "artifact": args.artifact,
                "artifact_sha256": provenance.sha256(args.artifact),
                "command": sys.argv,
                "config": json.loads(args.config),
            },
        },
    )
    print(
        f"{spec.runtime} {spec.model} {spec.precision} bs{spec.batch_size}:"
        f" {result['images_per_s']:.1f} img/s (spread {result['spread']:.1%})"
    )


if __name__ == "__main__":
    main_guard(main)
