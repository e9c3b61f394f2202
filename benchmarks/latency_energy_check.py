"""Latency and energy checks of the timing harness, for docs/results/h200.md.

1. Latency: for each runtime and precision, the harness's p50 (``timing.latency``: one query
   at a time, each synchronised before the clock is read) against a hand loop with the same
   per-query sync, in the same process: the plainest loop of each runtime from
   benchmarks/harness_efficiency.py (``HAND_LOOPS``) run one query per call, which ends with
   the runtime's own wait (PyTorch: ``torch.cuda.synchronize``; ONNX Runtime: ``run`` /
   ``run_with_iobinding``, which wait; TensorRT: ``stream.synchronize``). The two alternate
   (ABBA) for a few rounds; on the GPU the medians should agree within 2 %.
2. Energy, for each runtime, precision and energy batch size: a speed cell timed by
   ``timing.measure`` with its device's energy counter (``infbench.energy``), windows of
   about ``--energy-seconds`` in all. On an NVIDIA GPU, beside it, nvidia-smi samples
   ``power.draw`` every 100 ms (its own process), and two plausibility checks:
   (a) the cell's mean watts lie between the idle draw (the median of ``power.draw`` over a
       few seconds before any session is opened) and the board's ``power.limit``;
   (b) the cell's joules are within 10 % of the integral of the ``power.draw`` samples
       (piecewise linear) between the counter's two readings.
   On the CPU the cell reports RAPL's energy where it is readable and says why where not;
   the power.draw checks need an NVIDIA GPU and say they were skipped.

It runs end to end on the CPU (ONNX Runtime and PyTorch), so that the GPU run is known to
work before device time is spent:

    PYTHONPATH=workflow/scripts .venv/bin/python benchmarks/latency_energy_check.py \\
        --runtime torch onnxruntime --device cpu --arch alexnet --crop 64 --queries 50 \\
        --rounds 2 --energy-batch-sizes 2 --energy-seconds 1

On the H200 (benchmarks/h200/run.sh, LATENCY=1), with the workflow's artifacts:

    python3 benchmarks/latency_energy_check.py --runtime torch onnxruntime --device cuda \\
        --arch resnet50 --precision fp32 fp16 int8 --weights results/weights/resnet50.safetensors \\
        --onnx results/onnx/resnet50/fp32.onnx --options '{"allow_tf32": false}' --json out.json
    .venv-tensorrt/bin/python benchmarks/latency_energy_check.py --runtime tensorrt --device cuda \\
        --arch resnet50 --precision fp32 fp16 int8 --engine 'results/engines/resnet50/{precision}-bs{bs}.plan'

A runtime that cannot run a precision on the device (PyTorch int8, ONNX Runtime fp16 on the
CPU) is skipped and said so. ``--json`` writes every number for the results page.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness_efficiency import HAND_LOOPS, make_artifact  # noqa: E402

from infbench import energy, gpu, runtimes, timing  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402

LATENCY_TOLERANCE = 0.02  # harness p50 / hand p50 within 2 % on the GPU
ENERGY_TOLERANCE = 0.10  # the counter's joules within 10 % of the power.draw integral


# --- latency ----------------------------------------------------------------------------


def hand_latency(loop, warmup, queries):
    """Milliseconds of each of ``queries`` single queries of a hand loop (``loop(1)``: one
    inference and the runtime's own wait), after ``warmup`` of them."""
    for _ in range(warmup):
        loop(1)
    ms = []
    for _ in range(queries):
        t0 = time.perf_counter()
        loop(1)
        ms.append(1000.0 * (time.perf_counter() - t0))
    return ms


def latency_rounds(spec, args, batches):
    """``args.rounds`` alternating rounds of the harness's and the hand loop's p50 (ms)."""
    session = runtimes.load(spec.runtime).open_session(spec)
    try:
        hand = HAND_LOOPS[spec.runtime](spec, batches, session)
        rows = []
        for r in range(args.rounds):
            p50 = {}
            for who in ("harness", "hand") if r % 2 == 0 else ("hand", "harness"):
                if who == "harness":
                    p50[who] = timing.latency(session, batches, args.warmup, args.queries)["p50_ms"]
                else:
                    p50[who] = timing.percentile(hand_latency(hand, args.warmup, args.queries), 50)
            rows.append(p50)
        info = session.info()
    finally:
        session.close()
    return rows, info


# --- power.draw beside a cell -------------------------------------------------------------


class PowerDraw:
    """nvidia-smi sampling ``field`` (power.draw) of one GPU every ``period_ms`` in its own
    process while the block runs; ``samples``: (wall-clock seconds, watts), each at the time
    nvidia-smi stamped it."""

    def __init__(self, device, field="power.draw", period_ms=100):
        self.command = [
            "nvidia-smi", f"--query-gpu=timestamp,{field}", "--format=csv,noheader,nounits",
            "-lms", str(period_ms), "-i", device,
        ]  # fmt: skip
        self.samples, self.unparsed = [], []

    def __enter__(self):
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                stamp, watts = (v.strip() for v in line.split(","))
                when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                self.samples.append((when, float(watts)))
            except ValueError:
                self.unparsed.append(line.strip())

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)


def integral(samples, start, end):
    """Joules under the piecewise-linear power of ``samples`` (seconds, watts) from ``start``
    to ``end``; None unless the samples cover the whole span."""
    points = sorted(samples)
    if len(points) < 2 or points[0][0] > start or points[-1][0] < end:
        return None
    total = 0.0
    for (t0, w0), (t1, w1) in zip(points, points[1:]):
        lo, hi = max(t0, start), min(t1, end)
        if hi <= lo:
            continue

        def at(t, t0=t0, w0=w0, t1=t1, w1=w1):
            return w0 + (w1 - w0) * (t - t0) / (t1 - t0)

        total += (at(lo) + at(hi)) / 2 * (hi - lo)
    return total


def idle_draw(device, field, seconds=3.0):
    """The median ``field`` (power.draw) of the idle GPU over ``seconds``, or None."""
    with PowerDraw(device, field) as sampler:
        time.sleep(seconds)
    watts = [w for _, w in sampler.samples]
    return statistics.median(watts) if watts else None


class Stamped:
    """An energy Meter that also notes the wall-clock time of each reading (the middle of
    the read), to match nvidia-smi's timestamps."""

    def __init__(self, meter):
        self.meter, self.times = meter, []

    def read(self):
        t0 = time.time()
        value = self.meter.read()
        self.times.append((t0 + time.time()) / 2)
        return value


# --- energy -------------------------------------------------------------------------------


def energy_cell(spec, args, batches, meter, gpu_facts):
    """A speed cell with its energy (windows of about ``args.energy_seconds`` in all) and,
    on a GPU, the power.draw samples beside it: a dict of the numbers and the checks."""
    session = runtimes.load(spec.runtime).open_session(spec)
    try:
        probe = timing.measure(session, batches, args.warmup, 10, 1)["images_per_s"]
        timed = max(10, round(probe * args.energy_seconds / args.windows / spec.batch_size))
        stamped = Stamped(meter)
        if gpu_facts:
            with PowerDraw(gpu_facts["device"], args.power_field) as sampler:
                time.sleep(0.5)  # samples before the first reading
                result = timing.measure(session, batches, args.warmup, timed, args.windows, meter=stamped)
                time.sleep(0.5)  # and after the last
        else:
            result = timing.measure(session, batches, args.warmup, timed, args.windows, meter=stamped)
    finally:
        session.close()
    images = args.windows * timed * spec.batch_size
    block = energy.record(meter, None, result["energy"], images)
    row = {"images_per_s": result["images_per_s"], "timed_batches": timed, "energy": block}
    if not block["measured"] or not gpu_facts:
        return row
    joules = integral(sampler.samples, *stamped.times)
    row["power_samples"] = len(sampler.samples)
    row["power_integral_j"] = joules
    idle, limit = gpu_facts["idle_w"], gpu_facts["limit_w"]
    row["watts_plausible"] = None if idle is None or limit is None else bool(idle < block["mean_watts"] <= limit)
    row["energy_ratio"] = None if not joules else block["joules"] / joules
    row["energy_plausible"] = None if not joules else abs(row["energy_ratio"] - 1) <= ENERGY_TOLERANCE
    return row


def gpu_facts(args):
    """The idle draw and the power limit of the GPU the runtimes use, or None on the CPU."""
    if args.device != "cuda":
        return None
    device = gpu.visible_gpu()
    raw = gpu.query(["name", "power.limit"], device) or {}
    try:
        limit = float(raw.get("power.limit"))
    except (TypeError, ValueError):
        limit = None  # "[N/A]"
    return {
        "device": device,
        "name": raw.get("name"),
        "limit_w": limit,
        "idle_w": idle_draw(device, args.power_field, args.idle_seconds),
        "field": args.power_field,
    }


# --- the run ------------------------------------------------------------------------------


def cell_spec(runtime, precision, batch_size, args):
    """A SessionSpec with the artifact harness_efficiency makes (or the engine of --engine);
    None where the runtime cannot run the precision on the device."""
    if precision not in runtimes.CAPABILITIES[runtime].get(args.device, ()):
        return None
    made = argparse.Namespace(**{**vars(args), "precision": precision, "batch_size": batch_size})
    options = json.loads(args.options)
    if runtime == "tensorrt":
        if not args.engine:
            raise UserError("--runtime tensorrt needs --engine 'results/engines/<model>/{precision}-bs{bs}.plan'")
        made.engine = args.engine.format(precision=precision, bs=batch_size)
        from infbench.runtimes.tensorrt import build as engine

        options = {**engine.settings_of_sidecar(engine.read_sidecar(engine.sidecar_path(made.engine))), **options}
    return SessionSpec(
        runtime=runtime, model=args.arch, arch=args.arch, precision=precision, batch_size=batch_size,
        device=args.device, artifact=make_artifact(runtime, made, args.work_dir), crop=args.crop, options=options,
    )  # fmt: skip


def random_batches(batch_size, crop, count):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (batch_size, crop, crop, 3), dtype=np.uint8) for _ in range(count)]


def check_latency(args, report):
    print(f"\n## Latency: harness p50 against a hand loop, batch size {args.batch_size}, {args.queries} queries")
    print("| runtime | precision | rounds: harness / hand p50 ms | median harness / hand | within 2 % |")
    print("|---|---|---|---|---|")
    for runtime in args.runtime:
        for precision in args.precision:
            spec = cell_spec(runtime, precision, args.batch_size, args)
            if spec is None:
                print(f"| {runtime} | {precision} | skipped: {runtime} has no {precision} on {args.device} | | |")
                continue
            rows, info = latency_rounds(spec, args, random_batches(args.batch_size, args.crop, args.staged))
            harness = statistics.median(r["harness"] for r in rows)
            hand = statistics.median(r["hand"] for r in rows)
            ratio = harness / hand
            verdict = (
                ("yes" if abs(ratio - 1) <= LATENCY_TOLERANCE else "NO")
                if args.device == "cuda"
                else "(the 2 % criterion is the GPU's)"
            )
            rounds = ", ".join(f"{r['harness']:.3f} / {r['hand']:.3f}" for r in rows)
            print(f"| {runtime} | {precision} | {rounds} | {ratio:.3f} | {verdict} |", flush=True)
            report["latency"].append(
                {"runtime": runtime, "precision": precision, "batch_size": args.batch_size, "rounds": rows,
                 "ratio": ratio, "info": info}
            )  # fmt: skip


def check_energy(args, report):
    facts = gpu_facts(args)
    report["gpu"] = facts
    meter, why = energy.meter_for(args.device)
    print(f"\n## Energy: speed cells of about {args.energy_seconds} s of timed windows")
    if facts:
        print(
            f"GPU {facts['device']} ({facts['name']}): idle {facts['field']} {facts['idle_w']} W,"
            f" power.limit {facts['limit_w']} W"
        )
    else:
        print(f"skipped: the power.draw checks need an NVIDIA GPU (device {args.device})")
    if meter is None:
        print(f"energy not measured on {args.device}: {why}; the energy cells are skipped")
        report["energy_not_measured"] = why
        return
    print(f"counter: {meter.source}")
    print("| runtime | precision | batch | img/s | J | img/J | W | W in (idle, limit] | J / power.draw integral |")
    print("|---|---|---|---|---|---|---|---|---|")
    for runtime in args.runtime:
        for precision in args.precision:
            for batch_size in args.energy_batch_sizes:
                spec = cell_spec(runtime, precision, batch_size, args)
                if spec is None:
                    continue
                row = energy_cell(spec, args, random_batches(batch_size, args.crop, args.staged), meter, facts)
                block = row["energy"]
                if not block["measured"]:
                    print(f"| {runtime} | {precision} | {batch_size} | {row['images_per_s']:.1f} | not measured:"
                          f" {block['reason']} | | | | |")  # fmt: skip
                else:
                    ratio = row.get("energy_ratio")
                    checks = (
                        f"{row['watts_plausible']} | {ratio:.3f} ({row['energy_plausible']})"
                        if ratio is not None
                        else f"{row.get('watts_plausible', 'skipped (no GPU)')} | skipped"
                        + (" (samples do not cover the cell)" if facts else " (no GPU)")
                    )
                    print(
                        f"| {runtime} | {precision} | {batch_size} | {row['images_per_s']:.1f} |"
                        f" {block['joules']:.1f} | {block['images_per_joule']:.3g} | {block['mean_watts']:.1f} |"
                        f" {checks} |",
                        flush=True,
                    )
                report["energy"].append({"runtime": runtime, "precision": precision, "batch_size": batch_size, **row})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", nargs="+", default=["torch", "onnxruntime"], choices=sorted(HAND_LOOPS))
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "fp16", "int8"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--options", default="{}", help="the runtime's options block, JSON")
    parser.add_argument("--batch-size", type=int, default=1, help="the latency cells' batch size")
    parser.add_argument("--queries", type=int, default=1000, help="queries per latency round")
    parser.add_argument("--rounds", type=int, default=4, help="harness/hand alternations")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--staged", type=int, default=4, help="distinct batches in rotation")
    parser.add_argument("--energy-batch-sizes", type=int, nargs="*", default=[8, 50])
    parser.add_argument("--energy-seconds", type=float, default=10.0, help="timed windows per energy cell, in all")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--power-field", default="power.draw", help="nvidia-smi's field sampled beside a cell")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="the idle draw's sampling, before any work")
    parser.add_argument("--weights", help="existing .safetensors (else seeded random, made here)")
    parser.add_argument("--onnx", help="existing fp32 .onnx (else exported here)")
    parser.add_argument("--engine", help="TensorRT engines, a pattern: 'results/engines/m/{precision}-bs{bs}.plan'")
    parser.add_argument("--artifact", type=json.loads, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", default="results/bench", help="where made artifacts are kept")
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    report = {"args": vars(args), "latency": [], "energy": []}
    print(f"{args.arch} crop {args.crop} on {args.device}; runtimes {', '.join(args.runtime)}")
    check_latency(args, report)
    check_energy(args, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main_guard(main)
