"""Time the cells of one (runtime, model, precision) at each batch size, one result JSON each.

Runs under the runtime's own interpreter (OneFlow's is a Python 3.10 environment). One
process times every batch size, one after the other, each in a session of its own: the
interpreter's start-up and the runtime's imports are paid once, not once per cell.

A speed cell is timed in windows (``timing.measure``), with the energy its device's counter
says the windows used (``infbench.energy``; ``not measured`` and why where there is none).
With ``--latency QUERIES`` each cell is a latency cell instead: QUERIES single queries,
each synchronised before the clock is read (``timing.latency``), on the same staged
batches after the same warm-up (the --timing block's warmup_batches and staged_batches).

    python workflow/scripts/measure_speed.py --runtime torch --model resnet50 --arch resnet50 \
        --precision fp16 --device cuda --crop 224 --artifact results/weights/resnet50.safetensors \
        --batch-size 8 50 --cache results/cache/synthetic/256-224.npy \
        --timing '{"warmup_batches": 5, "timed_batches": 500, "windows": 3, "staged_batches": 4, "max_spread": 0.05}' \
        --out fp16-bs8.json fp16-bs50.json
    python workflow/scripts/measure_speed.py ... --batch-size 1 --latency 1000 \
        --timing '{"warmup_batches": 5, "staged_batches": 4}' --out latency-fp16-bs1.json
"""

import time

SCRIPT_STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from infbench import energy, gpu, provenance, results, runtimes, timing  # noqa: E402
from infbench.cli import add_cell_args, cell_of, open_cache, several_cells, spec_from_args  # noqa: E402
from infbench.errors import UserError, main_guard, out_of_memory_names  # noqa: E402


def staged_batches(cache, batch_size, count):
    """``count`` distinct batches from the start of the cache (wrapping if it is short)."""
    idx = np.arange(batch_size * count) % cache.shape[0]
    return [np.asarray(cache[idx[i * batch_size : (i + 1) * batch_size]]) for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_args(parser, several=True)
    parser.add_argument("--cache", required=True, help="uint8 NHWC .npy tensor cache")
    parser.add_argument("--timing", required=True, help="the config's timing block, JSON")
    parser.add_argument("--latency", type=int, metavar="QUERIES", help="latency cells of QUERIES single queries each")
    parser.add_argument("--config", default="{}", help="config that mattered, JSON (recorded)")
    parser.add_argument("--out", required=True, nargs="+", help="one result JSON per batch size")
    args = parser.parse_args()

    phases = provenance.Phases(SCRIPT_STARTED)
    runtimes.load(args.runtime)  # the runtime's own imports, once for every cell
    phases.mark("imports")
    cells = several_cells(args, args.out)
    cfg = json.loads(args.timing)
    if args.latency is not None and args.latency < 1:
        raise UserError(f"--latency {args.latency}: give the number of queries, 1 or more (config key latency.queries)")
    cache = open_cache(args.cache, args.crop)
    # the device's energy counter, opened once for every speed cell of the process
    meter = energy.meter_for(args.device) if args.latency is None else None
    failed = []
    for index, (batch_size, artifact, out) in enumerate(cells):
        spec = spec_from_args(args, batch_size, artifact)
        place = (index + 1, len(cells))
        try:
            with out_of_memory_names(spec):
                if args.latency is None:
                    time_cell(spec, cache, cfg, args, out, phases, place, meter)
                else:
                    time_latency_cell(spec, cache, cfg, args, out, phases, place)
        except UserError as err:
            # the cell's sentence now; the other batch sizes still get their cells (a cell
            # whose batch does not fit says so, and the smaller ones are still measured)
            print(f"infbench: {err}", file=sys.stderr, flush=True)
            failed.append(spec.batch_size)
        phases = phases.next()
    if failed:
        sys.exit(2)  # each failed cell's sentence is above


def timed_session(spec, cache, cfg, phases, measure):
    """Open the cell's session, ``measure(session, batches)`` in it, close it: the result,
    the session's info and the start and end times."""
    batches = staged_batches(cache, spec.batch_size, cfg["staged_batches"])
    phases.mark("inputs")

    started = provenance.now()
    session = runtimes.load(spec.runtime).open_session(spec)
    phases.mark("open_session")
    try:
        result = measure(session, batches)
        phases.mark("measure")
        info = session.info()
    finally:
        session.close()
    return result, info, started, provenance.now()


def write_cell(spec, args, out, phases, place, result, info, started, finished, **fields):
    """A cell's result JSON: the cell, its result and ``fields``, the GPU's clock drop and
    the provenance (with the clocks read before and after the timed region)."""
    clocks = result.pop("probe")  # the GPU's clocks before and after the timed region
    results.write(
        out,
        {
            "cell": cell_of(spec),
            "result": result,
            **fields,
            "clock_drop": gpu.clock_drop(clocks["before"], clocks["after"]) if clocks else None,
            # phases: where this process's time went since the previous cell's result (the
            # first cell: since the process started), up to writing this file (seconds)
            "provenance": provenance.result_block(
                info,
                started,
                finished,
                spec.artifact,
                phases,
                config=json.loads(args.config),
                # this cell's place among the cells one process timed (1-based, count)
                cell_of_process=list(place),
                gpu_clocks=clocks,
            ),
        },
    )


def time_cell(spec, cache, cfg, args, out, phases, place, meter):
    """Time one speed cell in a session of its own and write its result JSON; ``meter``:
    ``energy.meter_for``'s (Meter, or None and why not)."""
    counter, why_not = meter
    name = f"{spec.runtime} {spec.model} {spec.precision} bs{spec.batch_size}"
    result, info, started, finished = timed_session(
        spec,
        cache,
        cfg,
        phases,
        lambda session, batches: timing.measure(
            session,
            batches,
            cfg["warmup_batches"],
            cfg["timed_batches"],
            cfg["windows"],
            probe=gpu.clock_state if spec.device == "cuda" else None,
            after_window=lambda done, rate: print(
                f"{name}: window {done}/{cfg['windows']} {rate:.1f} img/s", flush=True
            ),
            meter=counter,
        ),
    )
    phases.split(
        "measure",
        {
            "staging": result["staging_seconds"],
            "warmup": result["warmup_seconds"],
            "timed_windows": sum(result["window_seconds"]),
        },
    )
    phases.mark("close")
    images = cfg["windows"] * cfg["timed_batches"] * spec.batch_size
    used = energy.record(counter, why_not, result.pop("energy"), images)
    flagged = timing.spread_flagged(result["spread"], cfg["max_spread"])
    write_cell(spec, args, out, phases, place, result, info, started, finished, flagged=flagged, energy=used)
    said = (
        f"{used['images_per_joule']:.3g} img/J, {used['mean_watts']:.1f} W"
        if used["measured"]
        else f"energy not measured: {used['reason']}"
    )
    print(f"{name}: {result['images_per_s']:.1f} img/s (spread {result['spread']:.1%}); {said}", flush=True)


def time_latency_cell(spec, cache, cfg, args, out, phases, place):
    """Time one latency cell (``--latency`` single queries) and write its result JSON."""
    result, info, started, finished = timed_session(
        spec,
        cache,
        cfg,
        phases,
        lambda session, batches: timing.latency(
            session,
            batches,
            cfg["warmup_batches"],
            args.latency,
            probe=gpu.clock_state if spec.device == "cuda" else None,
        ),
    )
    phases.split(
        "measure",
        {
            "staging": result["staging_seconds"],
            "warmup": result["warmup_seconds"],
            "timed_queries": sum(result["query_ms"]) / 1000.0,
        },
    )
    phases.mark("close")
    write_cell(spec, args, out, phases, place, result, info, started, finished)
    print(
        f"{spec.runtime} {spec.model} {spec.precision} bs{spec.batch_size}: {result['queries']} queries,"
        f" p50 {result['p50_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms,"
        f" mean {result['mean_ms']:.3f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main_guard(main)
