"""Writing result files so that nothing half-written is ever seen or left behind; sha256.

Every step writes through ``atomic_output``: the data goes to a temporary file beside the
output, under a fixed name (``.<name>.tmp``), which is renamed onto the output only when
the write has finished. A step killed mid-write (even by SIGKILL) leaves at most that one
temporary file, and the next run of the step, writing the same output, truncates it and
renames it away: no stray file survives a completed rerun, and none piles up. Outputs get
the permissions the user's umask gives new files (temporary files are not 0600 copies).
Standard library only: the TensorRT and OneFlow interpreters import this too.
"""

import contextlib
import hashlib
import os
from pathlib import Path


def sha256(path, chunk=1 << 20):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def temporary_name(path):
    """The fixed temporary file beside ``path`` that its writes go through."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp"


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp, path):
    """Give the finished temporary file ``tmp`` the user's permissions and rename it onto
    ``path`` (for writers that keep their own temporary file, e.g. a resumable download)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(path):
    """Yield the temporary path to write ``path``'s content to (a file, or a folder the
    caller creates); on success it replaces ``path`` with the user's umask applied, on
    failure it is removed and ``path`` is left as it was."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    elif os.path.lexists(tmp):
        tmp.unlink()  # a killed earlier attempt's (a symbolic link itself, never its target)
    try:
        yield str(tmp)
        from infbench.errors import check_interrupted

        check_interrupted()  # an interrupted step publishes nothing, even where its signal was swallowed
        mode = 0o777 if tmp.is_dir() else 0o666
        os.chmod(tmp, mode & ~_umask())
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write(path, data, fsync=False):
    """Write ``data`` (bytes or str) to ``path`` atomically (``atomic_output``)."""
    with atomic_output(path) as tmp:
        binary = isinstance(data, bytes)
        with open(tmp, "xb") if binary else open(tmp, "x", encoding="utf-8", newline="") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def _size(n):
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_free_space(path, needed):
    """Raise one sentence if the disk that will hold ``path`` has less than ``needed`` bytes
    free (checked before a large write, so that it does not fail half-way)."""
    import shutil

    from infbench.errors import UserError

    directory = Path(path).parent
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise UserError(
            f"writing {path} needs {_size(needed)} but {directory} has {_size(free)} free;"
            " free space there, or run the workflow from a directory on a larger disk"
        )


def release_rows(array, start, stop):
    """Let the pages of rows ``start:stop`` of a read-only ``np.memmap`` go from this
    process's memory once they have been used (``madvise(MADV_DONTNEED)``; the file and the
    kernel's page cache keep them). Without it a pass over a 13 GB cache ends with 13 GB
    resident. Anything that is not a memmap is left alone."""
    import mmap

    raw = getattr(array, "_mmap", None)
    if raw is None or not hasattr(mmap, "MADV_DONTNEED") or stop <= start:
        return
    row = array.strides[0]
    base = array.offset % mmap.ALLOCATIONGRANULARITY  # where the array starts in the mapping
    first = (base + start * row) // mmap.PAGESIZE * mmap.PAGESIZE
    end = min(base + stop * row, len(raw))
    if end > first:
        raw.madvise(mmap.MADV_DONTNEED, first, end - first)
