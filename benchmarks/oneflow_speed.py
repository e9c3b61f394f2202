"""OneFlow images/s through the timing harness vs a minimal hand-written loop.

Checks that ``infbench.timing.measure`` on the OneFlow session reports what a plain
OneFlow loop gets on the same staged tensors: ``for x in xs: y = model(x)`` and one
``y.numpy()`` at the end of each window (OneFlow is asynchronous; reading back waits).
The hand loop uses its own module (eager) or its own ``nn.Graph`` (graph), not the
session's ``run``, so that overhead in the session would show as a ratio below 1.

Run under the OneFlow interpreter, e.g.
    .venv-oneflow/bin/python benchmarks/oneflow_speed.py
Weights are seeded random flowvision initialisations (speed does not depend on them),
written once as framework-neutral safetensors into --weights-dir.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench.errors import main_guard  # noqa: E402
from infbench.runtimes import load  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402
from infbench.timing import measure  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["alexnet", "resnet50"], choices=["alexnet", "vgg16", "resnet50"])
    parser.add_argument("--modes", nargs="+", default=["eager", "graph"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=10)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--staged", type=int, default=4, help="distinct staged batches")
    parser.add_argument("--threads", type=int, default=None, help="runtimes.oneflow.threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", default=os.path.join(tempfile.gettempdir(), "infbench-oneflow-speed"))
    return parser.parse_args()


def seeded_weights(arch, seed, folder):
    """Neutral weights of a seeded flowvision initialisation, written once per arch and seed."""
    import oneflow as flow
    from safetensors.numpy import save_file

    from infbench.runtimes.oneflow import build_model

    path = os.path.join(folder, f"{arch}-seed{seed}.safetensors")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        flow.manual_seed(seed)
        state = build_model(arch).state_dict()
        # not np.ascontiguousarray: it makes the 0-d num_batches_tracked 1-d
        save_file({k: v.numpy() for k, v in state.items()}, path)
    return path


def hand_model(arch, weights_path, mode):
    """The same model built by hand: an eval module, or that module in a plain nn.Graph."""
    import oneflow as flow
    from safetensors.numpy import load_file

    from infbench.runtimes.oneflow import build_model, load_weights

    model = build_model(arch)
    load_weights(model, load_file(weights_path), weights_path, arch)
    model.eval()
    model.requires_grad_(False)
    if mode == "eager":
        return model

    class Graph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = model

        def build(self, x):
            return self.model(x)

    return Graph()


def hand_warmup(model, staged, warmup):
    """Run ``warmup`` batches and wait for them (graph mode compiles on the first)."""
    for i in range(warmup):
        y = model(staged[i % len(staged)])
    if warmup:
        y.numpy()


def hand_window(model, xs, batch_size):
    """images/s of ``for x in xs: y = model(x)`` with one read-back at the end."""
    t0 = time.perf_counter()
    for x in xs:
        y = model(x)
    y.numpy()
    return len(xs) * batch_size / (time.perf_counter() - t0)


def spread(rates):
    return (max(rates) - min(rates)) / statistics.median(rates)


def main():
    args = parse_args()
    runtime = load("oneflow")
    rng = np.random.default_rng(args.seed)
    batches = [
        rng.integers(0, 256, (args.batch_size, args.crop, args.crop, 3), dtype=np.uint8) for _ in range(args.staged)
    ]
    rows = []
    for arch in args.archs:
        weights = seeded_weights(arch, args.seed, args.weights_dir)
        for mode in args.modes:
            options = {"mode": mode}
            if args.threads is not None:
                options["threads"] = args.threads
            spec = SessionSpec("oneflow", arch, arch, "fp32", args.batch_size, "cpu", weights, args.crop, options)
            session = runtime.open_session(spec)
            model = hand_model(arch, weights, mode)
            staged = [session.stage(b) for b in batches]
            xs = [staged[i % len(staged)] for i in range(args.timed)]
            hand_warmup(model, staged, args.warmup)
            harness, hand = [], []
            for window in range(args.windows):
                # a harness window and a hand window in turn: drift in the load hits both
                warmup = args.warmup if window == 0 else 0
                result = measure(session, batches, warmup, args.timed, 1)
                harness.append(result["images_per_s"])
                hand.append(hand_window(model, xs, args.batch_size))
            rows.append((arch, mode, harness, hand))
            print(
                f"{arch} {mode}: harness {['%.2f' % r for r in harness]}, hand {['%.2f' % r for r in hand]} img/s",
                flush=True,
            )
            info = session.info()
            session.close()

    print()
    print(
        f"OneFlow {info['oneflow']} ({info['oneflow_git_commit']}), {info['device_name']},"
        f" {os.cpu_count()} cores, threads {info['threads']}; batch {args.batch_size},"
        f" crop {args.crop}, fp32 cpu; warm-up {args.warmup}, {args.timed} timed batches,"
        f" {args.windows} windows of each, alternating (median)"
    )
    print()
    print("| model | mode | harness img/s | hand loop img/s | harness / hand | spread harness / hand |")
    print("|---|---|---|---|---|---|")
    for arch, mode, harness, hand in rows:
        h, m = statistics.median(harness), statistics.median(hand)
        print(f"| {arch} | {mode} | {h:.2f} | {m:.2f} | {h / m:.3f} | {spread(harness):.3f} / {spread(hand):.3f} |")


if __name__ == "__main__":
    main_guard(main)
