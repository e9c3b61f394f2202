"""Put the workflow's library (workflow/scripts) on the path; shared test locations."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
ONEFLOW_PYTHON = Path(
    os.environ.get("INFBENCH_ONEFLOW_PYTHON", REPO / ".venv-oneflow/bin/python")
)

sys.path.insert(0, str(REPO / "workflow" / "scripts"))

# The files that take minutes, in the order `make test` starts them (`pytest -n 2 --dist
# loadfile --no-loadscope-reorder`: each worker takes whole files, the next file as soon as
# it is almost done with its own). The whole-workflow file on one worker and the SLURM file
# (mostly waiting on SLURM) on the other from the first second, the long OneFlow, environment
# and runtime files next, and the short files fill in at the end. xdist's own order (the files
# with the most tests first) started the SLURM file last, after the whole-workflow file on the
# same worker, while the other worker had finished.
LONG_FILES = (
    "test_workflow.py",
    "test_slurm.py",
    "test_resume.py",
    "test_module.py",
    "test_anymodel_workflow.py",
    "test_configcheck.py",  # many quick tests: what the SLURM worker has queued while it waits
    "test_oneflow.py",
    "test_environment.py",
    "test_runtimes_torch_ort.py",
    "test_checkpoints.py",
    "test_precision.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: the rest in file order


def no_sync_control(session, batches, timed=5, rounds=3):
    """The harness against a loop that waits for and reads back every batch, and against the
    harness with a session whose ``sync`` does nothing: (harness, read-back, no-wait) images/s.

    On a GPU, ``run`` returns once the work is queued; without the one sync per window the
    harness would time the queueing. Windows are short (``timed`` batches) so that the queue
    of an unsynchronised window stays below CUDA's launch-queue depth, and the no-wait window
    starts on an idle device.
    """
    import statistics
    import time

    from infbench.timing import measure

    size = len(batches[0])
    staged = [session.stage(b) for b in batches]
    harness = measure(session, batches, 2, timed, rounds)["images_per_s"]
    loops = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(timed):
            out = session.run(staged[i % len(staged)])
            session.sync(out)
            session.logits(out)
        loops.append(timed * size / (time.perf_counter() - t0))
    real = type(session)

    class NoWait(real):
        def sync(self, output):
            pass

    session.sync(session.run(staged[0]))  # an idle device before the window
    session.__class__ = NoWait
    try:
        no_wait = measure(session, batches, 0, timed, 1)["images_per_s"]
    finally:
        session.__class__ = real
        session.sync(session.run(staged[0]))  # drain what the window queued
    return harness, statistics.median(loops), no_wait


def assert_the_harness_waits(session, batch_size, crop):
    """``no_sync_control`` on two random batches, then the session closed: the harness no
    faster than 1.5x the read-back loop, the no-wait harness at least 3x it."""
    import numpy as np

    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (batch_size, crop, crop, 3), dtype=np.uint8) for _ in range(2)]
    try:
        harness, read_back, no_wait = no_sync_control(session, batches)
    finally:
        session.close()
    assert harness <= 1.5 * read_back, (harness, read_back, no_wait)
    assert no_wait >= 3 * read_back, (harness, read_back, no_wait)


def make_weights(arch, path):
    """Seeded random weights, with BatchNorm statistics moved off their identity defaults.

    A freshly initialised BatchNorm (mean 0, var 1, weight 1, bias 0) is almost the identity,
    so folding it wrongly into the convolutions would go unnoticed.
    """
    import torch
    from safetensors.torch import save_file

    from infbench.models import build_torch

    model = build_torch(arch, seed=0)
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=gen)
            module.bias.data = 0.1 * torch.randn(n, generator=gen)
            module.running_mean = 0.1 * torch.randn(n, generator=gen)
            module.running_var = 0.5 + torch.rand(n, generator=gen)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


CHROMIUM_FLAGS = [
    # headless, and quiet on a machine without a network (no background connections)
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def apt_install(*packages):
    """`apt-get install` as root, after `apt-get update` if the first try fails. Test files
    may run in parallel (pytest-xdist), so installs wait for each other on a lock file
    rather than fail on apt's own lock."""
    import fcntl

    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *packages]
    with open("/tmp/infbench-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(install, env=env, capture_output=True, timeout=1200).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=1200)


def _chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium for checking the HTML report in a real browser: Debian's,
    installed by the test set-up when missing (as root, with apt-get); else the test skips
    and says how to get one."""
    path = _chromium_path()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install("chromium")
        path = _chromium_path()
    if path is None:
        pytest.skip("no Chromium to render the HTML report: install Debian's chromium (apt-get install chromium)")
    return path
