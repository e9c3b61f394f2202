"""Checkpoints: sha256-verified downloads from a real local HTTP server; seeded random weights."""

import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infbench.checkpoints import download, part_file, random_checkpoint
from infbench.errors import UserError

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
PAYLOAD = os.urandom(3 << 20)  # 3 MiB: several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """/file serves PAYLOAD; ``server.ranges`` records each request's Range header (or None).

    A ``Range: bytes=N-`` request is answered 206 from byte N (416 at or past the end) when
    ``server.honour_range``, else 200 with the whole file. The first ``server.drops``
    requests close after ``server.drop_after`` bytes of their body (default: half of it);
    the first ``server.hangs`` requests instead send that much and then hang until the test
    ends; every request first waits ``server.stall`` seconds (or until the test ends).
    """

    def do_GET(self):
        self.server.requests += 1
        self.server.ranges.append(self.headers.get("Range"))
        if self.server.stall:
            self.server.release.wait(self.server.stall)
        if self.path != "/file":
            self.send_error(404)
            return
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if asked and self.server.honour_range:
            start = int(asked.group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
            )
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.drops > 0 or self.server.hangs > 0:
            hang = self.server.hangs > 0
            if hang:
                self.server.hangs -= 1
            else:
                self.server.drops -= 1
            cut = self.server.drop_after
            self.wfile.write(body[: len(body) // 2 if cut is None else cut])
            if hang:
                self.server.release.wait(60)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.drops = 0
    httpd.hangs = 0
    httpd.drop_after = None
    httpd.requests = 0
    httpd.ranges = []
    httpd.honour_range = True
    httpd.stall = 0
    httpd.release = threading.Event()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_good_download(server, tmp_path):
    dest = tmp_path / "sub" / "model.pth"
    assert download(server.url + "/file", PAYLOAD_SHA, dest, backoff=0.01) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["model.pth"]


def test_sha256_prefix_is_accepted_only_when_the_first_download_is_trusted(server, tmp_path):
    """torchvision publishes only the first 8 hex digits of some files (resnet50-0676ba61.pth)."""
    dest = tmp_path / "model.pth"
    download(server.url + "/file", PAYLOAD_SHA[:8], dest, backoff=0.01, trust_first_download=True)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.pth", "sha256-pins.tsv"]
    wrong = "%08x" % ((int(PAYLOAD_SHA[:8], 16) + 1) % 2**32)
    with pytest.raises(UserError, match=f"config says {wrong}"):
        download(server.url + "/file", wrong, tmp_path / "other" / "m.pth", backoff=0.01, trust_first_download=True)
    assert leftovers(tmp_path / "other") == []


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


def test_always_dropped_connection_fails_cleanly_and_keeps_the_part(server, tmp_path):
    server.drops = 100
    dest = tmp_path / "model.pth"
    with pytest.raises(
        UserError, match=r"after 3 attempts .*closed after \d+ of \d+ bytes"
    ) as err:
        download(server.url + "/file", PAYLOAD_SHA, dest, retries=2, backoff=0.01)
    assert server.requests == 3
    half, quarter = len(PAYLOAD) // 2, len(PAYLOAD) // 4
    assert server.ranges == [None, f"bytes={half}-", f"bytes={half + quarter}-"]
    kept = part_file(dest)
    assert leftovers(tmp_path) == [kept.name]  # not the destination: Snakemake sees no output
    assert kept.read_bytes() == PAYLOAD[: kept.stat().st_size]
    assert f"kept in {kept} and a rerun resumes" in str(err.value)


def test_offline_is_a_user_error(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "model.pth"
    with pytest.raises(UserError, match="check the network connection") as err:
        download(
            f"http://127.0.0.1:{port}/file",
            PAYLOAD_SHA,
            dest,
            retries=1,
            backoff=0.01,
            model="resnet50",
        )
    text = str(err.value)
    # the offline fix is a checkpoint on disk named in the config, not a file put in
    # resources/ by hand (which the sha256 check would never see)
    assert "set models.resnet50.checkpoint to {path: " in text
    assert "by hand" not in text and "kept in" not in text  # nothing received, nothing kept
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


N = 1_000_003  # where the first answer is cut: not a multiple of the read size


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path, capsys):
    server.drops, server.drop_after = 1, N
    dest = tmp_path / "model.pth"
    download(server.url + "/file", PAYLOAD_SHA, dest, retries=1, backoff=0.01)
    assert server.ranges == [None, f"bytes={N}-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.pth"]  # no temporary file remains
    assert f"at byte {N} of {len(PAYLOAD)}" in capsys.readouterr().err


def test_rerun_after_a_kill_resumes_the_kept_part(server, tmp_path):
    """A killed run leaves .model.pth.part; the next run asks only for the rest."""
    dest = tmp_path / "model.pth"
    part_file(dest).write_bytes(PAYLOAD[:N])
    download(server.url + "/file", PAYLOAD_SHA, dest, backoff=0.01)
    assert server.ranges == [f"bytes={N}-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.pth"]


def test_rerun_after_a_real_kill_resumes(server, tmp_path):
    """fetch_checkpoint.py killed (SIGKILL) mid-download; the rerun asks for the rest only."""
    server.hangs, server.drop_after = 1, 2_500_000  # more than two 1 MiB reads, then silence
    dest = tmp_path / "model.pth"
    cmd = [sys.executable, str(SCRIPTS / "fetch_checkpoint.py"), "--arch", "resnet50"]
    cmd += ["--out", str(dest), "--url", server.url + "/file", "--sha256", PAYLOAD_SHA]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    part = part_file(dest)
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 2 << 20):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    kept = part.stat().st_size
    assert not dest.exists()
    download(server.url + "/file", PAYLOAD_SHA, dest, retries=0)
    assert server.ranges == [None, f"bytes={kept}-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.pth"]


def test_complete_part_is_verified_and_moved(server, tmp_path):
    """Killed after the last byte, before the move: the server answers 416, nothing to fetch."""
    dest = tmp_path / "model.pth"
    part_file(dest).write_bytes(PAYLOAD)
    download(server.url + "/file", PAYLOAD_SHA, dest, retries=0)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.pth"]


def test_server_ignoring_range_yields_the_right_file(server, tmp_path, capsys):
    server.drops, server.drop_after, server.honour_range = 1, N, False
    dest = tmp_path / "model.pth"
    download(server.url + "/file", PAYLOAD_SHA, dest, retries=1, backoff=0.01)
    assert server.ranges == [None, f"bytes={N}-"]  # asked, answered 200 with the whole file
    assert dest.read_bytes() == PAYLOAD  # not the first N bytes twice
    assert leftovers(tmp_path) == ["model.pth"]
    assert "downloading it from the start" in capsys.readouterr().err


def test_resumed_file_failing_the_check_is_deleted(server, tmp_path):
    """A part from elsewhere (another url, a corrupted disk): deleted, and the rerun starts over."""
    dest = tmp_path / "model.pth"
    part_file(dest).write_bytes(os.urandom(N))
    with pytest.raises(UserError) as err:
        download(server.url + "/file", PAYLOAD_SHA, dest, model="vgg16", backoff=0.01)
    text = str(err.value)
    assert f"resumed at byte {N}" in text
    assert "partial file is deleted, so run again" in text
    assert "models.vgg16.checkpoint.sha256" in text
    assert leftovers(tmp_path) == []
    download(server.url + "/file", PAYLOAD_SHA, dest, backoff=0.01)
    assert server.ranges == [f"bytes={N}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_full_sha256_is_printed_when_only_a_prefix_is_given(server, tmp_path, capsys):
    download(server.url + "/file", PAYLOAD_SHA[:8], tmp_path / "a.pth", model="resnet50", trust_first_download=True)
    err = capsys.readouterr().err
    assert f"set models.resnet50.checkpoint.sha256 to {PAYLOAD_SHA}" in err
    download(server.url + "/file", PAYLOAD_SHA, tmp_path / "b.pth", model="resnet50")
    assert PAYLOAD_SHA not in capsys.readouterr().err  # pinned already: nothing to say


def test_cli_prints_the_full_sha256_for_a_prefix(server, tmp_path):
    dest = tmp_path / "model.pth"
    cmd = [sys.executable, str(SCRIPTS / "fetch_checkpoint.py"), "--arch", "resnet50"]
    cmd += ["--out", str(dest), "--model", "resnet50", "--url", server.url + "/file"]
    cmd += ["--sha256", PAYLOAD_SHA[:8], "--trust_first_download", "True"]  # as the rule passes it
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"set models.resnet50.checkpoint.sha256 to {PAYLOAD_SHA}" in proc.stderr
    assert dest.read_bytes() == PAYLOAD


def test_retries_zero_fails_on_the_first_error_and_a_rerun_resumes(server, tmp_path):
    server.drops, server.drop_after = 1, N
    dest = tmp_path / "model.pth"
    with pytest.raises(UserError) as err:
        download(server.url + "/file", PAYLOAD_SHA, dest, retries=0, model="alexnet")
    text = str(err.value)
    assert f"after 1 attempt (last: connection closed after {N} of {len(PAYLOAD)} bytes)" in text
    assert (
        "raise models.alexnet.checkpoint.retries, models.alexnet.checkpoint.timeout_s"
        " or models.alexnet.checkpoint.deadline_s"
    ) in text
    assert server.requests == 1
    assert leftovers(tmp_path) == [part_file(dest).name]
    download(server.url + "/file", PAYLOAD_SHA, dest, retries=0)
    assert server.ranges == [None, f"bytes={N}-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.pth"]


def test_timeout_is_honoured(server, tmp_path):
    server.stall = 30
    dest = tmp_path / "model.pth"
    began = time.monotonic()
    with pytest.raises(UserError, match=r"after 2 attempts \(last: .*timed out"):
        download(server.url + "/file", PAYLOAD_SHA, dest, retries=1, timeout=0.3, backoff=0.01)
    assert time.monotonic() - began < 10
    assert server.requests == 2
    assert leftovers(tmp_path) == []


def test_cli_takes_retries_and_timeout_s_as_the_rule_passes_them(server, tmp_path):
    """Rule fetch_checkpoint turns each checkpoint key into --key value."""
    server.stall = 30
    dest = tmp_path / "model.pth"
    cmd = [sys.executable, str(SCRIPTS / "fetch_checkpoint.py"), "--arch", "resnet50"]
    cmd += ["--model", "resnet50", "--retries", "0", "--sha256", PAYLOAD_SHA]
    cmd += ["--timeout_s", "0.3", "--url", server.url + "/file", "--out", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "after 1 attempt (last: " in lines[0] and "timed out" in lines[0]
    assert server.requests == 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"retries": -1}, "models.r50.checkpoint.retries is -1"),
        ({"retries": 1.5}, "models.r50.checkpoint.retries is 1.5"),
        ({"timeout": 0}, "models.r50.checkpoint.timeout_s is 0"),
    ],
)
def test_bad_retries_or_timeout_is_a_user_error(tmp_path, kwargs, words):
    with pytest.raises(UserError, match=re.escape(words)):
        download("http://127.0.0.1:9/file", PAYLOAD_SHA, tmp_path / "m.pth", model="r50", **kwargs)
    assert leftovers(tmp_path) == []


def test_schema_takes_retries_and_timeout_s_with_a_url_only():
    import yaml

    from infbench.configcheck import check

    schema = yaml.safe_load(
        (SCRIPTS.parents[0] / "schemas" / "config.schema.yaml").read_text()
    )

    def config(checkpoint):
        model = {"arch": "resnet50", "resize": 256, "crop": 224, "checkpoint": checkpoint}
        return {
            "dataset": {"kind": "synthetic", "images": 20, "seed": 0},
            "models": {"r50": model},
            "runtimes": {"torch": {"device": "cpu", "precisions": ["fp32"]}},
            "batch_sizes": [8],
            "calibration": {"images": 10},
        }

    url = {"url": "https://x/r50.pth", "sha256": "0676ba61", "trust_first_download": True}
    check(config(url), schema)
    check(config({**url, "retries": 0, "timeout_s": 2.5}), schema)
    for bad in (
        {**url, "retries": -1},
        {**url, "retries": 1.5},
        {**url, "timeout_s": 0},
        {"path": "r50.pth", "retries": 2},
    ):
        with pytest.raises(UserError, match=r"models\.r50\.checkpoint"):
            check(config(bad), schema)


def test_a_second_downloader_is_refused(server, tmp_path):
    import fcntl

    dest = tmp_path / "model.pth"
    with open(part_file(dest), "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another process is downloading"):
            download(server.url + "/file", PAYLOAD_SHA, dest)
    assert server.requests == 0


# --- a hostile network: forged files, endless or slow bodies, redirects, planted links ---


def schema_config(checkpoint):
    import yaml

    from infbench.configcheck import check

    schema = yaml.safe_load((SCRIPTS.parents[0] / "schemas" / "config.schema.yaml").read_text())
    model = {"arch": "resnet50", "resize": 256, "crop": 224, "checkpoint": checkpoint}
    config = {
        "dataset": {"kind": "synthetic", "images": 20, "seed": 0},
        "models": {"r50": model},
        "runtimes": {"torch": {"device": "cpu", "precisions": ["fp32"]}},
        "batch_sizes": [8],
    }
    return check(config, schema)


def test_a_short_digest_is_refused_unless_the_first_download_is_trusted(server, tmp_path):
    """32 bits of sha256 are forged in a minute: a prefix alone downloads nothing."""
    dest = tmp_path / "model.pth"
    with pytest.raises(UserError) as err:
        download(server.url + "/file", PAYLOAD_SHA[:8], dest, model="resnet50")
    assert str(err.value).startswith(
        f"models.resnet50.checkpoint.sha256 is {PAYLOAD_SHA[:8]}, 8 of the sha256's 64 hex digits,"
    )
    assert "add models.resnet50.checkpoint.trust_first_download: true" in str(err.value)
    with pytest.raises(UserError, match="63 of the sha256's 64"):
        download(server.url + "/file", PAYLOAD_SHA[:63], dest)
    assert server.requests == 0 and leftovers(tmp_path) == []
    prefix = {"url": "https://x/r50.pth", "sha256": "0676ba61"}
    for refused in (prefix, {**prefix, "trust_first_download": False}):
        with pytest.raises(UserError, match=r"config key models\.r50\.checkpoint must be one of"):
            schema_config(refused)
    schema_config({**prefix, "trust_first_download": True})
    schema_config({**prefix, "sha256": PAYLOAD_SHA})


def test_every_shipped_checkpoint_has_a_full_digest_or_trusts_its_first_download_explicitly():
    import yaml

    for path in sorted((SCRIPTS.parents[1] / "config").glob("*.yaml")):
        for name, model in yaml.safe_load(path.read_text())["models"].items():
            source = model["checkpoint"]
            if "url" in source:
                assert source["url"].startswith("https://"), (path.name, name)
                full = re.fullmatch(r"[0-9a-f]{64}", source["sha256"])
                assert full or source.get("trust_first_download") is True, (path.name, name)


def test_the_first_trusted_download_records_its_digest_and_later_downloads_must_match_it(server, tmp_path):
    dest = tmp_path / "model.pth"
    url = server.url + "/file"
    download(url, PAYLOAD_SHA[:8], dest, model="r50", trust_first_download=True)
    pins = tmp_path / "sha256-pins.tsv"
    assert pins.read_text() == f"url\tsha256\n{url}\t{PAYLOAD_SHA}\n"
    dest.unlink()
    download(url, PAYLOAD_SHA[:8], dest, model="r50", trust_first_download=True)  # the same file again
    assert dest.read_bytes() == PAYLOAD and pins.read_text().count("\n") == 2  # recorded once
    # A first download that was another file with the same 8 digits (what a forgery is):
    # the file served now matches the config's prefix, but not the recorded digest.
    first = PAYLOAD_SHA[:8] + "0" * 56
    pins.write_text(f"url\tsha256\n{url}\t{first}\n")
    dest.unlink()
    with pytest.raises(UserError) as err:
        download(url, PAYLOAD_SHA[:8], dest, model="r50", trust_first_download=True)
    assert str(err.value) == (
        f"{url} has sha256 {PAYLOAD_SHA}, but its first download, recorded in {pins}, had {first}:"
        " the file has changed since; if its publisher really replaced it, set models.r50.checkpoint.sha256"
        f" to the new full digest (or delete that line of {pins}) and run again"
    )
    assert leftovers(tmp_path) == ["sha256-pins.tsv"]
    download(url, PAYLOAD_SHA, dest, model="r50")  # a full digest in the config is the config's word
    assert dest.read_bytes() == PAYLOAD


class Hostile(http.server.BaseHTTPRequestHandler):
    """/endless: a body without end (bounded here at 64 MiB); /huge: announces 10 GiB;
    /trickle: PAYLOAD[:40], a byte every 0.05 s; /slow-headers: a header a byte every 0.05 s
    (for 10 s); /to?<url>: 302 to <url>. ``server.sent`` counts the body bytes written."""

    def do_GET(self):
        self.server.requests += 1
        if self.path == "/slow-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(200):
                self.wfile.write(b"a")
                self.wfile.flush()
                if self.server.release.wait(0.05):
                    break
            self.close_connection = True
            return
        if self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if self.path == "/huge":
            self.send_header("Content-Length", str(10 << 30))
        elif self.path == "/trickle":
            self.send_header("Content-Length", "40")
        self.end_headers()
        try:
            if self.path == "/trickle":
                for byte in PAYLOAD[:40]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    self.server.sent += 1
                    if self.server.release.wait(0.05):
                        return
            elif self.path in ("/endless", "/huge"):
                block = os.urandom(1 << 16)
                for _ in range((64 << 20) // len(block)):
                    self.wfile.write(block)
                    self.server.sent += len(block)
        except OSError:
            pass  # the client hung up
        self.close_connection = True

    def log_message(self, *args):
        pass


def serve(handler, tls=None):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.requests, httpd.sent, httpd.release = 0, 0, threading.Event()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    httpd.url = f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    return httpd


def stop(*servers):
    for httpd in servers:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def hostile():
    httpd = serve(Hostile)
    yield httpd
    stop(httpd)


def test_a_download_stops_at_its_size_limit_and_keeps_nothing(hostile, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(UserError) as err:
        download(hostile.url + "/endless", PAYLOAD_SHA, dest, model="vgg16", max_bytes=2 << 20)
    assert str(err.value) == (
        f"{hostile.url}/endless sends more than {2 << 20} bytes, more than models.vgg16.checkpoint.max_mib"
        " (2 MiB) allows: nothing is kept; if the checkpoint is really that large, raise"
        " models.vgg16.checkpoint.max_mib, else fix models.vgg16.checkpoint.url"
    )
    assert leftovers(tmp_path) == [] and hostile.requests == 1  # not retried, no .part to refill
    with pytest.raises(UserError, match=f"/huge announces {10 << 30} bytes, more than"):
        download(hostile.url + "/huge", PAYLOAD_SHA, dest, max_bytes=2 << 20)
    assert leftovers(tmp_path) == []
    # a part kept from a run with a larger bound is started over, not resumed past the bound
    part_file(dest).write_bytes(b"x" * (3 << 20))
    with pytest.raises(UserError, match="/endless sends more than"):
        download(hostile.url + "/endless", PAYLOAD_SHA, dest, max_bytes=2 << 20)
    assert leftovers(tmp_path) == []


def test_the_cli_takes_max_mib_and_deadline_s_as_the_rule_passes_them(server, hostile, tmp_path):
    dest = tmp_path / "model.pth"
    base = [sys.executable, str(SCRIPTS / "fetch_checkpoint.py"), "--arch", "resnet50", "--model", "r50"]
    base += ["--out", str(dest), "--retries", "0", "--sha256", PAYLOAD_SHA]
    for options, words in (
        (["--max_mib", "1", "--url", server.url + "/file"], "announces 3145728 bytes, more than"),
        (["--deadline_s", "0.3", "--url", hostile.url + "/trickle"], "took longer than"),
    ):
        proc = subprocess.run(base + options, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr


def test_an_attempt_has_an_overall_deadline_however_often_bytes_arrive(hostile, tmp_path):
    """A byte every 0.05 s never trips a 1 s read timeout; the attempt's deadline ends it."""
    dest = tmp_path / "model.pth"
    began = time.monotonic()
    with pytest.raises(UserError) as err:
        download(hostile.url + "/trickle", hashlib.sha256(PAYLOAD[:40]).hexdigest(), dest, model="r50",
                 retries=1, timeout=1.0, deadline=0.4, backoff=0.01)
    took = time.monotonic() - began
    assert 0.8 <= took < 3  # two attempts of 0.4 s each (each whole body takes 2 s)
    assert "(last: the attempt took longer than models.r50.checkpoint.deadline_s (0.4 s))" in str(err.value)
    assert hostile.requests == 2 and 0 < hostile.sent < 40
    kept = part_file(dest).read_bytes()  # the second attempt asked for the rest: the part holds a prefix
    assert 0 < len(kept) < 40 and kept == PAYLOAD[: len(kept)]
    # still reading the headers, a byte at a time, when the deadline comes: the socket is shut
    began = time.monotonic()
    with pytest.raises(UserError, match=r"\(last: the attempt took longer than .*deadline_s \(0\.4 s\)\)"):
        download(hostile.url + "/slow-headers", PAYLOAD_SHA, tmp_path / "h.pth", retries=0, timeout=1.0, deadline=0.4)
    assert time.monotonic() - began < 3  # the headers alone would take 10 s


def test_redirects_are_followed_only_to_https(hostile, tmp_path, monkeypatch):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True,
    ) if shutil.which("openssl") else None
    if made is None or made.returncode != 0:
        pytest.skip("openssl cannot make a certificate here (the https half needs one)")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted by ssl's default context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure, other = serve(Handler, tls=context), serve(Hostile, tls=context)
    secure.stall, secure.honour_range, secure.drops, secure.hangs, secure.ranges = 0, True, 0, 0, []
    try:
        folder = tmp_path / "out"
        # https to https on another port: followed (the sha256 vouches for the file)
        download(f"{other.url}/to?{secure.url}/file", PAYLOAD_SHA, folder / "a.pth")
        assert (folder / "a.pth").read_bytes() == PAYLOAD
        for start, target in (
            (other.url, f"{hostile.url}/endless"),  # https to http: a downgrade, even to this machine
            (hostile.url, "ftp://127.0.0.1/model.pth"),
            (hostile.url, "http://192.0.2.1/model.pth"),  # plain http off this machine
            (hostile.url, "file:///etc/hostname"),
        ):
            with pytest.raises(UserError) as err:
                download(f"{start}/to?{target}", PAYLOAD_SHA, folder / "b.pth", model="r50", backoff=0.01)
            assert str(err.value) == (
                f"{start}/to?{target} redirects (HTTP 302) to {target!r}, which is not https; downloads"
                " follow redirects to https only: set models.r50.checkpoint.url to the file's https address"
            )
        assert hostile.sent == 0 and leftovers(folder) == ["a.pth"]
    finally:
        stop(secure, other)
    for url in ("http://192.0.2.1/model.pth", "ftp://127.0.0.1/model.pth", "file:///etc/hostname"):
        with pytest.raises(UserError, match="checkpoints are downloaded over https only"):
            download(url, PAYLOAD_SHA, folder / "c.pth")


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_planted_part_link_is_not_followed(server, tmp_path, target_exists):
    dest = tmp_path / "model.pth"
    target = tmp_path / "precious.txt"
    if target_exists:
        target.write_text("keep me\n")
    part_file(dest).symlink_to(target)
    with pytest.raises(UserError) as err:
        download(server.url + "/file", PAYLOAD_SHA, dest)
    assert str(err.value) == (
        f"{part_file(dest)} is a symbolic link or not a plain file, where the download of"
        f" {server.url}/file keeps its partial file; delete it and run again"
    )
    assert (target.read_text() == "keep me\n") if target_exists else not target.exists()
    assert server.requests == 0 and not dest.exists()


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
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(123))  # not the calibration inputs
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
