"""Where a model's .pth checkpoint comes from: a sha256-verified download, or seeded random weights.

Both paths end in the same kind of file (a torch.save'd state_dict, as torchvision publishes
them), written atomically, so every step downstream treats them alike. A failure leaves no
file at the destination: Snakemake must never mistake a half-written or unverified
checkpoint for a finished one. An interrupted download keeps what it received under a
hidden name beside it (``.<name>.part``), which the next attempt or run resumes.
"""

import fcntl
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from infbench.errors import UserError
from infbench.files import atomic_output, publish, sha256

CHUNK = 1 << 20  # bytes read per step of the stream
TRANSIENT_HTTP = {
    408,
    429,
}  # the only client errors (4xx) that another attempt can cure


class _Transient(Exception):
    """A network failure worth another attempt (dropped connection, short body, 5xx)."""


def _key(model):
    """The config key prefix that error sentences name."""
    return f"models.{model}.checkpoint" if model else "the model's checkpoint"


def part_file(dest):
    """The fixed name beside ``dest`` that an unfinished download is kept under."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.part"


def download(url, sha256, dest, retries=3, timeout=60.0, model=None, backoff=1.0):
    """Download ``url`` to ``dest``, checking its sha256; return ``dest`` as a Path.

    ``sha256`` is the full hex digest or, where only torchvision's file-name prefix is
    published, its first 8 or more hex digits (the digest must start with them); then the
    full digest is printed once the file is in place, so that the config can pin it.

    The body is streamed to ``part_file(dest)`` (``.<name>.part`` beside ``dest``), a fixed
    name, so that a later attempt or a rerun after a kill finds the bytes already received
    and asks for the rest with an HTTP Range request; a server that answers 200 instead of
    206 sends the whole file, which then replaces them. Once complete, the file's sha256 is
    checked and only then is it moved into place with ``os.replace``; a file that fails the
    check is deleted. Network failures (refused or reset connections, a body shorter than
    announced, timeouts of ``timeout`` seconds, HTTP 5xx) are retried ``retries`` more times
    after the first attempt, waiting ``backoff`` seconds and doubling, each resuming where
    the last stopped; a wrong checksum or an HTTP 4xx ends at once. Every failure is a
    UserError naming the url or ``dest`` and the fix (``model`` names the config entry).
    """
    dest = Path(dest)
    key = _key(model)
    expected = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise UserError(f"{key}.sha256 is {sha256!r}, not 8 to 64 hex digits; set it to the sha256 of {url}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UserError(f"{key}.retries is {retries!r}; set it to a whole number, 0 or more")
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UserError(f"{key}.timeout_s is {timeout!r}; set it to a number of seconds above 0")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_file(dest)
    out = _open_part(part, url, dest)
    try:
        attempts = retries + 1
        attempt = 1
        while True:
            try:
                actual = _fetch_once(url, expected, out, part, timeout, key)
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
                        f" check the network connection or raise {key}.retries or"
                        f" {key}.timeout_s, or, without network, set {key} to"
                        " {path: <a copy of the file already on disk>}"
                    ) from None
                wait = backoff * 2 ** (attempt - 1)
                print(
                    f"download attempt {attempt} of {attempts} failed ({err}); retrying in {wait:g} s",
                    file=sys.stderr,
                )
                time.sleep(wait)
                attempt += 1
        publish(part, dest)
    finally:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()  # nothing worth resuming
        out.close()
    if len(expected) < 64:
        print(
            f"infbench note: {url} has sha256 {actual} (the config gives only its prefix {expected});"
            f" pin it: set {key}.sha256 to {actual}",
            file=sys.stderr,
        )
    return dest


def _open_part(part, url, dest):
    """Open (or create) the partial file for appending, locked against a second downloader."""
    try:
        out = open(part, "a+b")
    except OSError as err:
        raise UserError(f"cannot write the download to {dest.parent} ({err.strerror}); make it writable") from None
    try:
        fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        out.close()
        raise UserError(
            f"another process is downloading {url} into {part}; wait for it to finish (or stop it) and run again"
        ) from None
    return out


def _fetch_once(url, expected, out, part, timeout, key):
    """One attempt: fetch what ``part`` lacks, then verify it; return the full sha256.

    A network failure leaves the bytes received in ``part`` for the next attempt; a file
    that fails the sha256 check is deleted.
    """
    offset = out.seek(0, os.SEEK_END)
    start, total = _stream(url, out, offset, part, timeout, key)
    out.flush()
    os.fsync(out.fileno())
    size = out.seek(0, os.SEEK_END)
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes")
    actual = _sha256(part)
    if not actual.startswith(expected):
        part.unlink()
        if start:
            raise UserError(
                f"{url}, resumed at byte {start} from the partial download in {part},"
                f" has sha256 {actual}, config says {expected}: the partial file is"
                " deleted, so run again to download it from the start (if that fails"
                f" too, fix {key}.sha256 or the url)"
            )
        raise UserError(f"{url} has sha256 {actual}, config says {expected}: fix {key}.sha256 or the url")
    return actual


def _sha256(path):
    return sha256(path, CHUNK)


CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _stream(url, out, offset, part, timeout, key):
    """Append the body of ``url`` from byte ``offset`` on to ``out``; return (start, total).

    ``start`` is the byte the body began at (``offset`` when the server resumed, 0 when it
    sent the whole file, which then replaces what ``out`` held); ``total`` is the file's
    announced size, or None. Only failures of the connection are _Transient; a failed write
    (a full disk) is not.
    """
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            start, total = _body_range(resp)
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
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                _write(out, chunk, part)
    except urllib.error.HTTPError as err:
        # 416: nothing after ``offset``; the part is complete (killed before the move) or stale
        if err.code == 416 and offset:
            total = re.fullmatch(r"bytes\s+\*/(\d+)", err.headers.get("Content-Range") or "")
            if total and int(total.group(1)) == offset:
                return offset, offset
            _truncate(out, part)
            raise _Transient(f"cannot resume at byte {offset} (HTTP 416); starting over") from None
        if 400 <= err.code < 500 and err.code not in TRANSIENT_HTTP:
            raise UserError(f"{url} answered HTTP {err.code} {err.reason}: fix {key}.url") from None
        raise _Transient(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, OSError):  # refused, unreachable, no DNS, timed out
            raise _Transient(str(err.reason)) from None
        raise UserError(f"{url} cannot be opened ({err.reason}): fix {key}.url") from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"{err.__class__.__name__}: {err}") from None
    except ValueError as err:  # urllib's "unknown url type"
        raise UserError(f"{url!r} is not a url ({err}): fix {key}.url") from None
    return start, total


def _body_range(resp):
    """Where the body of ``resp`` starts in the file and the file's size (None: unknown).

    A 206 answer says both in its Content-Range; None as start means it does not say.
    """
    header = resp.headers.get("Content-Length") if resp.headers else None
    length = int(header) if header and header.isdigit() else None
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
    with atomic_output(dest) as tmp, open(tmp, "wb") as out:
        torch.save(state, out)
    return dest
