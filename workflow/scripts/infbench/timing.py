"""The timing harness, written once for every runtime (docs/architecture.md, measurement rules).

Timed region: ``session.run`` only, on batches already normalised and resident on the
device, several distinct staged batches in rotation, one ``session.sync`` at the end of
each timed window (for OneFlow that sync reads the last result back, which is the only
way to know its asynchronous work has finished).
"""

import statistics
import time


def spread_flagged(spread, max_spread):
    """Whether a cell's windows disagree by more than ``timing.max_spread`` (the tables'
    ``*``): decided here once, when the cell is measured, and recorded in its result."""
    return spread > max_spread


def measure(session, batches, warmup_batches, timed_batches, windows, probe=None, after_window=None):
    """Time ``windows`` windows of ``timed_batches`` inferences each.

    ``batches`` are uint8 NHWC host arrays of the session's batch size; they are staged
    once, before any timing. Returns images/s per window, their median and spread.
    ``probe`` (optional, e.g. ``infbench.gpu.clock_state``) is called just before the first
    window and just after the last, outside them; its readings are returned as ``probe``.
    ``after_window(done, images_per_s)`` (optional, e.g. a progress line in the log) is
    called after each window, outside it.
    """
    t_stage = time.perf_counter()
    staged = [session.stage(b) for b in batches]
    n = len(staged)
    batch_size = batches[0].shape[0]

    t_warmup = time.perf_counter()
    out = None
    for i in range(warmup_batches):
        out = session.run(staged[i % n])
    if out is not None:
        session.sync(out)
    t_done = time.perf_counter()

    readings = {"before": probe()} if probe else None
    seconds = []
    for done in range(1, windows + 1):
        t0 = time.perf_counter()
        for i in range(timed_batches):
            out = session.run(staged[i % n])
        session.sync(out)
        seconds.append(time.perf_counter() - t0)
        if after_window:
            after_window(done, timed_batches * batch_size / seconds[-1])
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
        # outside the windows: staging (with any CUDA graph capture) and the warm-up
        "staging_seconds": t_warmup - t_stage,
        "warmup_seconds": t_done - t_warmup,
        "probe": readings,
    }
