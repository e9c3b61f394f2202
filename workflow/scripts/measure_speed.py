"""Time one (runtime, model, precision, batch size) cell and write its result JSON.

Runs under the runtime's own interpreter (OneFlow's is a Python 3.10 environment).
"""

import time

SCRIPT_STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench import gpu, provenance, runtimes, timing  # noqa: E402
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

    phases = provenance.Phases(SCRIPT_STARTED)
    phases.mark("imports")
    spec = spec_from_args(args)
    cfg = json.loads(args.timing)
    cache = open_cache(args.cache, spec.crop)
    batches = staged_batches(cache, spec.batch_size, cfg["staged_batches"])
    phases.mark("inputs")

    started = provenance.now()
    session = runtimes.load(spec.runtime).open_session(spec)
    phases.mark("open_session")
    try:
        result = timing.measure(
            session, batches, cfg["warmup_batches"], cfg["timed_batches"], cfg["windows"],
            probe=gpu.clock_state if spec.device == "cuda" else None,
        )
        phases.mark("measure")
        info = session.info()
    finally:
        session.close()
    finished = provenance.now()
    phases.split("measure", {"staging": result["staging_seconds"], "warmup": result["warmup_seconds"],
                             "timed_windows": sum(result["window_seconds"])})
    phases.mark("close")

    clocks = result.pop("probe")  # the GPU's clocks before and after the timed windows
    write_json(
        args.out,
        {
            "cell": cell_of(spec),
            "result": result,
            "flagged": result["spread"] > cfg["max_spread"],
            "clock_drop": gpu.clock_drop(clocks["before"], clocks["after"]) if clocks else None,
            "provenance": {
                "runtime": info,
                "host": provenance.host(),
                "started": started,
                "finished": finished,
                "artifact": args.artifact,
                "artifact_sha256": provenance.sha256(args.artifact),
                "command": sys.argv,
                "config": json.loads(args.config),
                # where this process's time went, up to writing this file (seconds)
                "phases": phases.record(),
                "gpu_clocks": clocks,
            },
        },
    )
    print(
        f"{spec.runtime} {spec.model} {spec.precision} bs{spec.batch_size}:"
        f" {result['images_per_s']:.1f} img/s (spread {result['spread']:.1%})"
    )


if __name__ == "__main__":
    main_guard(main)
