"""The data set side: make or index labelled JPEGs, and preprocess them into one uint8 cache.

An index is a list of rows ``(file, label)`` with absolute file paths, in a fixed order that
every later step keeps (the cache, labels.npy and the per-image predictions line up by
position). Preprocessing reproduces torchvision's ``ImageClassification`` preset up to (not
including) the float conversion: decode, convert("RGB"), resize the shorter side (bilinear,
PIL antialiases), centre crop. Runtimes normalise in their ``stage`` step.
"""

import math
import os
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
    with Path(labels).open(encoding="utf-8-sig", errors="replace") as f:
        first = next((line.strip() for line in f if line.strip()), "")
    if first.replace(" ", "") == LOC_HEADER:
        return "loc_csv"
    if first.isdigit():
        return "devkit"
    return "val_map"


def _index_flat(root, labels, synsets=None, devkit_meta=None):
    """Rows from a labels file (any of LAYOUTS), files relative to ``root``.

    Checks the file against the images in ``root`` and raises one UserError listing every
    disagreement (see _disagreement).
    """
    if not labels.is_file():
        raise UserError(
            f"dataset.labels {labels} does not exist; set dataset.labels to the label file"
            " (val_map.txt, ILSVRC2012_validation_ground_truth.txt or LOC_val_solution.csv)"
        )
    layout = label_layout(labels)
    lines = labels.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    if not any(line.strip() for line in lines):
        raise UserError(
            f"dataset.labels {labels} is empty; set dataset.labels to the label file of the images in dataset.root"
        )
    problems = []  # (line number, sentence fragment)
    if layout == "devkit":
        entries = _devkit_entries(labels, lines, synsets, devkit_meta, problems)
    elif layout == "loc_csv":
        entries = _loc_entries(labels, lines, synsets, devkit_meta, problems)
    else:
        entries = _val_map_entries(lines, problems)
    rows = _match_images(root, entries, problems)
    if problems:
        raise _disagreement(labels, layout, root, problems)
    return rows


def _val_map_entries(lines, problems):
    """(line number, file name, class index or None) of ``<file name> <class index>`` lines."""
    entries = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        label = None
        if len(fields) != 2 or not fields[1].isdigit():
            problems.append(
                (
                    number,
                    f"line {number} reads {line.strip()!r}, not '<file name> <class index 0-999>'",
                )
            )
        elif int(fields[1]) >= NUM_SYNSETS:
            problems.append((number, f"line {number} gives class index {fields[1]}, outside 0-999"))
        else:
            label = int(fields[1])
        entries.append((number, fields[0], label))
    return entries


def _devkit_entries(labels, lines, synsets, devkit_meta, problems):
    """Entries of the devkit's ground truth: line i labels ILSVRC2012_val_<i>.JPEG."""
    if devkit_meta is None:
        raise UserError(
            f"dataset.labels {labels} holds ILSVRC2012_IDs (the devkit's"
            " ILSVRC2012_validation_ground_truth.txt), whose order is the devkit's own;"
            " set dataset.devkit_meta to the devkit's data/meta.mat, which maps them to WNIDs"
        )
    wnid_of = read_devkit_meta(devkit_meta)
    position = _positions(class_order(synsets, None, wnid_of.values(), None))
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    entries = []
    for number, line in enumerate(lines, start=1):
        text, label = line.strip(), None
        if not text.isdigit():
            problems.append((number, f"line {number} reads {text!r}, not one ILSVRC2012_ID 1-1000"))
        elif int(text) not in wnid_of:
            problems.append((number, f"line {number} gives ILSVRC2012_ID {text}, outside 1-1000"))
        elif wnid_of[int(text)] not in position:
            problems.append(
                (
                    number,
                    f"line {number} gives ILSVRC2012_ID {text}, whose WNID"
                    f" {wnid_of[int(text)]} is not in dataset.synsets",
                )
            )
        else:
            label = position[wnid_of[int(text)]]
        entries.append((number, DEVKIT_IMAGE.format(number), label))
    return entries


def _loc_entries(labels, lines, synsets, devkit_meta, problems):
    """Entries of ``ImageId,PredictionString`` lines whose string starts with the WNID."""
    parsed = []  # (line number, file name, WNID or None)
    header = True
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or header:
            header = header and not text
            continue
        image_id, comma, prediction = text.partition(",")
        image_id = (image_id.split() or [""])[0]
        wnid = (prediction.split() or [""])[0]
        if not comma or not image_id or not _is_wnid(wnid):
            problems.append((number, f"line {number} reads {text!r}, not 'ImageId,WNID ...'"))
            wnid = None
        parsed.append((number, f"{image_id}.JPEG" if image_id else None, wnid))
    found = {wnid for _, _, wnid in parsed if wnid}
    what = f"dataset.labels {labels} names {len(found)} WNIDs"
    position = _positions(class_order(synsets, devkit_meta, found, what))
    source = _order_source(synsets, devkit_meta)
    entries = []
    for number, name, wnid in parsed:
        label = position.get(wnid)
        if wnid and label is None:
            problems.append(
                (
                    number,
                    f"line {number} gives WNID {wnid}, which is not a class of {source}",
                )
            )
        entries.append((number, name, label))
    return entries


def _is_wnid(text):
    return len(text) == 9 and text[0] == "n" and text[1:].isdigit()


def _match_images(root, entries, problems):
    """Rows of the valid entries; adds each missing, repeated and unlabelled image to problems.

    An entry whose label is None was reported already: its file only counts as labelled.
    """
    rows, first_line = [], {}
    for number, name, label in entries:
        if name is None:
            continue
        if name in first_line:
            problems.append(
                (
                    number,
                    f"line {number} repeats {name} (first on line {first_line[name]})",
                )
            )
            continue
        first_line[name] = number
        if label is None:
            continue
        path = root / name
        if not path.is_file():
            problems.append((number, f"line {number} names {name}, which is not in dataset.root"))
            continue
        rows.append((os.path.abspath(path), label))
    unlabelled = sorted(
        p.name
        for p in root.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in first_line and p.is_file()
    )
    problems.sort(key=lambda problem: problem[0])
    problems += [(math.inf, f"{name} in dataset.root has no line") for name in unlabelled]
    return rows


def _disagreement(labels, layout, root, problems):
    """One UserError listing the first LISTED problems and counting the rest."""
    listed = "; ".join(text for _, text in problems[:LISTED])
    if len(problems) > LISTED:
        listed += f"; and {len(problems) - LISTED} more"
    places = "1 place" if len(problems) == 1 else f"{len(problems)} places"
    return UserError(
        f"dataset.labels {labels} ({LAYOUTS[layout]}) does not match the images in"
        f" dataset.root {root} in {places}: {listed}; fix dataset.labels or dataset.root"
        " so that each image has exactly one valid line"
    )


def read_devkit_meta(path):
    """{ILSVRC2012_ID: WNID} of the 1,000 leaf classes (IDs 1-1000) of a devkit meta.mat."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"dataset.devkit_meta {path} does not exist;"
            " set dataset.devkit_meta to the ILSVRC2012 devkit's data/meta.mat"
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
        synsets = scipy.io.loadmat(str(path), squeeze_me=True).get("synsets")
    except (
        scipy.io.matlab.MatReadError,
        OSError,
        ValueError,
        TypeError,
        NotImplementedError,
    ) as err:
        raise UserError(
            f"{not_meta} (scipy cannot read it: {err}); set dataset.devkit_meta to the devkit's data/meta.mat"
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
                f"folder {folder} in dataset.root {root} is not a class of"
                f" {_order_source(synsets, devkit_meta)}; remove the folder or fix"
                f" {'dataset.synsets' if synsets else 'dataset.devkit_meta'}"
            )
        for path in sorted((root / folder).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                rows.append((os.path.abspath(path), position[folder]))
    return rows


def _read_synsets(path):
    """The synset ids, in file order, of a ``nXXXXXXXX name...`` file."""
    if not path.is_file():
        raise UserError(f"dataset.synsets {path} does not exist; set dataset.synsets to the list of the 1,000 synsets")
    order = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
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
    if not str(images).isdigit() or int(images) < 1:
        raise UserError(f"dataset.images is {images!r}; set it to all or a positive whole number")
    count = int(images)
    if count > len(rows):
        raise UserError(
            f"dataset.images is {count} but {where} holds only {len(rows)} images; lower dataset.images or use all"
        )
    return rows[:count]


# --- the index file ---


def write_index(path, rows):
    """Write rows as a TSV with header ``file\\tlabel`` (absolute paths), atomically."""
    lines = ["file\tlabel"]
    lines += [f"{os.path.abspath(file)}\t{int(label)}" for file, label in rows]
    atomic_write(path, "\n".join(lines) + "\n")


def read_index(path):
    """Rows [(file, label)] of an index TSV written by ``write_index``."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or lines[0] != "file\tlabel":
        raise UserError(
            f"{path} is not an infbench index (its header is not 'file<TAB>label'); delete it so that it is rebuilt"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        file, _, label = line.rpartition("\t")
        if not file or not label.isdigit():
            raise UserError(f"{path} line {number} is not '<file><TAB><label>'; delete it so that it is rebuilt")
        rows.append((file, int(label)))
    return rows


# --- preprocessing ---


def load_image(path, resize, crop):
    """uint8 HWC RGB pixels of ``path`` as torchvision's ImageClassification preset sees them.

    Same steps and rounding as torchvision.transforms.functional on a PIL image: the shorter
    side becomes ``resize`` and the longer ``int(resize * long / short)`` (BILINEAR, which
    PIL antialiases), then a ``crop`` square at top = round((h - crop) / 2), likewise left.
    """
    if crop > resize:
        raise UserError(f"crop {crop} is larger than resize {resize}; set the model's resize to at least its crop")
    image, reason = _decode(path)
    if image is None:
        raise UserError(
            f"{path} cannot be read as an image ({reason}); replace it, remove it from the"
            " data set, or set dataset.bad_images: skip to leave unreadable images out"
        )
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


def _decode(path):
    """(RGB image, None), or (None, why) for a file the decoder cannot read: any exception
    of PIL's decoders counts (truncated, empty, not an image, a decompression bomb...)."""
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB"), None
    except Exception as err:  # noqa: BLE001 - every decoder failure is the file's
        return None, f"{err.__class__.__name__}: {err}" if str(err) else err.__class__.__name__


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
    check_free_space(out_npy, len(files) * crop * crop * 3 + 4096)  # pixels and .npy header
    with atomic_output(out_npy) as tmp:
        cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), crop, crop, 3))
        del cache  # header and size are on disk; workers open it themselves
        chunks = [(tmp, start, files[start : start + CHUNK], resize, crop) for start in range(0, len(files), CHUNK)]
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


def _fill_chunk(npy, start, files, resize, crop):
    """Decode ``files`` into rows ``start...`` of the memmap ``npy`` (in a worker process)."""
    cache = np.load(npy, mmap_mode="r+")
    for offset, file in enumerate(files):
        cache[start + offset] = load_image(file, resize, crop)
    cache.flush()
    release_rows(cache, start, start + len(files))  # written: let the pages go from this worker
