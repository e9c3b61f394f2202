"""Where a model's .pth checkpoint comes from: a sha256-verified download, or seeded random weights.

Both paths end in the same kind of file (a torch.save'd state_dict, as torchvision publishes
them), written atomically, so every step downstream treats them alike. A failure leaves no
file at the destination: Snakemake must never mistake a half-written or unverified
checkpoint for a finished one. An interrupted download keeps what it received under a
hidden name beside it (``.<name>.part``), which the next attempt or run resumes.

The bytes come from the network, so nothing about them is trusted until their sha256
matches (docs/security.md): the digest is the full 64 hex digits, or a published prefix
only where the config says ``trust_first_download`` (then the first matching download's
full digest is recorded in ``PINS`` beside the checkpoints and required from then on).
Every attempt is bounded: https only (plain http only to this machine's loopback address),
redirects only to https, at most ``max_bytes`` bytes, and ``deadline`` seconds in all.
"""

import fcntl
import hashlib
import http.client
import os
import re
import socket
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from infbench.errors import UserError
from infbench.files import atomic_output, publish

CHUNK = 1 << 20  # bytes read per step of the stream
TRANSIENT_HTTP = {
    408,
    429,
}  # the only client errors (4xx) that another attempt can cure
MAX_MIB = 1024  # checkpoint.max_mib's default: the largest seed checkpoint (vgg16) is 528 MiB
DEADLINE_S = 1800.0  # checkpoint.deadline_s's default: one attempt, connecting to last byte
# plain http is allowed to these hosts only: the bytes never leave the machine
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# beside the checkpoints: the full sha256 of each url first downloaded against a prefix
PINS = "sha256-pins.tsv"
PINS_HEADER = "url\tsha256"
FULL = 64  # hex digits of a sha256
SHORTEST = 8  # torchvision's file-name prefix


class _Transient(Exception):
    """A network failure worth another attempt (dropped connection, short body, 5xx)."""


def _key(model):
    """The config key prefix that error sentences name."""
    return f"models.{model}.checkpoint" if model else "the model's checkpoint"


def part_file(dest):
    """The fixed name beside ``dest`` that an unfinished download is kept under."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.part"


def pins_file(dest):
    """The file beside ``dest`` that records the full digests of prefix-pinned downloads."""
    return Path(dest).parent / PINS


def download(
    url,
    sha256,
    dest,
    retries=3,
    timeout=60.0,
    model=None,
    backoff=1.0,
    trust_first_download=False,
    max_bytes=MAX_MIB << 20,
    deadline=DEADLINE_S,
):
    """Download ``url`` to ``dest``, checking its sha256; return ``dest`` as a Path.

    ``sha256`` is the full hex digest. A shorter one (8 or more hex digits: torchvision's
    file-name prefix, for files whose full digest is not published) is refused unless
    ``trust_first_download``: 32 bits are forged in a minute. With it, the first download
    that matches the prefix is accepted, its full digest is recorded in ``pins_file(dest)``
    and every later download of ``url`` must match that digest (and the note printed asks
    the user to pin it in the config).

    The body is streamed to ``part_file(dest)`` (``.<name>.part`` beside ``dest``, never
    through a symbolic link), a fixed name, so that a later attempt or a rerun after a kill
    finds the bytes already received and asks for the rest with an HTTP Range request; a
    server that answers 200 instead of 206 sends the whole file, which then replaces them.
    Once complete, the file's sha256 is checked and only then is it moved into place with
    ``os.replace``; a file that fails the check is deleted, and so is one that grows past
    ``max_bytes``. Network failures (refused or reset connections, a body shorter than
    announced, ``timeout`` seconds without data, an attempt over ``deadline`` seconds in all,
    HTTP 5xx) are retried ``retries`` more times after the first attempt, waiting
    ``backoff`` seconds and doubling, each resuming where the last stopped; a wrong
    checksum, a refused redirect, an oversized file or an HTTP 4xx ends at once. Every
    failure is a UserError naming the url or ``dest`` and the fix (``model`` names the
    config entry).
    """
    dest = Path(dest)
    key = _key(model)
    expected = _expected_digest(sha256, url, key, trust_first_download)
    _check_url(url, key)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UserError(f"{key}.retries is {retries!r}; set it to a whole number, 0 or more")
    for name, value in (("timeout_s", timeout), ("deadline_s", deadline)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UserError(f"{key}.{name} is {value!r}; set it to a number of seconds above 0")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise UserError(f"{key}.max_mib gives {max_bytes!r} bytes; set it to a number of MiB above 0")
    dest.parent.mkdir(parents=True, exist_ok=True)
    pins = pins_file(dest)
    recorded = _recorded(pins, url, expected, key) if len(expected) < FULL else None
    limits = _Limits(timeout, deadline, max_bytes, key)
    part = part_file(dest)
    out = _open_part(part, url, dest)
    try:
        if out.seek(0, os.SEEK_END) > max_bytes:  # kept from a run with a larger bound
            _truncate(out, part)
        attempts = retries + 1
        attempt = 1
        while True:
            try:
                actual = _fetch_once(url, recorded or expected, out, part, limits, key, pins if recorded else None)
                break
            except _Transient as err:
                if attempt == attempts:
                    kept = out.seek(0, os.SEEK_END)
                    keep = (
                        f" the {kept} bytes received are kept in {part} and a rerun resumes from there;" if kept else ""
                    )
                    raise UserError(
                        f"could not download {url} to {dest} after {attempts}"
                        f" attempt{'s' * (attempts > 1)} (last: {err});{keep}"
                        f" check the network connection or raise {key}.retries,"
                        f" {key}.timeout_s or {key}.deadline_s, or, without network, set {key} to"
                        " {path: <a copy of the file already on disk>}"
                    ) from None
                wait = backoff * 2 ** (attempt - 1)
                print(
                    f"download attempt {attempt} of {attempts} failed ({err}); retrying in {wait:g} s",
                    file=sys.stderr,
                )
                time.sleep(wait)
                attempt += 1
        if len(expected) < FULL and not recorded:
            _record(pins, url, actual)  # before the file is in place: no checkpoint without its record
        publish(part, dest)
    finally:
        if part.is_file() and not part.is_symlink() and part.stat().st_size == 0:
            part.unlink()  # nothing worth resuming
        out.close()
    if len(expected) < FULL:
        first = "recorded in" if not recorded else "as recorded in"
        print(
            f"infbench note: {url} has sha256 {actual} ({first} {pins}; the config gives only its"
            f" prefix {expected}); pin it: set {key}.sha256 to {actual}",
            file=sys.stderr,
        )
    return dest


def _expected_digest(sha256, url, key, trust_first_download):
    """The digest to check, lower case; a prefix only where the config trusts the first download."""
    expected = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise UserError(f"{key}.sha256 is {sha256!r}, not 8 to 64 hex digits; set it to the sha256 of {url}")
    if len(expected) < FULL and trust_first_download is not True:
        raise UserError(
            f"{key}.sha256 is {expected}, {len(expected)} of the sha256's {FULL} hex digits, which a"
            f" forged file can match; set it to the full sha256 of {url}, or, where only this"
            f" prefix is published, add {key}.trust_first_download: true to accept the first"
            " download that matches it and require that file's full digest from then on"
        )
    return expected


def _check_url(url, key):
    """Refuse anything but https (and plain http to this machine's loopback address)."""
    if not isinstance(url, str) or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise UserError(f"{key}.url is {url!r}, which holds spaces or control characters; fix {key}.url")
    if not _allowed(url):
        raise UserError(
            f"{key}.url is {url!r}; checkpoints are downloaded over https only (plain http only"
            f" from 127.0.0.1 or localhost): fix {key}.url"
        )


def _allowed(url, after=None):
    """Whether ``url`` may be fetched (``after``: the url that redirected to it).

    https anywhere; plain http only to the loopback address, and only when not reached by a
    redirect from https (that would be a downgrade).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        return False
    return after is None or urllib.parse.urlsplit(after).scheme == "http"


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to https (any host: the sha256, not the host, vouches for the file)."""

    def __init__(self, key):
        super().__init__()
        self.key = key

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location") or headers.get("URI")
        target = urllib.parse.urljoin(req.full_url, location or "")
        if location and not _allowed(target, after=req.full_url):
            fp.close()
            raise UserError(
                f"{req.full_url} redirects (HTTP {code}) to {target!r}, which is not https;"
                f" downloads follow redirects to https only: set {self.key}.url to the file's https address"
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _Limits:
    """One attempt's bounds: ``timeout`` per read, ``deadline`` in all, ``max_bytes`` of file.

    The deadline is a timer that shuts the attempt's sockets when it fires: a read blocked on
    a server that sends a byte now and then (each within ``timeout``) returns at once.
    """

    def __init__(self, timeout, deadline, max_bytes, key):
        self.timeout, self.deadline, self.max_bytes, self.key = timeout, deadline, max_bytes, key
        self.expired = False
        self._connections = []
        self._lock = threading.Lock()
        self._timer = None

    def __enter__(self):
        self.expired, self._connections = False, []
        self._timer = threading.Timer(self.deadline, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        return False

    def over(self):
        return _Transient(f"the attempt took longer than {self.key}.deadline_s ({self.deadline:g} s)")

    def _expire(self):
        with self._lock:
            self.expired = True
            for connection in self._connections:
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    try:
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd, under any TLS layer
                    except OSError:
                        pass  # closed already

    def connection(self, cls):
        """A connection factory for urllib's handlers that registers each connection."""

        def make(host, **kwargs):
            connection = cls(host, **kwargs)
            with self._lock:
                if self.expired:
                    raise self.over()
                self._connections.append(connection)
            return connection

        return make

    def opener(self):
        limits = self

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(limits.connection(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(limits.connection(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(_Redirects(self.key), HTTP, HTTPS)


def _recorded(pins, url, prefix, key):
    """The full digest recorded for ``url`` by its first download, or None; it must start with ``prefix``."""
    digest = _pins(pins).get(url)
    if digest and not digest.startswith(prefix):
        raise UserError(
            f"{pins} records sha256 {digest} for {url}, which does not start with {key}.sha256"
            f" {prefix}; fix {key}.sha256, or, if the file was meant to change, delete that line of {pins}"
        )
    return digest


def _pins(pins, handle=None):
    """{url: full sha256} of the pins file (empty when there is none)."""
    try:
        if handle is None:
            with _open_nofollow(pins, os.O_RDONLY) as f:
                text = f.read().decode("utf-8")
        else:
            handle.seek(0)
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {pins} ({err}); delete it (the next download records its digest again)") from None
    lines = text.splitlines()
    if lines and lines[0] != PINS_HEADER:
        raise UserError(f"{pins} is not a list of recorded sha256 digests; delete it or restore it")
    recorded = {}
    for number, line in enumerate(lines[1:], start=2):
        url, tab, digest = line.rpartition("\t")
        if not tab or not re.fullmatch(r"[0-9a-f]{64}", digest, re.ASCII):
            raise UserError(f"{pins} line {number} is not '<url><TAB><sha256>'; fix or delete that line")
        recorded.setdefault(url, digest)
    return recorded


def _record(pins, url, digest):
    """Append ``url``'s full digest to the pins file (locked: models download side by side)."""
    try:
        with _open_nofollow(pins, os.O_RDWR | os.O_CREAT | os.O_APPEND) as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if url in _pins(pins, handle=f):
                return
            text = "" if f.seek(0, os.SEEK_END) else PINS_HEADER + "\n"
            f.write(f"{text}{url}\t{digest}\n".encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(f"cannot record the sha256 of {url} in {pins} ({err.strerror}); make it writable") from None


def _open_nofollow(path, flags):
    """Open ``path`` as a binary file object, refusing a symbolic link or anything but a plain file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a plain file")
    return os.fdopen(fd, "r+b" if flags & (os.O_RDWR | os.O_WRONLY) else "rb")


def _open_part(part, url, dest):
    """Open (or create) the partial file for appending, locked against a second downloader.

    Never through a symbolic link: one planted at the fixed name would make the download
    overwrite its target.
    """
    try:
        out = _open_nofollow(part, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    except OSError as err:
        if os.path.lexists(part) and (part.is_symlink() or not part.is_file()):
            raise UserError(
                f"{part} is a symbolic link or not a plain file, where the download of {url} keeps"
                " its partial file; delete it and run again"
            ) from None
        raise UserError(f"cannot write the download to {dest.parent} ({err.strerror}); make it writable") from None
    try:
        fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        out.close()
        raise UserError(
            f"another process is downloading {url} into {part}; wait for it to finish (or stop it) and run again"
        ) from None
    return out


def _fetch_once(url, expected, out, part, limits, key, pins=None):
    """One attempt: fetch what ``part`` lacks, then verify it; return the full sha256.

    A network failure leaves the bytes received in ``part`` for the next attempt; a file
    that fails the sha256 check is deleted. ``pins`` is set when ``expected`` is the digest
    recorded there rather than the config's.
    """
    offset = out.seek(0, os.SEEK_END)
    with limits:
        start, total = _stream(url, out, offset, part, limits, key)
    out.flush()
    os.fsync(out.fileno())
    size = out.seek(0, os.SEEK_END)
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes")
    actual = _sha256(out)
    if not actual.startswith(expected):
        part.unlink()
        if pins:
            raise UserError(
                f"{url} has sha256 {actual}, but its first download, recorded in {pins}, had"
                f" {expected}: the file has changed since; if its publisher really replaced it, set"
                f" {key}.sha256 to the new full digest (or delete that line of {pins}) and run again"
            )
        if start:
            raise UserError(
                f"{url}, resumed at byte {start} from the partial download in {part},"
                f" has sha256 {actual}, config says {expected}: the partial file is"
                " deleted, so run again to download it from the start (if that fails"
                f" too, fix {key}.sha256 or the url)"
            )
        raise UserError(f"{url} has sha256 {actual}, config says {expected}: fix {key}.sha256 or the url")
    return actual


def _sha256(out):
    """Hex sha256 of the open partial file (the file verified is the file moved into place)."""
    digest = hashlib.sha256()
    out.seek(0)
    while block := out.read(CHUNK):
        digest.update(block)
    return digest.hexdigest()


CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)


def _stream(url, out, offset, part, limits, key):
    """Append the body of ``url`` from byte ``offset`` on to ``out``; return (start, total).

    ``start`` is the byte the body began at (``offset`` when the server resumed, 0 when it
    sent the whole file, which then replaces what ``out`` held); ``total`` is the file's
    announced size, or None. Only failures of the connection are _Transient; a failed write
    (a full disk) is not. Past ``limits.deadline`` the attempt is _Transient; a file larger
    than ``limits.max_bytes`` (announced or received) is a UserError, its part emptied.
    """
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with limits.opener().open(request, timeout=limits.timeout) as resp:
            start, total = _body_range(resp)
            if total is not None and total > limits.max_bytes:
                _truncate(out, part)
                raise _too_large(url, f"announces {total} bytes", limits)
            if start is None or start not in (0, offset):
                _truncate(out, part)
                raise _Transient(
                    f"asked for bytes {offset}- the server sent {resp.headers.get('Content-Range')!r}; starting over"
                )
            if offset and start == 0:
                print(
                    f"{url} cannot be resumed (HTTP {resp.status} to a Range request); downloading it from the start",
                    file=sys.stderr,
                )
                _truncate(out, part)
            elif offset:
                print(
                    f"resuming the download of {url} at byte {offset}" + (f" of {total}" if total is not None else ""),
                    file=sys.stderr,
                )
            size = out.seek(0, os.SEEK_END)
            while chunk := resp.read1(CHUNK):
                if limits.expired:
                    break
                size += len(chunk)
                if size > limits.max_bytes:
                    _truncate(out, part)
                    raise _too_large(url, f"sends more than {limits.max_bytes} bytes", limits)
                _write(out, chunk, part)
            if limits.expired:
                raise limits.over()
    except urllib.error.HTTPError as err:
        # 416: nothing after ``offset``; the part is complete (killed before the move) or stale
        if err.code == 416 and offset:
            total = re.fullmatch(r"bytes\s+\*/(\d+)", err.headers.get("Content-Range") or "", re.ASCII)
            if total and int(total.group(1)) == offset:
                return offset, offset
            _truncate(out, part)
            raise _Transient(f"cannot resume at byte {offset} (HTTP 416); starting over") from None
        if 400 <= err.code < 500 and err.code not in TRANSIENT_HTTP:
            raise UserError(f"{url} answered HTTP {err.code} {err.reason}: fix {key}.url") from None
        raise _Transient(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if limits.expired:
            raise limits.over() from None
        if isinstance(err.reason, OSError):  # refused, unreachable, no DNS, timed out
            raise _Transient(str(err.reason)) from None
        raise UserError(f"{url} cannot be opened ({err.reason}): fix {key}.url") from None
    except (OSError, http.client.HTTPException) as err:
        if limits.expired:
            raise limits.over() from None
        raise _Transient(f"{err.__class__.__name__}: {err}") from None
    except ValueError as err:  # urllib's "unknown url type"
        raise UserError(f"{url!r} is not a url ({err}): fix {key}.url") from None
    return start, total


def _too_large(url, what, limits):
    return UserError(
        f"{url} {what}, more than {limits.key}.max_mib ({limits.max_bytes / 2**20:g} MiB) allows:"
        f" nothing is kept; if the checkpoint is really that large, raise {limits.key}.max_mib,"
        f" else fix {limits.key}.url"
    )


def _body_range(resp):
    """Where the body of ``resp`` starts in the file and the file's size (None: unknown).

    A 206 answer says both in its Content-Range; None as start means it does not say.
    """
    header = (resp.headers.get("Content-Length") if resp.headers else None) or ""
    length = int(header) if re.fullmatch(r"[0-9]+", header, re.ASCII) else None
    if resp.status != 206:
        return 0, length
    match = CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
    if not match:
        return None, None
    start = int(match.group(1))
    if match.group(3) != "*":
        return start, int(match.group(3))
    return start, (start + length if length is not None else None)


def _truncate(out, part):
    try:
        out.seek(0)
        out.truncate()
    except OSError as err:
        raise UserError(f"cannot rewrite {part} ({err.strerror}); delete it and run again") from None


def _write(out, chunk, part):
    """Append ``chunk`` to the partial file; a write error is the disk's, not the network's."""
    try:
        out.write(chunk)
    except OSError as err:
        raise UserError(
            f"cannot write the download to {part.parent} ({err.strerror});"
            " free disk space there or make it writable, then run again to resume"
        ) from None


def random_checkpoint(arch, seed, dest):
    """Write seeded random ``arch`` weights to ``dest`` as torchvision's .pth files hold them.

    The state_dict of ``infbench.models.build_torch(arch, seed=seed)``, its activation scale
    calibrated (``infbench.models.calibrate_random``: BatchNorm statistics re-estimated, or
    unit-variance layers without BatchNorm, so that fp16 stays finite), is torch.save'd (zip
    format, like the published checkpoints) to a temporary file and moved into place.
    """
    import torch

    from infbench.models import build_torch, calibrate_random

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = calibrate_random(build_torch(arch, seed=int(seed)), arch, int(seed)).state_dict()
    with atomic_output(dest) as tmp, open(tmp, "xb") as out:
        torch.save(state, out)
    return dest
