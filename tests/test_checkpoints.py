"""Checkpoints: sha256-verified downloads from a real local HTTP server; seeded random weights."""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from infbench.checkpoints import download, random_checkpoint
from infbench.errors import UserError

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
PAYLOAD = os.urandom(3 << 20)  # 3 MiB: several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """/file serves PAYLOAD, but the first ``server.drops`` requests close after half of it."""

    def do_GET(self):
        self.server.requests += 1
        if self.path != "/file":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.server.drops > 0:
            self.server.drops -= 1
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.drops = 0
    httpd.requests = 0
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_good_download(server, tmp_path):
    dest = tmp_path / "sub" / "model.pth"
    assert download(server.url + "/file", PAYLOAD_SHA, dest, backoff=0.01) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["model.pth"]


def test_sha256_prefix_is_accepted(server, tmp_path):
    """torchvision publishes only the first 8 hex digits of some files (resnet50-0676ba61.pth)."""
    dest = tmp_path / "model.pth"
    download(server.url + "/file", PAYLOAD_SHA[:8], dest, backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    wrong = "%08x" % ((int(PAYLOAD_SHA[:8], 16) + 1) % 2**32)
    with pytest.raises(UserError, match=f"config says {wrong}"):
        download(server.url + "/file", wrong, tmp_path / "other.pth", backoff=0.01)
    assert leftovers(tmp_path) == ["model.pth"]


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.pth"
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        download(server.url + "/file", wrong, dest, model="resnet50", backoff=0.01)
    text = str(err.value)
    assert f"sha256 {PAYLOAD_SHA}, config says {wrong}" in text
    assert "models.resnet50.checkpoint.sha256" in text
    assert leftovers(tmp_path) == []
    assert server.requests == 1  # no retry on a checksum mismatch


def test_404_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(UserError, match=r"HTTP 404.*models\.vgg16\.checkpoint\.url"):
        download(server.url + "/nope", PAYLOAD_SHA, dest, model="vgg16", backoff=0.01)
    assert leftovers(tmp_path) == []
    assert server.requests == 1  # no retry on a 404


def test_dropped_connection_is_retried(server, tmp_path):
    server.drops = 2
    dest = tmp_path / "model.pth"
    download(server.url + "/file", PAYLOAD_SHA, dest, retries=3, backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == 3
    assert leftovers(tmp_path) == ["model.pth"]


def test_always_dropped_connection_fails_cleanly(server, tmp_path):
    server.drops = 100
    dest = tmp_path / "model.pth"
    with pytest.raises(
        UserError, match=r"after 3 attempts .*closed after \d+ of \d+ bytes"
    ):
        download(server.url + "/file", PAYLOAD_SHA, dest, retries=2, backoff=0.01)
    assert server.requests == 3
    assert leftovers(tmp_path) == []


def test_offline_is_a_user_error(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "model.pth"
    with pytest.raises(UserError, match="check the network connection"):
        download(
            f"http://127.0.0.1:{port}/file", PAYLOAD_SHA, dest, retries=1, backoff=0.01
        )
    assert leftovers(tmp_path) == []


def test_malformed_sha256_is_a_user_error(tmp_path):
    with pytest.raises(
        UserError, match=r"models\.alexnet\.checkpoint\.sha256 is 'abc'"
    ):
        download("http://127.0.0.1:9/file", "abc", tmp_path / "m.pth", model="alexnet")


def test_cli_prints_one_sentence(server, tmp_path):
    dest = tmp_path / "model.pth"
    cmd = [
        sys.executable,
        str(SCRIPTS / "fetch_checkpoint.py"),
        "--arch",
        "resnet50",
        "--out",
        str(dest),
        "--url",
        server.url + "/file",
        "--sha256",
        "f" * 64,
        "--model",
        "resnet50",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "models.resnet50.checkpoint.sha256" in lines[0]
    assert not dest.exists()


def test_random_checkpoint_is_seeded_and_loadable(tmp_path):
    import torch
    import torchvision

    first = random_checkpoint("resnet50", 7, tmp_path / "a.pth")
    second = random_checkpoint("resnet50", 7, tmp_path / "b.pth")
    other = random_checkpoint("resnet50", 8, tmp_path / "c.pth")
    assert leftovers(tmp_path) == ["a.pth", "b.pth", "c.pth"]
    a, b, c = (torch.load(p, weights_only=True) for p in (first, second, other))
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(first), strict=True)
    assert torch.equal(model.fc.weight, a["fc.weight"])


def _fp32_and_fp16_logits(model, arch):
    import torch

    from infbench.models import INPUT_SIZE

    size = INPUT_SIZE[arch]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(123))  # not the calibration inputs
    with torch.no_grad():
        fp32 = model(x)
        fp16 = model.half()(x.half()).float()
    return fp32, fp16


def test_uncalibrated_random_inception_overflows_fp16():
    """The control: torchvision's own initialisation, BatchNorm statistics untouched."""
    import torch

    from infbench.models import build_torch

    fp32, fp16 = _fp32_and_fp16_logits(build_torch("inception_v3", seed=0).eval(), "inception_v3")
    assert fp32.abs().max() > 65504  # beyond fp16's largest value
    assert not torch.isfinite(fp16).all()


@pytest.mark.parametrize("arch", ["inception_v3", "alexnet"])  # with BatchNorm / without
def test_calibrated_random_weights_keep_fp16_finite_and_close(arch):
    import torch

    from infbench.models import build_torch, calibrate_random

    fp32, fp16 = _fp32_and_fp16_logits(calibrate_random(build_torch(arch, seed=0), arch, 0), arch)
    assert torch.isfinite(fp16).all()
    assert torch.nn.functional.cosine_similarity(fp32, fp16).min() > 0.99


def test_calibration_gives_unit_scale_on_its_own_inputs():
    """Without BatchNorm every Conv/Linear output has standard deviation 1 on the calibration
    inputs (so the logits do); with it, the first BatchNorm's output has mean 0 and variance 1."""
    import torch

    from infbench.models import INPUT_SIZE, build_torch, calibrate_random

    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))  # calibrate_random's, seed 5
    alexnet = calibrate_random(build_torch("alexnet", seed=5), "alexnet", 5)
    with torch.no_grad():
        assert float(alexnet(x).std()) == pytest.approx(1.0, abs=1e-4)
    resnet = calibrate_random(build_torch("resnet50", seed=5), "resnet50", 5)
    seen = {}
    resnet.bn1.register_forward_hook(lambda m, i, o: seen.update(out=o.clone()))  # ReLU follows in place
    with torch.no_grad():
        resnet(x)
    assert float(seen["out"].mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(seen["out"].var()) == pytest.approx(1.0, abs=1e-3)
    assert INPUT_SIZE["resnet50"] == 224
