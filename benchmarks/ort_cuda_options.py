"""ONNX Runtime's CUDA provider options against each other: images/s per combination.

For each ONNX file and batch size, a session is opened through the project's runtime
module (``infbench.runtimes.load("onnxruntime")``) for every combination of the config keys
``prefer_nhwc`` (false, true) and ``cudnn_conv_algo_search`` (EXHAUSTIVE, HEURISTIC,
DEFAULT), timed with the harness the workflow uses (``infbench.timing.measure``), and closed.
The sweep runs ``--rounds`` times, the combinations in a different order each round
(rotated), and a cell shows the median of its rounds. The settings each session ran with
are read back from ONNX Runtime (the result's provenance does the same) and printed, so a
combination the provider did not take shows as such.

    PYTHONPATH=workflow/scripts .venv/bin/python benchmarks/ort_cuda_options.py --device cuda \\
        --onnx results/onnx/vgg16/fp16.onnx results/onnx/vgg16/fp32.onnx --batch-size 8 50

Prints two markdown tables: images/s (median of the rounds; `*` where a session's windows
spread more than 10 %), and the seconds from opening a session to the end of its warm-up
(cuDNN's exhaustive search runs there, on each convolution's first run). The inputs are
random images (speed does not depend on them); the per-run sync is the workflow's default
(``auto``), fp32 strict (TF32 off). On the CPU the two options do not exist (they are the
CUDA provider's): one column, ONNX Runtime's CPU provider as the workflow runs it.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench import runtimes, timing  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402
from infbench.runtimes.onnxruntime import CONV_ALGO_SEARCH  # noqa: E402

MAX_SPREAD = 0.1  # the workflow's default timing.max_spread


def combinations(device):
    """The option sets to time: every (prefer_nhwc, cudnn_conv_algo_search) on CUDA; on the
    CPU the empty set alone, since both are CUDA provider options."""
    if device == "cpu":
        return [{}]
    return [
        {"prefer_nhwc": nhwc, "cudnn_conv_algo_search": search}
        for nhwc, search in itertools.product((False, True), CONV_ALGO_SEARCH)
    ]


def column(options):
    if not options:
        return "CPU provider"
    return f"{'NHWC' if options['prefer_nhwc'] else 'NCHW'} {options['cudnn_conv_algo_search']}"


def cell_of(onnx, batch_size, device):
    """The SessionSpec of one file and batch size: precision from the file name (the
    workflow's fp32.onnx, fp16.onnx, int8-*.onnx), input size from the file itself."""
    import onnxruntime as ort

    if not os.path.isfile(onnx):
        raise UserError(f"{onnx} does not exist; give the workflow's ONNX files (results/onnx/<model>/fp16.onnx, ...)")
    name = os.path.basename(onnx)
    precision = next((p for p in ("fp16", "int8") if name.startswith(p)), "fp32")
    shape = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    if not (isinstance(shape[2], int) and shape[2] == shape[3]):
        raise UserError(f"{onnx}: its input is {shape}; a square image size was expected (N, 3, H, W)")
    stem = os.path.basename(os.path.dirname(os.path.abspath(onnx)))
    return SessionSpec("onnxruntime", stem, stem, precision, batch_size, device, onnx, shape[2])


def time_one(spec, options, batches, args):
    """Open a session with ``options``, time it with the workflow's harness, close it.
    Returns (images/s, spread, seconds from opening to the end of the warm-up, settings
    read back from ONNX Runtime)."""
    spec = SessionSpec(**{**spec.__dict__, "options": {"allow_tf32": False, "threads": args.threads, **options}})
    t_open = time.perf_counter()
    session = runtimes.load("onnxruntime").open_session(spec)
    try:
        opened = time.perf_counter() - t_open
        result = timing.measure(session, batches, args.warmup, args.timed, args.windows)
        info = session.info()
    finally:
        session.close()
    keys = ("prefer_nhwc", "cudnn_conv_algo_search", "tf32", "per_run_sync", "threads")
    settings = {k: info.get(k) for k in keys}
    first = opened + result["staging_seconds"] + result["warmup_seconds"]
    return result["images_per_s"], result["spread"], first, settings


def sweep(args):
    """{(file, batch size): {column: [(img/s, spread, first seconds), ...]}} and the settings
    each column's sessions reported."""
    combos = combinations(args.device)
    rng = np.random.default_rng(0)
    runs, reported = {}, {}
    for onnx, batch_size in itertools.product(args.onnx, args.batch_size):
        spec = cell_of(onnx, batch_size, args.device)
        batches = [rng.integers(0, 256, (batch_size, spec.crop, spec.crop, 3), dtype=np.uint8) for _ in range(4)]
        cell = runs.setdefault((onnx, batch_size), {})
        for r in range(args.rounds):
            for options in combos[r % len(combos) :] + combos[: r % len(combos)]:
                rate, spread, first, settings = time_one(spec, options, batches, args)
                cell.setdefault(column(options), []).append((rate, spread, first))
                reported.setdefault(column(options), set()).add(json.dumps(settings, sort_keys=True))
                print(f"{onnx} bs{batch_size} {column(options)}: {rate:,.0f} img/s (spread {spread:.1%})",
                      file=sys.stderr, flush=True)  # fmt: skip
    return runs, reported


def tables(runs, reported, device):
    columns = [column(o) for o in combinations(device)]
    lines = []
    if device == "cpu":
        lines += [
            "On the CPU: prefer_nhwc and cudnn_conv_algo_search are CUDA provider options, absent"
            " here; one column, ONNX Runtime's CPU provider as the workflow runs it.",
            "",
        ]
    head = ["| file | batch | " + " | ".join(columns) + " |", "|---|--:|" + "--:|" * len(columns)]
    speed, first = list(head), list(head)
    for (onnx, batch_size), cell in runs.items():
        rates, firsts = [], []
        for c in columns:
            rounds = cell[c]
            rate = statistics.median(r for r, _, _ in rounds)
            star = "*" if any(s > MAX_SPREAD for _, s, _ in rounds) else ""
            rates.append(f"{rate:,.0f}{star}")
            firsts.append(f"{statistics.median(f for _, _, f in rounds):.2f}")
        speed.append(f"| {onnx} | {batch_size} | " + " | ".join(rates) + " |")
        first.append(f"| {onnx} | {batch_size} | " + " | ".join(firsts) + " |")
    lines += ["Images per second (median of the rounds; `*`: a round's windows spread more than 10 %):", ""]
    lines += speed + ["", "Seconds from opening the session to the end of its warm-up (median of the rounds):", ""]
    lines += first + ["", "Settings as each column's sessions reported them (ONNX Runtime's own options):", ""]
    lines += [f"- {c}: {'; '.join(sorted(reported[c]))}" for c in columns]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", nargs="+", required=True, help="the workflow's ONNX files (fp16.onnx, ...)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 50])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timed", type=int, default=200, help="timed batches per window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="sweeps, the combinations rotated each time")
    parser.add_argument("--threads", type=int, default=None, help="CPU: intra-op threads (default: every core)")
    args = parser.parse_args()
    runs, reported = sweep(args)
    print(tables(runs, reported, args.device))


if __name__ == "__main__":
    main_guard(main)
