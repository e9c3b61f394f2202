"""The OneFlow runtime: logits equal PyTorch's, the harness waits for OneFlow, user errors.

This pytest runs in the main env (torch, no oneflow); the OneFlow side runs as a
subprocess under the OneFlow interpreter ($INFBENCH_ONEFLOW_PYTHON, else
<repo>/.venv-oneflow/bin/python), which has oneflow but no torch. Run with
``PYTHONPATH=workflow/scripts .venv/bin/python -m pytest tests/test_oneflow.py``.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def _oneflow_python():
    path = os.environ.get("INFBENCH_ONEFLOW_PYTHON") or str(REPO / ".venv-oneflow/bin/python")
    return path if os.path.exists(path) else None


ONEFLOW_PYTHON = _oneflow_python()

pytestmark = pytest.mark.skipif(
    ONEFLOW_PYTHON is None,
    reason="no OneFlow interpreter: set INFBENCH_ONEFLOW_PYTHON or run `make env`",
)


def run_oneflow(code, *args):
    """Run ``code`` under the OneFlow interpreter with infbench importable."""
    env = dict(os.environ, PYTHONPATH=str(SCRIPTS))
    return subprocess.run(
        [ONEFLOW_PYTHON, "-c", code, *map(str, args)],
        capture_output=True, text=True, env=env, timeout=900,
    )


def check_oneflow(code, *args):
    """Like run_oneflow, failing the test with OneFlow's stderr when the snippet fails."""
    proc = run_oneflow(code, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def torch_weights(tmp_path_factory):
    """arch -> neutral weights of a seeded torchvision model, written once per module."""
    from safetensors.torch import save_file

    from infbench.models import build_torch

    folder = tmp_path_factory.mktemp("weights")
    paths = {}

    def get(arch):
        if arch not in paths:
            model = build_torch(arch, seed=0)
            paths[arch] = folder / f"{arch}.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, paths[arch])
        return paths[arch]

    return get


def real_batch(resize, crop, count):
    """The first ``count`` sample images as torchvision preprocesses them, uint8 NHWC."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    if not (SAMPLE / "val").is_dir():
        pytest.skip(f"real images absent: {SAMPLE}/val")
    files = sorted((SAMPLE / "val").iterdir())[:count]
    images = []
    for path in files:
        with Image.open(path) as image:
            image = F.resize(image.convert("RGB"), resize, InterpolationMode.BILINEAR, antialias=True)
            images.append(np.asarray(F.center_crop(image, crop), dtype=np.uint8))
    return np.stack(images)


def rel_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


LOGITS_BOTH_MODES = r"""
import sys
import numpy as np
from infbench.runtimes import load
from infbench.runtimes.base import SessionSpec

runtime = load("oneflow")
args = sys.argv[1:]
for arch, weights, images, out in zip(args[0::4], args[1::4], args[2::4], args[3::4]):
    batch = np.load(images)
    logits = {}
    for mode in ("eager", "graph"):
        spec = SessionSpec("oneflow", arch, arch, "fp32", len(batch), "cpu", weights,
                           batch.shape[1], {"mode": mode})
        session = runtime.open_session(spec)
        output = session.run(session.stage(batch))
        session.sync(output)
        logits[mode] = session.logits(output)
        session.close()
    np.savez(out, **logits)
"""

# (arch, resize, crop, images): OneFlow's logits against PyTorch's on real images
LOGIT_CASES = [
    ("alexnet", 256, 224, 4),
    ("resnet50", 256, 224, 2),
    ("inception_v3", 342, 299, 2),
    # vgg16 at 224 px was the slowest test of the suite (40 s); at 64 px its 2x2 maps go
    # through the adaptive pool to 7x7, which 224 px (7x7 already) never exercises
    ("vgg16", 73, 64, 2),
    # three of the other torchvision archs flowvision builds (runtimes.FLOWVISION_ARCHS)
    ("resnet18", 73, 64, 2),
    ("mobilenet_v3_small", 73, 64, 2),
    ("efficientnet_b0", 73, 64, 2),
]


@pytest.fixture(scope="module")
def oneflow_logits(torch_weights, tmp_path_factory):
    """arch -> (batch, OneFlow's eager and graph logits), every case in one OneFlow process
    so that OneFlow's import is paid once."""
    folder = tmp_path_factory.mktemp("logits")
    args, batches = [], {}
    for arch, resize, crop, count in LOGIT_CASES:
        batches[arch] = real_batch(resize, crop, count)
        np.save(folder / f"{arch}.npy", batches[arch])
        args += [arch, torch_weights(arch), folder / f"{arch}.npy", folder / f"{arch}.npz"]
    check_oneflow(LOGITS_BOTH_MODES, *args)
    return {arch: (batches[arch], np.load(folder / f"{arch}.npz")) for arch, *_ in LOGIT_CASES}


@pytest.mark.parametrize("arch, resize, crop, count", LOGIT_CASES)
def test_logits_equal_pytorch(arch, resize, crop, count, torch_weights, oneflow_logits):
    """OneFlow eager and graph give PyTorch's logits on real images (same weights)."""
    import torch

    from infbench.models import load_torch
    from infbench.runtimes.base import normalise_nchw

    batch, got = oneflow_logits[arch]
    assert batch.shape == (count, crop, crop, 3)
    with torch.no_grad():
        expected = load_torch(arch, torch_weights(arch))(torch.from_numpy(normalise_nchw(batch))).numpy()
    assert np.linalg.norm(expected) > 0
    for mode in ("eager", "graph"):
        assert got[mode].shape == (count, 1000) and got[mode].dtype == np.float32
        assert rel_error(got[mode], expected) < 1e-4, mode


HARNESS_WAITS = r"""
import json, statistics, sys, time
import numpy as np
from infbench.runtimes import load
from infbench.runtimes.base import SessionSpec
from infbench.timing import measure

weights, modes = sys.argv[1], sys.argv[2:]
crop, bs, timed, windows = 64, 2, 6, 3
rng = np.random.default_rng(0)
batches = [rng.integers(0, 256, (bs, crop, crop, 3), dtype=np.uint8) for _ in range(3)]
for mode in modes:
    spec = SessionSpec("oneflow", "resnet50", "resnet50", "fp32", bs, "cpu", weights, crop,
                       {"mode": mode, "threads": 2})
    session = load("oneflow").open_session(spec)
    staged = [session.stage(b) for b in batches]
    harness, rates = [], []
    for window in range(windows):  # alternate, so that changes in the machine's load hit both
        harness.append(measure(session, batches, 2 if window == 0 else 0, timed, 1)["images_per_s"])
        t0 = time.perf_counter()
        for i in range(timed):
            session.run(staged[i % len(staged)]).numpy()
        rates.append(timed * bs / (time.perf_counter() - t0))

    one = session.stage(batches[0][:1])  # a smaller last batch: graph mode compiles again
    single = session.logits(session.run(one))[0]
    full = session.logits(session.run(staged[0]))[0]
    info = session.info()

    class NoWait(type(session)):
        def sync(self, output):
            pass

    session.__class__ = NoWait
    no_wait = measure(session, batches, 2, timed, windows)["images_per_s"]
    session.close()
    print(json.dumps({"mode": mode, "harness": statistics.median(harness), "sync_loop": statistics.median(rates),
                      "no_wait": no_wait,
                      "single_vs_full": float(np.linalg.norm(single - full) / np.linalg.norm(full)),
                      "info": info}))
"""


@pytest.fixture(scope="module")
def harness_waits(torch_weights):
    """mode -> the harness, a loop that reads every batch back and a sync-less session,
    eager and graph in one OneFlow process (resnet50, 64 px, batch 2)."""
    out = check_oneflow(HARNESS_WAITS, torch_weights("resnet50"), "eager", "graph")
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["mode"]: r for r in results}


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_harness_waits_for_oneflow(mode, harness_waits):
    """The harness cannot beat a loop that reads every batch back; without sync it would.

    OneFlow returns from ``run`` before the work is done. A session whose ``sync`` does
    nothing makes the harness report tens to thousands of times the true rate; the real
    one stays near a loop that waits for every batch. 3x allows for the overlap of Python
    dispatch with compute and for noise on a loaded 2-core machine (1.52x was seen in one
    CI run, where the sync-less session gave 48x); a harness that stopped waiting is far above.
    """
    out = harness_waits[mode]
    assert out["harness"] <= 3 * out["sync_loop"], out
    assert out["no_wait"] >= 5 * out["sync_loop"], out
    assert out["single_vs_full"] < 1e-4, out
    info = out["info"]
    assert info["mode"] == mode and info["threads"] == 2 and info["device"] == "cpu"
    assert info["oneflow"] and info["flowvision"] and info["device_name"]


FP16_ON_CPU = r"""
from infbench.errors import main_guard
from infbench.runtimes import load
from infbench.runtimes.base import SessionSpec

spec = SessionSpec("oneflow", "resnet50", "resnet50", "fp16", 8, "cpu", "unused.safetensors", 224)
main_guard(lambda: load("oneflow").open_session(spec))
"""


def test_fp16_on_cpu_is_a_user_error():
    proc = run_oneflow(FP16_ON_CPU)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "infbench: OneFlow has no fp16 kernels on the CPU" in proc.stderr
    assert "runtimes.oneflow.precisions" in proc.stderr
    assert "Traceback" not in proc.stderr


BAD_OPTIONS = r"""
import json
from infbench.errors import UserError
from infbench.runtimes import load
from infbench.runtimes.base import SessionSpec

cases = {"mode": ("fp32", "cpu", {"mode": "lazy"}),
         "threads": ("fp32", "cpu", {"threads": 0}),
         "device": ("fp32", "tpu", {}),
         "precisions": ("int8", "cpu", {})}
messages = {}
for key, (precision, device, options) in cases.items():
    spec = SessionSpec("oneflow", "alexnet", "alexnet", precision, 8, device,
                       "unused.safetensors", 224, options)
    try:
        load("oneflow").open_session(spec)
    except UserError as err:
        messages[key] = str(err)
print(json.dumps(messages))
"""


def test_bad_options_name_their_config_key():
    messages = json.loads(check_oneflow(BAD_OPTIONS).splitlines()[-1])
    assert set(messages) == {"mode", "threads", "device", "precisions"}
    for key, message in messages.items():
        assert f"runtimes.oneflow.{key}" in message, message


NO_SUCH_ARCH = r"""
from infbench.errors import main_guard
from infbench.runtimes import load
from infbench.runtimes.base import SessionSpec

spec = SessionSpec("oneflow", "vit", "vit_b_32", "fp32", 2, "cpu", "unused.safetensors", 224)
main_guard(lambda: load("oneflow").open_session(spec))
"""


def test_an_arch_flowvision_lacks_is_one_sentence():
    """The workflow plans no such cell; a step run by hand says so without a traceback."""
    proc = run_oneflow(NO_SUCH_ARCH)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "infbench: OneFlow: not available for this arch (vit_b_32:" in proc.stderr
    assert "Traceback" not in proc.stderr
