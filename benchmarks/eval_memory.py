"""Peak memory of an accuracy evaluation over a large tensor cache.

Writes a synthetic uint8 cache of N x S x S x 3 (default the ImageNet validation set at
inception_v3's 299 px: 50,000 images, 13.4 GB) unless --cache names one, then runs
``infbench.metrics.evaluate`` over all of it with a session that returns fixed logits at
once (the data path is what is measured, not a network), and prints the peak resident set
size of the process (ru_maxrss) and the images/s of the read.

    PYTHONPATH=workflow/scripts .venv/bin/python benchmarks/eval_memory.py --work /tmp/evalmem
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench import metrics  # noqa: E402
from infbench.cli import open_cache  # noqa: E402
from infbench.runtimes.base import Session, SessionSpec  # noqa: E402


class ConstantSession(Session):
    """Logits that depend on the first pixel only: touches every staged byte once."""

    def stage(self, images):
        return images

    def run(self, staged):
        logits = np.zeros((staged.shape[0], 1000), np.float32)
        logits[np.arange(staged.shape[0]), staged.reshape(staged.shape[0], -1).max(axis=1).astype(int) % 1000] = 1.0
        return logits

    def sync(self, output):
        pass

    def logits(self, output):
        return output


def peak_rss_mib():
    """This process's peak resident set (VmHWM; ru_maxrss would also count a forking parent's)."""
    try:
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--work", default="/tmp/evalmem")
    parser.add_argument("--cache", help="an existing cache .npy (else one is written to --work)")
    args = parser.parse_args()
    path = args.cache or os.path.join(args.work, f"{args.images}-{args.size}.npy")
    if not os.path.exists(path):  # in a child process, so that writing it does not count
        if os.fork() == 0:
            write_cache(path, args)
            os._exit(0)
        os.wait()
    print(f"before: peak RSS {peak_rss_mib():.0f} MiB", flush=True)
    cache = open_cache(path, args.size)
    spec = SessionSpec("fake", "m", "inception_v3", "fp32", args.batch_size, "cpu", "none", args.size)
    started = time.perf_counter()
    top5, kept, _ = metrics.evaluate(ConstantSession(spec), cache, args.batch_size, keep_logits=1000)
    seconds = time.perf_counter() - started
    size_gib = os.path.getsize(path) / 2**30
    print(
        f"evaluated {len(top5)} images of {args.size} px ({size_gib:.1f} GiB) in {seconds:.0f} s"
        f" ({len(top5) / seconds:.0f} images/s); peak RSS {peak_rss_mib():.0f} MiB"
    )


def write_cache(path, args):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(args.images, args.size, args.size, 3))
    block = np.random.default_rng(0).integers(0, 256, (1000, args.size, args.size, 3), dtype=np.uint8)
    for start in range(0, args.images, 1000):
        n = min(1000, args.images - start)
        cache[start : start + n] = block[:n]
    cache.flush()
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
