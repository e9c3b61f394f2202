"""The timing harness, written once for every runtime (docs/architecture.md, measurement rules).

Timed region: ``session.run`` only, on batches already normalised and resident on the
device, several distinct staged batches in rotation, one ``session.sync`` at the end of
each timed window (for OneFlow that sync reads the last result back, which is the only
way to know its asynchronous work has finished). ``latency`` times single queries on the
same staged batches, one sync per query. Energy counters (``meter``) and GPU readings
(``probe``) are read outside the timed region.
"""

import statistics
import time


def spread_flagged(spread, max_spread):
    """Whether a cell's windows disagree by more than ``timing.max_spread`` (the tables'
    ``*``): decided here once, when the cell is measured, and recorded in its result."""
    return spread > max_spread


def stage_and_warm_up(session, batches, warmup_batches):
    """Stage ``batches`` on the device (once, before any timing) and run ``warmup_batches``
    inferences on them with one sync at the end: the part every timed cell, throughput or
    latency, begins with. Returns the staged batches and the seconds of both phases."""
    t_stage = time.perf_counter()
    staged = [session.stage(b) for b in batches]
    t_warmup = time.perf_counter()
    out = None
    for i in range(warmup_batches):
        out = session.run(staged[i % len(staged)])
    if out is not None:
        session.sync(out)
    t_done = time.perf_counter()
    # outside the timed region: staging (with any CUDA graph capture) and the warm-up
    return staged, {"staging_seconds": t_warmup - t_stage, "warmup_seconds": t_done - t_warmup}


def measure(session, batches, warmup_batches, timed_batches, windows, probe=None, after_window=None, meter=None):
    """Time ``windows`` windows of ``timed_batches`` inferences each.

    ``batches`` are uint8 NHWC host arrays of the session's batch size; they are staged
    once, before any timing. Returns images/s per window, their median and spread.
    ``probe`` (optional, e.g. ``infbench.gpu.clock_state``) is called just before the first
    window and just after the last, outside them; its readings are returned as ``probe``.
    ``meter`` (optional, an ``infbench.energy.Meter``) is read closer still: after the probe
    before the first window, before it after the last, so that its two readings bracket the
    windows and nothing else of note; they are returned as ``energy`` with the seconds
    between them. ``after_window(done, images_per_s)`` (optional, e.g. a progress line in
    the log) is called after each window, outside it.
    """
    staged, outside = stage_and_warm_up(session, batches, warmup_batches)
    n = len(staged)
    batch_size = batches[0].shape[0]

    readings = {"before": probe()} if probe else None
    energy = {"before": meter.read()} if meter else None
    t_first = time.perf_counter()
    seconds = []
    for done in range(1, windows + 1):
        t0 = time.perf_counter()
        for i in range(timed_batches):
            out = session.run(staged[i % n])
        session.sync(out)
        seconds.append(time.perf_counter() - t0)
        if after_window:
            after_window(done, timed_batches * batch_size / seconds[-1])
    if meter:
        energy["seconds"] = time.perf_counter() - t_first
        energy["after"] = meter.read()
    if probe:
        readings["after"] = probe()

    rates = [timed_batches * batch_size / s for s in seconds]
    median = statistics.median(rates)
    return {
        "images_per_s": median,
        "window_images_per_s": rates,
        "window_seconds": seconds,
        "spread": (max(rates) - min(rates)) / median,
        "ms_per_batch": 1000.0 * batch_size / median,
        "batch_size": batch_size,
        "staged_batches": n,
        "warmup_batches": warmup_batches,
        "timed_batches": timed_batches,
        "windows": windows,
        **outside,
        "probe": readings,
        "energy": energy,
    }


# the latency percentiles a cell reports (p50, p90, p99)
PERCENTILES = (50, 90, 99)


def percentile(values, p):
    """The ``p``-th percentile by nearest rank: the smallest value that at least ``p`` % of
    ``values`` do not exceed (always one of them; p99 of 1,000 queries is the 990th
    fastest)."""
    ordered = sorted(values)
    rank = -(-p * len(ordered) // 100)  # ceil(p % of the count), in integers: no rounding error
    return ordered[max(rank, 1) - 1]


def latency(session, batches, warmup_batches, queries, probe=None):
    """Time ``queries`` single inferences, each synchronised before the clock is read.

    The same staged batches and warm-up as ``measure`` (``stage_and_warm_up``); each query
    is ``run`` then ``sync`` between two clock readings, so that it is timed from its start
    to its result being ready, one query in flight at a time (the single-stream case).
    Returns the milliseconds of every query and their p50, p90, p99 (``percentile``) and
    mean. ``probe``: as for ``measure``, before the first query and after the last.
    """
    staged, outside = stage_and_warm_up(session, batches, warmup_batches)
    n = len(staged)
    readings = {"before": probe()} if probe else None
    ms = []
    for i in range(queries):
        t0 = time.perf_counter()
        session.sync(session.run(staged[i % n]))
        ms.append(1000.0 * (time.perf_counter() - t0))
    if probe:
        readings["after"] = probe()
    return {
        **{f"p{p}_ms": percentile(ms, p) for p in PERCENTILES},
        "mean_ms": statistics.fmean(ms),
        "query_ms": ms,
        "queries": queries,
        "batch_size": batches[0].shape[0],
        "staged_batches": n,
        "warmup_batches": warmup_batches,
        **outside,
        "probe": readings,
    }
