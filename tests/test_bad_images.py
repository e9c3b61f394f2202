"""Bad images: one pass over every file, every unreadable one named, and a policy for them."""

import os
import shutil
from pathlib import Path

import pytest

from infbench.data import bad_images_error, make_synthetic, preprocess, scan_images
from infbench.errors import UserError


@pytest.fixture
def mixed_set(tmp_path):
    """6 synthetic JPEGs of which 4 are broken in different ways; returns (rows, broken files)."""
    rows = make_synthetic(tmp_path / "img", 6, seed=1)
    paths = [Path(file) for file, _ in rows]
    paths[1].write_bytes(paths[1].read_bytes()[:300])  # truncated
    paths[2].write_bytes(b"")  # empty
    paths[3].write_bytes(os.urandom(2000))  # random bytes
    paths[5].write_text("not an image\n")  # text named .JPEG
    return rows, [str(paths[i]) for i in (1, 2, 3, 5)]


@pytest.mark.parametrize("workers", [1, 2])
def test_one_scan_finds_every_unreadable_image_in_index_order(mixed_set, workers):
    rows, broken = mixed_set
    bad = scan_images([file for file, _ in rows], workers=workers)
    assert [file for file, _ in bad] == broken
    reasons = [why for _, why in bad]
    assert reasons[0] == "OSError: Truncated File Read"
    assert all(reasons) and all(why.split(":")[0].isidentifier() for why in reasons)


def test_the_error_lists_the_first_twenty_and_counts_the_rest():
    bad = [(f"/data/{i}.JPEG", "OSError: broken") for i in range(25)]
    sentence = bad_images_error(bad, 1000)
    assert sentence.startswith("25 of 1000 images cannot be read: /data/0.JPEG (OSError: broken); /data/1.JPEG")
    assert "/data/19.JPEG (OSError: broken); and 5 more. Replace or remove them," in sentence
    assert "/data/20.JPEG" not in sentence
    assert sentence.endswith("or set dataset.bad_images: skip to leave them out of every cell")
    # the count is all but the twenty listed, also past forty (25 % 20 would give 5 as well)
    assert "; and 45 more." in bad_images_error((bad * 3)[:65], 1000)
    exactly = bad_images_error(bad[:20], 100)  # twenty listed, none left to count
    assert "/data/19.JPEG (OSError: broken). Replace or remove them," in exactly and "more" not in exactly
    assert bad_images_error(bad[:1], 5) == (
        "1 of 5 images cannot be read: /data/0.JPEG (OSError: broken). Replace or remove them,"
        " or set dataset.bad_images: skip to leave them out of every cell"
    )


def test_preprocessing_checks_the_free_space_first(tmp_path, monkeypatch):
    rows = make_synthetic(tmp_path / "img", 3, seed=0)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10_000))
    out = tmp_path / "cache" / "72-64.npy"
    with pytest.raises(UserError) as err:
        preprocess(rows, 72, 64, out)
    # 3 images x 64 x 64 x 3 bytes and a 4 KiB header: 40,960 bytes
    assert str(err.value) == (
        f"writing {out} needs 0.0 MiB but {out.parent} has 0.0 MiB free;"
        " free space there, or run the workflow from a directory on a larger disk"
    )
    assert not out.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=40_959))
    with pytest.raises(UserError):  # one byte short of what preprocess asks for
        preprocess(rows, 72, 64, out)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=40_960))
    preprocess(rows, 72, 64, out)
    assert out.exists()


SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"


def index(root, out, *policy):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(SCRIPTS / "index_dataset.py"), "--root", str(root), "--labels",
         str(root / "val_map.txt"), "--out", str(out / "index.tsv"), "--labels-out", str(out / "labels.npy"),
         "--bad-out", str(out / "bad_images.tsv"), "--workers", "2", *policy],
        capture_output=True, text=True, timeout=120,
    )


def labelled_mixed_set(tmp_path, mixed_set):
    rows, broken = mixed_set
    root = tmp_path / "img"
    (root / "val_map.txt").write_text("".join(f"{Path(f).name} {label}\n" for f, label in rows))
    return rows, broken, root


def test_policy_fail_lists_every_unreadable_image_in_one_sentence(tmp_path, mixed_set):
    rows, broken, root = labelled_mixed_set(tmp_path, mixed_set)
    proc = index(root, tmp_path / "out")
    assert proc.returncode != 0
    error = [line for line in proc.stderr.splitlines() if line.startswith("infbench:")]
    assert len(error) == 1 and error[0].startswith("infbench: 4 of 6 images cannot be read: ")
    assert all(file in error[0] for file in broken)
    assert not (tmp_path / "out" / "index.tsv").exists()


def test_policy_skip_leaves_them_out_and_lists_them(tmp_path, mixed_set):
    import numpy as np

    rows, broken, root = labelled_mixed_set(tmp_path, mixed_set)
    proc = index(root, tmp_path / "out", "--bad-images", "skip")
    assert proc.returncode == 0, proc.stderr
    kept = [(f, label) for f, label in rows if f not in broken]
    lines = (tmp_path / "out" / "index.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[0] for line in lines] == [f for f, _ in kept]
    assert np.load(tmp_path / "out" / "labels.npy").tolist() == [label for _, label in kept]
    bad = (tmp_path / "out" / "bad_images.tsv").read_text().splitlines()
    assert bad[0] == "file\treason" and [line.split("\t")[0] for line in bad[1:]] == broken
    assert "left out 4 unreadable images (dataset.bad_images: skip)" in proc.stderr
    assert "scanned 6 images for unreadable files in" in proc.stderr


def test_a_crop_as_large_as_the_resize_is_allowed_and_one_larger_is_not(tmp_path):
    from infbench.data import load_image

    rows = make_synthetic(tmp_path / "img", 1, seed=2)
    assert load_image(rows[0][0], 64, 64).shape == (64, 64, 3)  # the whole shorter side
    with pytest.raises(UserError, match="crop 65 is larger than resize 64"):
        load_image(rows[0][0], 64, 65)


class PoolRecorder:
    """Stands in for ProcessPoolExecutor: records each pool's size and runs its work in this process."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __call__(self, max_workers, mp_context):
        self.sizes.append(max_workers)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, *iterables):
        return map(fn, *iterables)

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


class ProgressRecorder:
    """Stands in for infbench.progress.Progress: records every count a step reports."""

    def __init__(self, counts):
        self.counts = counts

    def __call__(self, what, total):
        return self

    def update(self, done):
        self.counts.append(done)


@pytest.mark.parametrize(
    "chunks,workers,pools",
    [(1.5, 2, [2]), (1.5, 1, []), (1.5, 0, []), (1, 2, []), (0, 2, [])],  # in chunks of CHUNK files
)
def test_the_scan_uses_a_pool_of_workers_processes_only_for_more_than_one_chunk(tmp_path, monkeypatch,
                                                                                chunks, workers, pools):
    import infbench.data

    sizes, counts = [], []
    monkeypatch.setattr(infbench.data, "ProcessPoolExecutor", PoolRecorder(sizes))
    monkeypatch.setattr(infbench.data, "Progress", ProgressRecorder(counts))
    chunk = infbench.data.CHUNK
    count = int(chunks * chunk)
    files = [str(tmp_path / f"{i}.JPEG") for i in range(count)]  # none exists: each decode fails at once
    bad = scan_images(files, workers=workers)
    assert sizes == pools
    assert counts == {1.5: [chunk, count], 1: [count], 0: []}[chunks]  # files scanned after each chunk
    assert [file for file, _ in bad] == files and all(why.startswith("FileNotFoundError: ") for _, why in bad)


@pytest.mark.parametrize("workers,pools", [(2, [2]), (1, []), (0, [])])
def test_preprocessing_uses_a_pool_of_workers_processes_unless_one_or_fewer(tmp_path, monkeypatch, workers, pools):
    import infbench.data

    sizes = []
    monkeypatch.setattr(infbench.data, "_fill_in_pool", lambda chunks, workers, total: sizes.append(workers))
    rows = make_synthetic(tmp_path / "img", 1, seed=0)
    preprocess(rows, 72, 64, tmp_path / "cache.npy", workers=workers)
    assert sizes == pools


def test_preprocessing_in_a_pool_reports_every_image_done(monkeypatch):
    import infbench.data

    counts = []
    monkeypatch.setattr(infbench.data, "ProcessPoolExecutor", PoolRecorder([]))
    monkeypatch.setattr(infbench.data, "Progress", ProgressRecorder(counts))
    monkeypatch.setattr(infbench.data, "_fill_chunk", lambda *chunk: None)
    chunks = [("cache.npy", 0, ["x"] * 64, 72, 64), ("cache.npy", 64, ["x"] * 6, 72, 64)]
    infbench.data._fill_in_pool(chunks, 2, 70)
    assert sorted(counts) in ([6, 70], [64, 70])  # in the order the chunks finish, ending at all 70


def test_preprocessing_in_this_process_reports_progress_and_lets_go_of_the_rows_it_wrote(tmp_path, monkeypatch):
    import infbench.data

    counts, released = [], []
    monkeypatch.setattr(infbench.data, "Progress", ProgressRecorder(counts))
    monkeypatch.setattr(infbench.data, "release_rows", lambda cache, start, end: released.append((start, end)))
    rows = make_synthetic(tmp_path / "img", 3, seed=0)
    preprocess(rows, 72, 64, tmp_path / "cache.npy", workers=1)
    assert counts == [3] and released == [(0, 3)]


def test_preprocessing_counts_and_releases_whole_chunks_past_the_first(tmp_path, monkeypatch):
    """Chunk 2 starts at row CHUNK: its progress count and released rows end at 2 x CHUNK."""
    import numpy as np
    from PIL import Image

    import infbench.data

    chunk = infbench.data.CHUNK
    counts, released = [], []
    monkeypatch.setattr(infbench.data, "Progress", ProgressRecorder(counts))
    monkeypatch.setattr(infbench.data, "_fill_chunk", lambda *task: None)
    preprocess([(f"/data/{i}.JPEG", 0) for i in range(2 * chunk + 1)], 8, 8, tmp_path / "fake.npy", workers=1)
    assert counts == [chunk, 2 * chunk, 2 * chunk + 1]
    monkeypatch.undo()
    monkeypatch.setattr(infbench.data, "release_rows", lambda cache, start, end: released.append((start, end)))
    Image.new("RGB", (12, 8), (200, 90, 10)).save(tmp_path / "a.JPEG")
    np.lib.format.open_memmap(tmp_path / "cache.npy", mode="w+", dtype=np.uint8, shape=(2 * chunk, 8, 8, 3))
    infbench.data._fill_chunk(tmp_path / "cache.npy", chunk, [tmp_path / "a.JPEG"] * chunk, 8, 8,
                              infbench.data.DEFAULT_INTERPOLATION)
    assert released == [(chunk, 2 * chunk)]


# --- hostile images: other formats, sizes that blow up, memory that runs out ---


def png(width, height, truncated=False):
    """A valid all-black 1-bit PNG of ``width`` x ``height``, made by hand: a 64-megapixel one
    is 8 kB. ``truncated``: its pixel data cut short (the header still says the size)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress((b"\0" + bytes((width + 7) // 8)) * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = pixels[: len(pixels) // 4] if truncated else pixels
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# Runs in a child whose address space is capped at what it holds plus 512 MiB, so that an
# image that would take gigabytes fails there (as MemoryError) instead of on this machine.
LIMITED = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from infbench.data import load_image, scan_images
from infbench.errors import UserError
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) << 10
resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20), resource.RLIM_INFINITY))
files = sys.argv[2:]
found = {file: why for file, why in scan_images(files)}
loaded = {}
for file in files:
    try:
        loaded[file] = str(load_image(file, 256, 224).shape)
    except UserError as err:
        loaded[file] = "UserError: " + str(err)
    except BaseException as err:
        loaded[file] = err.__class__.__name__
print(json.dumps([found, loaded]))
"""


def scan_and_load_with_little_memory(files):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", LIMITED, str(SCRIPTS), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_images_that_would_blow_up_are_unreadable_before_any_pixel_is_decoded(tmp_path):
    """A 20000x1 PNG is 82 bytes and a 65500x1 JPEG 6 kB, but the shorter side resized to 256
    makes 1.3 and 4.3 gigapixels; 8192x8193 is one row over MAX_PIXELS (8192 x 8192)."""
    from PIL import Image

    strip, jpeg, big = tmp_path / "strip.PNG", tmp_path / "strip.JPEG", tmp_path / "big.PNG"
    strip.write_bytes(png(20000, 1))
    Image.new("L", (65500, 1), 128).save(jpeg, quality=90)
    big.write_bytes(png(8192, 8193))
    at_bound = tmp_path / "at-bound.PNG"  # as many pixels as allowed: decoded (and found truncated)
    at_bound.write_bytes(png(8192, 8192, truncated=True))
    wide, wider = tmp_path / "wide.PNG", tmp_path / "wider.PNG"  # sides 100 and 101 times apart
    Image.new("RGB", (1000, 10), (10, 200, 30)).save(wide)
    Image.new("RGB", (10, 1010), (10, 200, 30)).save(wider)
    files = [strip, jpeg, big, at_bound, wide, wider]
    found, loaded = scan_and_load_with_little_memory(files)
    ratio = "one side more than 100 times the other, which resizing would blow up"
    assert found == {
        str(strip): f"too large: 20000x1 pixels, {ratio}",
        str(jpeg): f"too large: 65500x1 pixels, {ratio}",
        str(big): "too large: 8192x8193 pixels, more than the 67,108,864 an image may have",
        str(at_bound): found[str(at_bound)],
        str(wider): f"too large: 10x1010 pixels, {ratio}",
    }
    assert not found[str(at_bound)].startswith("too large")
    assert loaded[str(wide)] == "(224, 224, 3)"
    for file in (strip, jpeg, big, wider):
        assert loaded[str(file)] == (
            f"UserError: {file} cannot be read as an image ({found[str(file)]}); replace it, remove it"
            " from the data set, or set dataset.bad_images: skip to leave unreadable images out"
        )


def test_running_out_of_memory_is_an_unreadable_image_not_a_crash(tmp_path, monkeypatch):
    from PIL import Image

    from infbench.data import load_image

    rows = make_synthetic(tmp_path / "img", 1, seed=0)
    file = rows[0][0]

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "resize", no_memory)
    with pytest.raises(UserError) as err:
        load_image(file, 72, 64)
    assert str(err.value).startswith(f"{file} cannot be read as an image (MemoryError while resizing it to ")
    monkeypatch.setattr(Image.Image, "convert", no_memory)
    assert scan_images([file]) == [(file, "MemoryError")]
    with pytest.raises(UserError, match=r"cannot be read as an image \(MemoryError\)"):
        load_image(file, 72, 64)


def test_a_resize_past_the_pixel_bound_is_refused_before_it_is_made(tmp_path, monkeypatch):
    """An image within MAX_ASPECT, resized to a huge configured resize: the config's to lower."""
    from PIL import Image

    import infbench.data
    from infbench.data import load_image

    path = tmp_path / "wide.JPEG"
    Image.new("RGB", (100, 1), (1, 2, 3)).save(path)
    with pytest.raises(UserError) as err:
        load_image(path, 820, 820)  # 82000 x 820 pixels: over 64 Mi
    assert str(err.value) == (
        f"resizing {path} (100x1) to the model's resize 820 would make 82000x820 pixels,"
        " more than the 67,108,864 an image may have; lower that resize"
    )
    # at the bound and one past it, with a bound small enough to allocate here: 3000 x 30
    monkeypatch.setattr(infbench.data, "MAX_PIXELS", 3000 * 30)
    assert load_image(path, 30, 30).shape == (30, 30, 3)
    monkeypatch.setattr(infbench.data, "MAX_PIXELS", 3000 * 30 - 1)
    with pytest.raises(UserError, match="would make 3000x30 pixels, more than the 89,999 an image may have"):
        load_image(path, 30, 30)


def test_an_image_in_another_format_is_never_handed_to_an_outside_program(tmp_path):
    """PostScript named .JPEG: Pillow would open it as EPS and run Ghostscript (`gs`) on it."""
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "gs-ran.txt"
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{ran}'\nexit 0\n")  # stands in for Ghostscript, and says so
    gs.chmod(0o755)
    root = tmp_path / "img"
    rows = make_synthetic(root, 2, seed=4)
    evil = root / "synthetic_000001.JPEG"
    evil.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    (root / "val_map.txt").write_text("".join(f"{Path(f).name} {label}\n" for f, label in rows))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "index_dataset.py"), "--root", str(root), "--labels",
         str(root / "val_map.txt"), "--out", str(out / "index.tsv"), "--labels-out", str(out / "labels.npy"),
         "--bad-out", str(out / "bad_images.tsv"), "--bad-images", "skip"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert not ran.exists(), ran.read_text()
    bad = (out / "bad_images.tsv").read_text().splitlines()
    assert bad == ["file\treason", f"{evil}\tUnidentifiedImageError: cannot identify image file '{evil}'"]
    assert subprocess.run([str(gs), "--version"]).returncode == 0 and ran.exists()  # the stand-in works


def test_bad_images_tsv_keeps_one_line_per_image_whatever_the_reason_says(tmp_path):
    from infbench.data import write_bad_images

    path = tmp_path / "bad_images.tsv"
    write_bad_images(path, [("/d/a.JPEG", "OSError: line one\nline\ttwo\r"), ("/d/b.JPEG", "ValueError: x")])
    assert path.read_text().split("\n") == [
        "file\treason", "/d/a.JPEG\tOSError: line one\\nline\\ttwo\\r", "/d/b.JPEG\tValueError: x", ""
    ]


def test_an_image_file_over_256_mib_is_unreadable_before_pillow_reads_it(tmp_path):
    """Pillow keeps a JPEG's application segments in memory: the file's size is bounded too."""
    over, at = tmp_path / "over.JPEG", tmp_path / "at.JPEG"
    for path, size in ((over, (256 << 20) + 1), (at, 256 << 20)):
        with path.open("wb") as f:  # sparse: no disk, no time
            f.truncate(size)
    bad = dict(scan_images([str(over), str(at)]))
    assert bad[str(over)] == "too large: a file of 268,435,457 bytes, more than the 268,435,456 an image may have"
    assert bad[str(at)].startswith("UnidentifiedImageError: ")  # read (and found not to be an image)
