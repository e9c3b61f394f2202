"""The data set side: make or index labelled JPEGs, and preprocess them into one uint8 cache.

An index is a list of rows ``(file, label)`` with absolute file paths, in a fixed order that
every later step keeps (the cache, labels.npy and the per-image predictions line up by
position). Preprocessing reproduces torchvision's ``ImageClassification`` preset up to (not
including) the float conversion: decode, convert("RGB"), resize the shorter side (bilinear
or bicubic, as the model's weights were trained: PIL antialiases both), centre crop.
Runtimes normalise in their ``stage`` step.

Images and label files come from wherever the user got them (docs/security.md): images are
opened only as IMAGE_FORMATS and refused before decoding past MAX_IMAGE_BYTES, MAX_PIXELS
or MAX_ASPECT, label files past MAX_LABEL_BYTES or MAX_LABEL_LINES, a devkit meta.mat past
MAX_META_BYTES unpacked; a label file names images in ``dataset.root`` by their file name
alone, and no indexed path holds a control character (index.tsv keeps one row per image).
"""

import heapq
import math
import os
import re
import struct
import unicodedata
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from infbench.errors import UserError
from infbench.files import atomic_output, atomic_write, check_free_space, release_rows
from infbench.progress import Progress

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
# the only formats Pillow may read a data set's file as, whatever its name says (an EPS
# file named .JPEG would otherwise be handed to Ghostscript)
IMAGE_FORMATS = ("JPEG", "PNG")
# pixels an image may have, decoded or resized (64 Mi: a 50-megapixel photograph fits; an
# RGBA PNG at the bound peaked at 0.57 GB to decode, convert and resize, per worker)
MAX_PIXELS = 8192 * 8192
# an image file's bytes: Pillow keeps every application segment of a JPEG in memory (a
# 200 MB file of them, 8 x 8 pixels, took 220 MB), and a PNG at MAX_PIXELS is at most 256 MiB
MAX_IMAGE_BYTES = 256 << 20
# the longer side over the shorter: past it the resize to the model's input (the shorter
# side to ``resize``) would blow a strip of a few bytes up to gigabytes
MAX_ASPECT = 100
# a label or synsets file (ImageNet's: under 4 MiB, 50,001 lines): each line may cost a
# few hundred bytes of memory, so both are bounded
MAX_LABEL_BYTES = 16 << 20
MAX_LABEL_LINES = 1_000_000
MAX_META_BYTES = 16 << 20  # a devkit meta.mat, unpacked (the devkit's is a few MiB)
CHUNK = 64  # images per preprocessing task
NUM_SYNSETS = 1000
# the preprocessing's version: raise it with any change to what load_image or preprocess
# write, so that the workflow redoes every cache (it is a param of rule preprocess)
PREPROCESS_VERSION = 1
# the resampling filters a model's ``interpolation`` may name (torchvision's published
# weights use these two) and the PIL filter each is: torchvision resizes a PIL image with
# PIL's own filter of the same name, which antialiases when it shrinks
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
DEFAULT_INTERPOLATION = "bilinear"


def cache_name(resize, crop, interpolation=DEFAULT_INTERPOLATION):
    """The tensor cache's file name, without ``.npy``: ``{resize}-{crop}`` for bilinear
    (the name every cache had before other filters), ``{resize}-{crop}-{interpolation}``
    for the others, so that caches made with different filters never share a file."""
    suffix = "" if interpolation == DEFAULT_INTERPOLATION else f"-{interpolation}"
    return f"{resize}-{crop}{suffix}"


# --- synthetic data ---


def make_synthetic(out_dir, images, seed, classes=1000):
    """Write ``images`` deterministic JPEGs to ``out_dir``; return rows [(file, label)].

    Image ``i`` depends only on (seed, i), so a smaller set is a prefix of a larger one and
    the same seed gives the same bytes. Sizes run from 60 to 700 px per side, every fifth
    image is greyscale (as a few ImageNet images are), and each holds a gradient, shapes
    and noise so that decoding and resizing do real work. Labels are drawn uniformly from
    ``range(classes)``.
    """
    if not _is_number(str(images)) or int(images) < 1:
        raise UserError(f"dataset.images is {images!r}; a synthetic data set needs a positive whole number")
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
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, size=(height, width, 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    return image.convert("L") if grey else image


# --- ImageNet validation directories ---


def index_imagenet(root, labels=None, synsets=None, images="all", devkit_meta=None):
    """Rows [(file, label)] for an ImageNet validation directory, sorted by file name.

    Two layouts: flat files with a ``labels`` file, or one folder per synset
    (``n01440764/*.JPEG``). The labels file is one of (told apart by ``label_layout``):
    ``<file name> <class index>`` lines (val_map.txt); the ILSVRC2012 devkit's
    ILSVRC2012_validation_ground_truth.txt (line i holds the ILSVRC2012_ID of
    ILSVRC2012_val_<i, 8 digits>.JPEG, in the devkit's own class order, which
    ``devkit_meta``, its meta.mat, maps to WNIDs); or Kaggle's LOC_val_solution.csv
    (``ImageId,PredictionString``, the string starting with the WNID; the file is ImageId
    + .JPEG). A WNID's label is its position in the class order (``class_order``). Every
    image of a flat folder needs exactly one valid line: any disagreement stops with one
    error listing the offending lines. Sorting by file name (then path) keeps the first N
    of either layout the same images. ``images`` is "all" or N (the first N rows).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset.root {root} is not a directory; set dataset.root to the ImageNet validation folder")
    synsets = Path(synsets) if synsets else None
    devkit_meta = Path(devkit_meta) if devkit_meta else None
    if labels:
        rows = _index_flat(root, Path(labels), synsets, devkit_meta)
    else:
        rows = _index_folders(root, synsets, devkit_meta)
    if not rows:
        raise UserError(
            f"no images found under dataset.root {root}; point dataset.root at the folder"
            " of JPEGs (with dataset.labels) or of synset folders"
        )
    rows.sort(key=lambda row: (Path(row[0]).name, row[0]))
    return select(rows, images, f"dataset.root {root}")


# the label file layouts, as the index log and the errors name them
LAYOUTS = {
    "val_map": "'<file name> <class index>' lines (val_map.txt)",
    "devkit": "the ILSVRC2012 devkit's validation ground truth",
    "loc_csv": "Kaggle's LOC_val_solution.csv",
}
LOC_HEADER = "ImageId,PredictionString"
DEVKIT_IMAGE = "ILSVRC2012_val_{:08d}.JPEG"  # the image of ground-truth line i
LISTED = 20  # offending lines a disagreement error lists before counting the rest


def label_layout(labels):
    """The layout of a labels file, a key of LAYOUTS, from its first non-blank line."""
    first = _first_line(labels)
    if first.replace(" ", "") == LOC_HEADER:
        return "loc_csv"
    if _is_number(first):
        return "devkit"
    return "val_map"


def _first_line(labels):
    with Path(labels).open(encoding="utf-8-sig", errors="replace") as f:
        return next((line.strip() for line in f if line.strip()), "")


def _lines(labels):
    """(line number, line) of a label file, read as it is used (no copy of the whole file)."""
    with Path(labels).open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            yield number, line.rstrip("\r\n")


def _checked_size(path, key, limit, what):
    """Refuse a file over ``limit`` bytes before reading it (a crafted one could fill the memory)."""
    size = path.stat().st_size
    if size > limit:
        raise UserError(
            f"{key} {path} is {size / 2**20:.1f} MiB, more than the {limit >> 20} MiB {what} may be;"
            f" set {key} to the right file"
        )


def _checked_label_file(path, key):
    """Refuse a label or synsets file over MAX_LABEL_BYTES or MAX_LABEL_LINES before parsing it."""
    _checked_size(path, key, MAX_LABEL_BYTES, "a label file")
    lines = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
    if lines > MAX_LABEL_LINES:
        raise UserError(
            f"{key} {path} has {lines:,} lines, more than the {MAX_LABEL_LINES:,} a label file may have;"
            f" set {key} to the right file"
        )


def _index_flat(root, labels, synsets=None, devkit_meta=None):
    """Rows from a labels file (any of LAYOUTS), files relative to ``root``.

    Checks the file against the images in ``root`` and raises one UserError listing every
    disagreement (see _disagreement). The file is read line by line and only the first
    LISTED problems are kept: its memory is bounded by its size (MAX_LABEL_BYTES and
    MAX_LABEL_LINES).
    """
    if not labels.is_file():
        raise UserError(
            f"dataset.labels {labels} does not exist; set dataset.labels to the label file"
            " (val_map.txt, ILSVRC2012_validation_ground_truth.txt or LOC_val_solution.csv)"
        )
    _checked_label_file(labels, "dataset.labels")
    if not _first_line(labels):
        raise UserError(
            f"dataset.labels {labels} is empty; set dataset.labels to the label file of the images in dataset.root"
        )
    layout = label_layout(labels)
    problems = _Problems()
    if layout == "devkit":
        entries = _devkit_entries(labels, synsets, devkit_meta, problems)
    elif layout == "loc_csv":
        entries = _loc_entries(labels, synsets, devkit_meta, problems)
    else:
        entries = _val_map_entries(labels, problems)
    rows = _match_images(root, entries, problems)
    if problems:
        raise _disagreement(labels, layout, root, problems)
    return rows


class _Problems:
    """The disagreements of a label file: the first LISTED in line order, and their count.

    ``add(line number, text)``; problems of one line keep the order they were added in, and
    those without a line (``math.inf``) come last.
    """

    def __init__(self):
        self.count = 0
        self._kept = []  # a heap of (-line, -order, text): the last kept on top

    def add(self, number, text):
        self.count += 1
        item = (-number, -self.count, text)
        if len(self._kept) < LISTED:
            heapq.heappush(self._kept, item)
        elif item > self._kept[0]:
            heapq.heapreplace(self._kept, item)

    def first(self):
        return [text for _, _, text in sorted(self._kept, reverse=True)]

    def __bool__(self):
        return self.count > 0


def _val_map_entries(labels, problems):
    """(line number, file name, class index or None) of ``<file name> <class index>`` lines."""
    for number, line in _lines(labels):
        fields = line.split()
        if not fields:
            continue
        label = None
        if len(fields) != 2 or not _is_number(fields[1]):
            problems.add(number, f"line {number} reads {_excerpt(line.strip())}, not '<file name> <class index 0-999>'")
        elif int(fields[1]) >= NUM_SYNSETS:
            problems.add(number, f"line {number} gives class index {fields[1]}, outside 0-999")
        else:
            label = int(fields[1])
        yield number, fields[0], label


def _devkit_entries(labels, synsets, devkit_meta, problems):
    """Entries of the devkit's ground truth: line i labels ILSVRC2012_val_<i>.JPEG.

    Blank lines at the end are ignored; inside, they are malformed lines.
    """
    if devkit_meta is None:
        raise UserError(
            f"dataset.labels {labels} holds ILSVRC2012_IDs (the devkit's"
            " ILSVRC2012_validation_ground_truth.txt), whose order is the devkit's own;"
            " set dataset.devkit_meta to the devkit's data/meta.mat, which maps them to WNIDs"
        )
    wnid_of = read_devkit_meta(devkit_meta)
    position = _positions(class_order(synsets, None, wnid_of.values(), None))
    blank_from = None  # the first of the blank lines seen since the last ID
    for number, line in _lines(labels):
        text = line.strip()
        if not text:
            blank_from = number if blank_from is None else blank_from
            continue
        for blank in range(blank_from or number, number):  # blank lines before this one
            yield _devkit_entry(blank, "", wnid_of, position, problems)
        blank_from = None
        yield _devkit_entry(number, text, wnid_of, position, problems)


def _devkit_entry(number, text, wnid_of, position, problems):
    label = None
    if not _is_number(text):
        problems.add(number, f"line {number} reads {_excerpt(text)}, not one ILSVRC2012_ID 1-1000")
    elif int(text) not in wnid_of:
        problems.add(number, f"line {number} gives ILSVRC2012_ID {text}, outside 1-1000")
    elif wnid_of[int(text)] not in position:
        problems.add(
            number,
            f"line {number} gives ILSVRC2012_ID {text}, whose WNID {wnid_of[int(text)]} is not in dataset.synsets",
        )
    else:
        label = position[wnid_of[int(text)]]
    return number, DEVKIT_IMAGE.format(number), label


def _loc_entries(labels, synsets, devkit_meta, problems):
    """Entries of ``ImageId,PredictionString`` lines whose string starts with the WNID.

    Two passes over the file: the WNIDs it names (which may give the class order), then
    the entries.
    """
    found = {wnid for _, _, wnid, _ in _loc_lines(labels) if wnid}
    what = f"dataset.labels {labels} names {len(found)} WNIDs"
    position = _positions(class_order(synsets, devkit_meta, found, what))
    source = _order_source(synsets, devkit_meta)
    for number, name, wnid, malformed in _loc_lines(labels):
        if malformed:
            problems.add(number, malformed)
        label = position.get(wnid)
        if wnid and label is None:
            problems.add(number, f"line {number} gives WNID {wnid}, which is not a class of {source}")
        yield number, name, label


def _loc_lines(labels):
    """(line number, file name or None, WNID or None, the problem of a malformed line or None)."""
    header = True
    for number, line in _lines(labels):
        text = line.strip()
        if not text or header:
            header = header and not text
            continue
        image_id, comma, prediction = text.partition(",")
        image_id = (image_id.split() or [""])[0]
        wnid = (prediction.split() or [""])[0]
        malformed = None
        if not comma or not image_id or not _is_wnid(wnid):
            malformed = f"line {number} reads {_excerpt(text)}, not 'ImageId,WNID ...'"
            wnid = None
        yield number, f"{image_id}.JPEG" if image_id else None, wnid, malformed


def _is_number(text):
    """Whether ``text`` is a whole number in ASCII digits (``'²'.isdigit()`` is true, ``int('²')`` fails)."""
    return re.fullmatch(r"[0-9]+", text) is not None


def _is_wnid(text):
    return len(text) == 9 and text[0] == "n" and _is_number(text[1:])


# characters a file name in index.tsv cannot hold: controls (tab, newline, ...), lone
# surrogates (undecodable bytes) and the line and paragraph separators splitlines() splits on
UNWRITABLE = {"Cc", "Cs", "Zl", "Zp"}


def _has_control(text):
    return any(unicodedata.category(ch) in UNWRITABLE for ch in text)


def _shown(name):
    """A file name as an error sentence shows it: quoted and escaped if it holds a control character."""
    return ascii(name) if _has_control(name) else name


def _excerpt(text, limit=80):
    """``repr`` of a label line for an error sentence, shortened past ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _name_problem(name):
    """Why a label file's ``name`` cannot be an image of dataset.root (None: it can)."""
    if name in (".", "..") or "/" in name or (os.altsep and os.altsep in name):
        return "which is not a file name in dataset.root (label files name each image by its file name alone)"
    if _has_control(name):
        return "which holds a control character that index.tsv cannot hold; rename the image and its line"
    return None


def _match_images(root, entries, problems):
    """Rows of the valid entries; adds each missing, repeated and unlabelled image to problems.

    An entry whose label is None was reported already: its file only counts as labelled.
    An entry's name is a file of ``root`` itself, never a path (``../x``, ``/etc/x``): the
    index holds no file outside dataset.root. A symbolic link in dataset.root is the user's
    own and is followed.
    """
    rows, first_line = [], {}
    for number, name, label in entries:
        if name is None:
            continue
        if name in first_line:
            problems.add(number, f"line {number} repeats {_shown(name)} (first on line {first_line[name]})")
            continue
        first_line[name] = number
        if label is None:
            continue
        why = _name_problem(name)
        if why:
            problems.add(number, f"line {number} names {_shown(name)}, {why}")
            continue
        path = root / name
        if not path.is_file():
            problems.add(number, f"line {number} names {name}, which is not in dataset.root")
            continue
        rows.append((os.path.abspath(path), label))
    unlabelled = sorted(
        p.name
        for p in root.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in first_line and p.is_file()
    )
    for name in unlabelled:
        problems.add(math.inf, f"{_shown(name)} in dataset.root has no line")
    return rows


def _disagreement(labels, layout, root, problems):
    """One UserError listing the first LISTED problems and counting the rest."""
    listed = "; ".join(problems.first())
    if problems.count > LISTED:
        listed += f"; and {problems.count - LISTED} more"
    places = "1 place" if problems.count == 1 else f"{problems.count} places"
    return UserError(
        f"dataset.labels {labels} ({LAYOUTS[layout]}) does not match the images in"
        f" dataset.root {root} in {places}: {listed}; fix dataset.labels or dataset.root"
        " so that each image has exactly one valid line"
    )


def read_devkit_meta(path):
    """{ILSVRC2012_ID: WNID} of the 1,000 leaf classes (IDs 1-1000) of a devkit meta.mat.

    Only its ``synsets`` variable is read, and only once the file is known to unpack to at
    most MAX_META_BYTES (a compressed variable can unpack a thousandfold).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"dataset.devkit_meta {path} does not exist;"
            " set dataset.devkit_meta to the ILSVRC2012 devkit's data/meta.mat"
        )
    _checked_size(path, "dataset.devkit_meta", MAX_META_BYTES, "the devkit's meta.mat")
    if _mat_unpacks_past(path, MAX_META_BYTES):
        raise UserError(
            f"dataset.devkit_meta {path} unpacks to more than {MAX_META_BYTES >> 20} MiB, which the"
            " devkit's meta.mat does not; set dataset.devkit_meta to the ILSVRC2012 devkit's data/meta.mat"
        )
    try:
        import scipy.io
    except ImportError:
        raise UserError(
            "dataset.devkit_meta is read with scipy, which is not installed;"
            " run `make env` (scipy is in envs/requirements-main.txt)"
        ) from None
    not_meta = f"dataset.devkit_meta {path} is not the ILSVRC2012 devkit's meta.mat"
    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True, variable_names=["synsets"]).get("synsets")
    except (
        scipy.io.matlab.MatReadError,
        OSError,
        ValueError,
        TypeError,
        NotImplementedError,
        MemoryError,
    ) as err:
        raise UserError(
            f"{not_meta} (scipy cannot read it: {err.__class__.__name__}: {err});"
            " set dataset.devkit_meta to the devkit's data/meta.mat"
        ) from None
    names = getattr(getattr(synsets, "dtype", None), "names", None) or ()
    if "ILSVRC2012_ID" not in names or "WNID" not in names:
        raise UserError(
            f"{not_meta} (it has no 'synsets' struct array with fields ILSVRC2012_ID and"
            " WNID); set dataset.devkit_meta to the devkit's data/meta.mat"
        )
    wnid_of = {}
    for entry in np.atleast_1d(synsets):
        ids = np.asarray(entry["ILSVRC2012_ID"]).ravel()
        wnids = np.asarray(entry["WNID"]).ravel()
        if ids.size == 1 and wnids.size == 1 and 1 <= int(ids[0]) <= NUM_SYNSETS:
            wnid_of[int(ids[0])] = str(wnids[0]).strip()
    if len(wnid_of) != NUM_SYNSETS or len(set(wnid_of.values())) != NUM_SYNSETS:
        raise UserError(
            f"{not_meta}: it gives {len(set(wnid_of.values()))} distinct WNIDs to the"
            f" ILSVRC2012_IDs 1-{NUM_SYNSETS}, not {NUM_SYNSETS};"
            " set dataset.devkit_meta to the devkit's data/meta.mat"
        )
    return dict(sorted(wnid_of.items()))


def _mat_unpacks_past(path, limit):
    """Whether the variables of a MATLAB 5 file unpack to more than ``limit`` bytes in all.

    Each compressed variable is inflated a block at a time and thrown away: only its size is
    counted, so that a crafted file cannot fill the memory before scipy reads it. A file that
    is not MATLAB 5 (too short, another version) is left to scipy to refuse.
    """
    with path.open("rb") as f:
        header = f.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            return False
        order = "<" if header[126:128] == b"IM" else ">"
        total = 0
        while len(tag := f.read(8)) == 8:
            kind, size = struct.unpack(order + "II", tag)
            if kind >> 16:  # a small element: its data is in the tag
                total += 4
            elif kind == 15:  # miCOMPRESSED: a zlib stream of ``size`` bytes
                inflate = zlib.decompressobj()
                left = size
                while left > 0 and (block := f.read(min(left, 1 << 16))):
                    left -= len(block)
                    while block:
                        try:
                            total += len(inflate.decompress(block, 1 << 20))
                        except zlib.error:
                            return False  # scipy will say what is wrong with it
                        if total > limit:
                            return True
                        block = inflate.unconsumed_tail
            else:
                total += size
                f.seek(size, os.SEEK_CUR)
            if total > limit:
                return True
    return False


def class_order(synsets, devkit_meta, found, found_what):
    """The WNIDs in class-index order: dataset.synsets's order, else sorted.

    Sorted are the devkit's 1,000 leaf WNIDs (``devkit_meta``), else the WNIDs ``found``
    in the data when there are all 1,000 (``found_what`` says where, for the error).
    """
    if synsets:
        return _read_synsets(synsets)
    if devkit_meta:
        return sorted(read_devkit_meta(devkit_meta).values())
    found = sorted(set(found))
    if len(found) != NUM_SYNSETS:
        raise UserError(
            f"{found_what}, not {NUM_SYNSETS}, so their sorted order cannot give the labels;"
            " set dataset.synsets to the list of the 1,000 synsets"
            " (or dataset.devkit_meta to the devkit's meta.mat)"
        )
    return found


def _order_source(synsets, devkit_meta):
    """What gave the class order, for errors."""
    if synsets:
        return f"dataset.synsets {synsets}"
    if devkit_meta:
        return f"dataset.devkit_meta {devkit_meta}"
    return "the 1,000 classes"


def _positions(order):
    return {wnid: i for i, wnid in enumerate(order)}


def _index_folders(root, synsets, devkit_meta=None):
    """Rows from one folder per synset, labelled by the synset's index (class_order)."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(
            f"dataset.root {root} has no synset folders; for a flat folder of images"
            " give dataset.labels (a '<file name> <class index>' file such as val_map.txt)"
        )
    what = f"dataset.root {root} has {len(folders)} class folders"
    position = _positions(class_order(synsets, devkit_meta, folders, what))
    rows = []
    for folder in folders:
        if folder not in position:
            raise UserError(
                f"folder {_shown(folder)} in dataset.root {root} is not a class of"
                f" {_order_source(synsets, devkit_meta)}; remove the folder or fix"
                f" {'dataset.synsets' if synsets else 'dataset.devkit_meta'}"
            )
        for path in sorted((root / folder).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                if _has_control(path.name):
                    raise UserError(
                        f"{_shown(str(path))} in dataset.root has a control character in its name, which"
                        " index.tsv cannot hold; rename the file or move it out of dataset.root"
                    )
                rows.append((os.path.abspath(path), position[folder]))
    return rows


def _read_synsets(path):
    """The synset ids, in file order, of a ``nXXXXXXXX name...`` file."""
    if not path.is_file():
        raise UserError(f"dataset.synsets {path} does not exist; set dataset.synsets to the list of the 1,000 synsets")
    _checked_label_file(path, "dataset.synsets")
    order = [line.split()[0] for _, line in _lines(path) if line.strip()]
    if len(order) != NUM_SYNSETS or len(set(order)) != NUM_SYNSETS:
        raise UserError(
            f"dataset.synsets {path} lists {len(order)} synsets ({len(set(order))} distinct),"
            f" not {NUM_SYNSETS}; give the full list in label order, each synset once"
        )
    return order


def select(rows, images, where):
    """The first ``images`` rows ("all" or a count); ``where`` names the source in errors."""
    if str(images) == "all":
        return rows
    if not _is_number(str(images)) or int(images) < 1:
        raise UserError(f"dataset.images is {images!r}; set it to all or a positive whole number")
    count = int(images)
    if count > len(rows):
        raise UserError(
            f"dataset.images is {count} but {where} holds only {len(rows)} images; lower dataset.images or use all"
        )
    return rows[:count]


# --- the index file ---


def write_index(path, rows):
    """Write rows as a TSV with header ``file\\tlabel`` (absolute paths), atomically.

    A path holding a control character (a tab or a line break would add rows) is refused.
    """
    lines = ["file\tlabel"]
    for file, label in rows:
        file = os.path.abspath(file)
        if _has_control(file):
            raise UserError(
                f"{_shown(file)} holds a control character, which {path} cannot hold;"
                " rename it (or the folder of dataset.root that holds it)"
            )
        lines.append(f"{file}\t{int(label)}")
    atomic_write(path, "\n".join(lines) + "\n")


def write_bad_images(path, bad):
    """Write [(file, why)] as bad_images.tsv (header ``file\\treason``), one line per image."""
    atomic_write(path, "file\treason\n" + "".join(f"{_one_line(file)}\t{_one_line(why)}\n" for file, why in bad))


def read_index(path):
    """Rows [(file, label)] of an index TSV written by ``write_index``."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "file\tlabel":
        raise UserError(
            f"{path} is not an infbench index (its header is not 'file<TAB>label'); delete it so that it is rebuilt"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        file, _, label = line.rpartition("\t")
        if not file or not _is_number(label):
            raise UserError(f"{path} line {number} is not '<file><TAB><label>'; delete it so that it is rebuilt")
        rows.append((file, int(label)))
    return rows


# --- preprocessing ---


def load_image(path, resize, crop, interpolation=DEFAULT_INTERPOLATION):
    """uint8 HWC RGB pixels of ``path`` as torchvision's ImageClassification preset sees them.

    Same steps and rounding as torchvision.transforms.functional on a PIL image: the shorter
    side becomes ``resize`` and the longer ``int(resize * long / short)`` (with the
    ``interpolation`` of INTERPOLATIONS, which PIL antialiases), then a ``crop`` square at
    top = round((h - crop) / 2), likewise left.
    An image the scan would call unreadable (``_decode``), or one that runs out of memory,
    raises the unreadable image's UserError; a resize past MAX_PIXELS is refused before it.
    """
    if crop > resize:
        raise UserError(f"crop {crop} is larger than resize {resize}; set the model's resize to at least its crop")
    if interpolation not in INTERPOLATIONS:
        raise UserError(
            f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}; fix the model's interpolation"
        )
    image, reason = _decode(path)
    if image is None:
        raise UserError(
            f"{path} cannot be read as an image ({reason}); replace it, remove it from the"
            " data set, or set dataset.bad_images: skip to leave unreadable images out"
        )
    size = resized_size(image.size, resize)
    if size[0] * size[1] > MAX_PIXELS:
        raise UserError(
            f"resizing {path} ({image.size[0]}x{image.size[1]}) to the model's resize {resize} would make"
            f" {size[0]}x{size[1]} pixels, more than the {MAX_PIXELS:,} an image may have; lower that resize"
        )
    try:
        if size != image.size:
            image = image.resize(size, INTERPOLATIONS[interpolation])
        width, height = image.size
        top = int(round((height - crop) / 2.0))
        left = int(round((width - crop) / 2.0))
        return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
    except MemoryError:
        raise UserError(
            f"{path} cannot be read as an image (MemoryError while resizing it to {size[0]}x{size[1]});"
            " free memory (fewer workers), or remove it from the data set"
        ) from None


def resized_size(size, resize):
    """(width, height) after the shorter side becomes ``resize``, as torchvision computes it."""
    width, height = size
    short, long = min(width, height), max(width, height)
    new_short, new_long = resize, int(resize * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _decode(path):
    """(RGB image, None), or (None, why) for a file the decoder cannot read: any exception
    of PIL's decoders counts (truncated, empty, not an image, out of memory...), and so does
    a file that is not one of IMAGE_FORMATS or is too large (``_too_large``), refused from
    its header before any pixel is decoded. ``why`` is one line."""
    try:
        size = os.stat(path).st_size
        if size > MAX_IMAGE_BYTES:
            return None, f"too large: a file of {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} an image may have"
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its own limit; MAX_PIXELS is below it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as opened:
                why = _too_large(opened.size)
                if why:
                    return None, why
                return opened.convert("RGB"), None
    except Exception as err:  # noqa: BLE001 - every decoder failure is the file's (MemoryError too)
        return None, _one_line(f"{err.__class__.__name__}: {err}" if str(err) else err.__class__.__name__)


def _too_large(size):
    """Why an image of ``size`` (from its header) is refused before decoding, or None."""
    width, height = size
    if width * height > MAX_PIXELS:
        return f"too large: {width}x{height} pixels, more than the {MAX_PIXELS:,} an image may have"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"too large: {width}x{height} pixels, one side more than {MAX_ASPECT} times the other,"
            " which resizing would blow up"
        )
    return None


def _one_line(text):
    """``text`` with every control character escaped: one line, one field of a TSV."""
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch) in UNWRITABLE else ch for ch in text)


def _scan_chunk(files):
    return [(file, why) for file in files for _, why in [_decode(file)] if why is not None]


def scan_images(files, workers=1):
    """Decode every file once; [(file, why)] for each one that cannot be read, in order."""
    chunks = [files[start : start + CHUNK] for start in range(0, len(files), CHUNK)]
    progress, bad = Progress("scan for unreadable images", len(files)), []
    pooled = workers > 1 and len(chunks) > 1
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) if pooled else nullcontext() as pool:
        for i, found in enumerate((pool.map if pooled else map)(_scan_chunk, chunks)):  # in order
            bad += found
            progress.update(min((i + 1) * CHUNK, len(files)))
    return bad


def bad_images_error(bad, total, shown=20):
    """The one sentence that lists every unreadable image (the first ``shown`` and a count)."""
    listed = "; ".join(f"{file} ({why})" for file, why in bad[:shown])
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return (
        f"{len(bad)} of {total} images cannot be read: {listed}{more}. Replace or remove them,"
        " or set dataset.bad_images: skip to leave them out of every cell"
    )


def preprocess(rows, resize, crop, out_npy, workers=1, interpolation=DEFAULT_INTERPOLATION):
    """Write every row's pixels, in index order, to ``out_npy`` (uint8, N x crop x crop x 3),
    resized with ``interpolation`` (``load_image``).

    The array is a .npy memmap filled in chunks by ``workers`` processes, under a temporary
    name that replaces ``out_npy`` only when complete. Read it with np.load(mmap_mode="r").
    """
    out_npy = Path(out_npy)
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    files = [str(file) for file, _ in rows]
    if not files:
        raise UserError("the data set index is empty; set dataset.images to at least 1")
    check_free_space(out_npy, len(files) * crop * crop * 3 + 4096)  # pixels and .npy header
    with atomic_output(out_npy) as tmp:
        cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), crop, crop, 3))
        del cache  # header and size are on disk; workers open it themselves
        chunks = [
            (tmp, start, files[start : start + CHUNK], resize, crop, interpolation)
            for start in range(0, len(files), CHUNK)
        ]
        if workers <= 1:
            progress = Progress("preprocess", len(files))
            for chunk in chunks:
                _fill_chunk(*chunk)
                progress.update(chunk[1] + len(chunk[2]))
        else:
            _fill_in_pool(chunks, workers, len(files))
    return out_npy


def _fill_in_pool(chunks, workers, total):
    """Run the chunks on a process pool; the first failure cancels the rest.

    Workers are forked: they need nothing but this module, and unlike spawn, fork does not
    re-import the caller's main module (which breaks ``python -`` and Snakemake script
    directives). preprocess.py starts no threads before forking.
    """
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = {pool.submit(_fill_chunk, *chunk): len(chunk[2]) for chunk in chunks}
        progress, done = Progress("preprocess", total), 0
        try:
            for future in as_completed(futures):
                future.result()
                done += futures[future]
                progress.update(done)
        except BaseException:
            # cancel what has not started; leaving the block waits for the running chunks
            # (shutdown(wait=False) here made CPython print an OSError at exit now and then)
            for future in futures:
                future.cancel()
            raise


def _fill_chunk(npy, start, files, resize, crop, interpolation):
    """Decode ``files`` into rows ``start...`` of the memmap ``npy`` (in a worker process)."""
    cache = np.load(npy, mmap_mode="r+")
    for offset, file in enumerate(files):
        cache[start + offset] = load_image(file, resize, crop, interpolation)
    cache.flush()
    release_rows(cache, start, start + len(files))  # written: let the pages go from this worker
