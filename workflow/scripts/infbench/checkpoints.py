"""Where a model's .pth checkpoint comes from: a sha256-verified download, or seeded random weights.

Both paths end in the same kind of file (a torch.save'd state_dict, as torchvision publishes
them), written atomically, so every step downstream treats them alike. A failure leaves no
file behind: Snakemake must never mistake a half-written or unverified checkpoint for a
finished one.
"""

import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from infbench.errors import UserError

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


def download(url, sha256, dest, retries=3, timeout=60.0, model=None, backoff=1.0):
    """Download ``url`` to ``dest``, checking its sha256; return ``dest`` as a Path.

    ``sha256`` is the full hex digest or, where only torchvision's file-name prefix is
    published, its first 8 or more hex digits (the digest must start with them).

    The body is streamed to a temporary file beside ``dest`` and hashed on the way, then
    moved into place with ``os.replace`` only once the hash matches. Network failures
    (refused or reset connections, a body shorter than its Content-Length, timeouts, HTTP
    5xx) are retried ``retries`` more times after the first attempt, waiting ``backoff``
    seconds and doubling; a wrong checksum or an HTTP 4xx ends at once. Every failure is a
    UserError naming the url or ``dest`` and the fix (``model`` names the config entry).
    """
    dest = Path(dest)
    expected = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise UserError(
            f"{_key(model)}.sha256 is {sha256!r}, not 8 to 64 hex digits;"
            f" set it to the sha256 of {url}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts = retries + 1
    attempt = 1
    while True:
        try:
            _fetch_once(url, expected, dest, timeout, model)
            return dest
        except _Transient as err:
            if attempt == attempts:
                raise UserError(
                    f"could not download {url} to {dest} after {attempts}"
                    f" attempt{'s' * (attempts > 1)} (last: {err});"
                    f" check the network connection, or place the file at {dest} by hand"
                ) from None
            wait = backoff * 2 ** (attempt - 1)
            print(
                f"infbench: download attempt {attempt} of {attempts} failed ({err});"
                f" retrying in {wait:g} s",
                file=sys.stderr,
            )
            time.sleep(wait)
            attempt += 1


def _fetch_once(url, expected, dest, timeout, model):
    """One attempt: stream to a temporary file, verify, move into place; clean up on failure."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received, length = _stream(url, out, dest, timeout, model)
            out.flush()
            os.fsync(out.fileno())
        if length is not None and received < length:
            raise _Transient(f"connection closed after {received} of {length} bytes")
        actual = digest.hexdigest()
        if not actual.startswith(expected):
            raise UserError(
                f"{url} has sha256 {actual}, config says {expected}:"
                f" fix {_key(model)}.sha256 or the url"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _stream(url, out, dest, timeout, model):
    """Copy the body of ``url`` into ``out``; return (sha256, bytes received, Content-Length).

    Only failures of the connection are _Transient; a failed write (a full disk) is not.
    """
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            header = resp.headers.get("Content-Length") if resp.headers else None
            length = int(header) if header and header.isdigit() else None
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                _write(out, chunk, dest)
                received += len(chunk)
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500 and err.code not in TRANSIENT_HTTP:
            raise UserError(
                f"{url} answered HTTP {err.code} {err.reason}: fix {_key(model)}.url"
            ) from None
        raise _Transient(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, OSError):  # refused, unreachable, no DNS, timed out
            raise _Transient(str(err.reason)) from None
        raise UserError(
            f"{url} cannot be opened ({err.reason}): fix {_key(model)}.url"
        ) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"{err.__class__.__name__}: {err}") from None
    except ValueError as err:  # urllib's "unknown url type"
        raise UserError(
            f"{url!r} is not a url ({err}): fix {_key(model)}.url"
        ) from None
    return digest, received, length


def _write(out, chunk, dest):
    """Append ``chunk`` to the temporary file; a write error is the disk's, not the network's."""
    try:
        out.write(chunk)
    except OSError as err:
        raise UserError(
            f"cannot write the download to {dest.parent} ({err.strerror});"
            " free disk space there or make it writable"
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
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            torch.save(state, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
