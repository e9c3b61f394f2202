"""The data set side: make or index labelled JPEGs, and preprocess them into one uint8 cache.

An index is a list of rows ``(file, label)`` with absolute file paths, in a fixed order that
every later step keeps (the cache, labels.npy and the per-image predictions line up by
position). Preprocessing reproduces torchvision's ``ImageClassification`` preset up to (not
including) the float conversion: decode, convert("RGB"), resize the shorter side (bilinear,
PIL antialiases), centre crop. Runtimes normalise in their ``stage`` step.
"""

import math
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from infbench.errors import UserError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
CHUNK = 64  # images per preprocessing task
NUM_SYNSETS = 1000
# the preprocessing's version: raise it with any change to what load_image or preprocess
# write, so that the workflow redoes every cache (it is a param of rule preprocess)
PREPROCESS_VERSION = 1


# --- synthetic data ---


def make_synthetic(out_dir, images, seed, classes=1000):
    """Write ``images`` deterministic JPEGs to ``out_dir``; return rows [(file, label)].

    Image ``i`` depends only on (seed, i), so a smaller set is a prefix of a larger one and
    the same seed gives the same bytes. Sizes run from 60 to 700 px per side, every fifth
    image is greyscale (as a few ImageNet images are), and each holds a gradient, shapes
    and noise so that decoding and resizing do real work. Labels are drawn uniformly from
    ``range(classes)``.
    """
    if not str(images).isdigit() or int(images) < 1:
        raise UserError(
            f"dataset.images is {images!r};"
            " a synthetic data set needs a positive whole number"
        )
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(int(images)):
        rng = np.random.default_rng([int(seed), i])
        path = out_dir / f"synthetic_{i:06d}.JPEG"
        _synthetic_image(rng, grey=i % 5 == 4).save(path, format="JPEG", quality=90)
        rows.append((str(path), int(rng.integers(classes))))
    return rows


def _synthetic_image(rng, grey):
    """One PIL image: a colour gradient, a few filled shapes, noise; mode L if ``grey``."""
    width, height = (int(v) for v in rng.integers(60, 701, size=2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(width, height)
    lo, hi = rng.uniform(0, 255, size=(2, 3))
    pixels = lo + (hi - lo) * ramp[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=fill)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(
        0, 12, size=(height, width, 3)
    )
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    return image.convert("L") if grey else image


# --- ImageNet validation directories ---


def index_imagenet(root, labels=None, synsets=None, images="all"):
    """Rows [(file, label)] for an ImageNet validation directory, sorted by file name.

    Two layouts: flat files with a ``labels`` file of ``<file name> <class index>`` lines
    (val_map.txt), or one folder per synset (``n01440764/*.JPEG``) whose label is the
    synset's position in ``synsets`` (lines ``nXXXXXXXX name``), or in the sorted folder
    names when all 1,000 are present. Sorting by file name (then path) keeps the first N
    of either layout the same images. ``images`` is "all" or N (the first N rows).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"dataset.root {root} is not a directory;"
            " set dataset.root to the ImageNet validation folder"
        )
    if labels:
        rows = _index_flat(root, Path(labels))
    else:
        rows = _index_folders(root, Path(synsets) if synsets else None)
    if not rows:
        raise UserError(
            f"no images found under dataset.root {root}; point dataset.root at the folder"
            " of JPEGs (with dataset.labels) or of synset folders"
        )
    rows.sort(key=lambda row: (Path(row[0]).name, row[0]))
    return select(rows, images, f"dataset.root {root}")


def _index_flat(root, labels):
    """Rows from a ``<file name> <class index>`` labels file, files relative to ``root``."""
    if not labels.is_file():
        raise UserError(
            f"dataset.labels {labels} does not exist;"
            " set dataset.labels to the '<file name> <class index>' file (val_map.txt)"
        )
    rows = []
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= NUM_SYNSETS:
            raise UserError(
                f"dataset.labels {labels} line {number} reads {line.strip()!r},"
                " not '<file name> <class index 0-999>'; fix that line"
            )
        path = root / fields[0]
        if not path.is_file():
            raise UserError(
                f"dataset.labels {labels} line {number} names {fields[0]},"
                f" which is not in dataset.root {root}; fix dataset.root or dataset.labels"
            )
        rows.append((os.path.abspath(path), int(fields[1])))
    return rows


def _index_folders(root, synsets):
    """Rows from one folder per synset, labelled by the synset's index."""
    folders = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not folders:
        raise UserError(
            f"dataset.root {root} has no synset folders; for a flat folder of images"
            " give dataset.labels (a '<file name> <class index>' file such as val_map.txt)"
        )
    order = _read_synsets(synsets) if synsets else folders
    if len(order) != NUM_SYNSETS:
        raise UserError(
            f"dataset.root {root} has {len(folders)} class folders, not {NUM_SYNSETS},"
            " so their sorted order cannot give the labels;"
            " set dataset.synsets to the list of the 1,000 synsets"
        )
    position = {name: i for i, name in enumerate(order)}
    rows = []
    for folder in folders:
        if folder not in position:
            raise UserError(
                f"folder {folder} in dataset.root {root} is not listed in"
                f" dataset.synsets {synsets}; remove the folder or fix dataset.synsets"
            )
        for path in sorted((root / folder).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                rows.append((os.path.abspath(path), position[folder]))
    return rows


def _read_synsets(path):
    """The synset ids, in file order, of a ``nXXXXXXXX name...`` file."""
    if not path.is_file():
        raise UserError(
            f"dataset.synsets {path} does not exist;"
            " set dataset.synsets to the list of the 1,000 synsets"
        )
    order = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(order) != NUM_SYNSETS or len(set(order)) != NUM_SYNSETS:
        raise UserError(
            f"dataset.synsets {path} lists {len(set(order))} distinct synsets,"
            f" not {NUM_SYNSETS}; give the full list in label order"
        )
    return order


def select(rows, images, where):
    """The first ``images`` rows ("all" or a count); ``where`` names the source in errors."""
    if str(images) == "all":
        return rows
    if not str(images).isdigit() or int(images) < 1:
        raise UserError(
            f"dataset.images is {images!r}; set it to all or a positive whole number"
        )
    count = int(images)
    if count > len(rows):
        raise UserError(
            f"dataset.images is {count} but {where} holds only {len(rows)} images;"
            " lower dataset.images or use all"
        )
    return rows[:count]


# --- the index file ---


def write_index(path, rows):
    """Write rows as a TSV with header ``file\\tlabel`` (absolute paths), atomically."""
    lines = ["file\tlabel"]
    lines += [f"{os.path.abspath(file)}\t{int(label)}" for file, label in rows]
    _atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_index(path):
    """Rows [(file, label)] of an index TSV written by ``write_index``."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or lines[0] != "file\tlabel":
        raise UserError(
            f"{path} is not an infbench index (its header is not 'file<TAB>label');"
            " delete it so that it is rebuilt"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        file, _, label = line.rpartition("\t")
        if not file or not label.isdigit():
            raise UserError(
                f"{path} line {number} is not '<file><TAB><label>';"
                " delete it so that it is rebuilt"
            )
        rows.append((file, int(label)))
    return rows


def _atomic_write_text(path, text):
    """Write ``text`` to a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- preprocessing ---


def load_image(path, resize, crop):
    """uint8 HWC RGB pixels of ``path`` as torchvision's ImageClassification preset sees them.

    Same steps and rounding as torchvision.transforms.functional on a PIL image: the shorter
    side becomes ``resize`` and the longer ``int(resize * long / short)`` (BILINEAR, which
    PIL antialiases), then a ``crop`` square at top = round((h - crop) / 2), likewise left.
    """
    if crop > resize:
        raise UserError(
            f"crop {crop} is larger than resize {resize};"
            " set the model's resize to at least its crop"
        )
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(
            f"{path} cannot be read as an image ({err});"
            " replace it, or remove it from the data set"
        ) from None
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = resize, int(resize * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    width, height = image.size
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def preprocess(rows, resize, crop, out_npy, workers=1):
    """Write every row's pixels, in index order, to ``out_npy`` (uint8, N x crop x crop x 3).

    The array is a .npy memmap filled in chunks by ``workers`` processes, under a temporary
    name that replaces ``out_npy`` only when complete. Read it with np.load(mmap_mode="r").
    """
    out_npy = Path(out_npy)
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    files = [str(file) for file, _ in rows]
    if not files:
        raise UserError("the data set index is empty; set dataset.images to at least 1")
    fd, tmp = tempfile.mkstemp(
        dir=out_npy.parent, prefix=f".{out_npy.name}.", suffix=".part"
    )
    os.close(fd)
    try:
        cache = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(files), crop, crop, 3)
        )
        del cache  # header and size are on disk; workers open it themselves
        chunks = [
            (tmp, start, files[start : start + CHUNK], resize, crop)
            for start in range(0, len(files), CHUNK)
        ]
        if workers <= 1:
            for chunk in chunks:
                _fill_chunk(*chunk)
        else:
            _fill_in_pool(chunks, workers, len(files))
        os.replace(tmp, out_npy)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_npy


def _fill_in_pool(chunks, workers, total):
    """Run the chunks on a process pool; the first failure cancels the rest.

    Workers are forked: they need nothing but this module, and unlike spawn, fork does not
    re-import the caller's main module (which breaks ``python -`` and Snakemake script
    directives). preprocess.py starts no threads before forking.
    """
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("fork")
    ) as pool:
        futures = [pool.submit(_fill_chunk, *chunk) for chunk in chunks]
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                future.result()
                if done % 20 == 0:
                    print(
                        f"preprocessed {min(done * CHUNK, total)} of {total} images",
                        file=sys.stderr,
                    )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _fill_chunk(npy, start, files, resize, crop):
    """Decode ``files`` into rows ``start...`` of the memmap ``npy`` (in a worker process)."""
    cache = np.load(npy, mmap_mode="r+")
    for offset, file in enumerate(files):
        cache[start + offset] = load_image(file, resize, crop)
    cache.flush()
