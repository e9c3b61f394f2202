"""Data path: indexing, synthetic JPEGs, and preprocessing identical to torchvision's preset."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infbench.data import (
    index_imagenet,
    load_image,
    make_synthetic,
    preprocess,
    read_index,
    write_index,
)
from infbench.errors import UserError

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/imagenet-sample"
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "val_map.txt").is_file(),
    reason=f"ImageNet sample not found at {SAMPLE}",
)


def sample_labels():
    """{file name: class index} as val_map.txt gives them."""
    pairs = (
        line.split()
        for line in (SAMPLE / "val_map.txt").read_text().splitlines()
        if line.strip()
    )
    return {name: int(label) for name, label in pairs}


def varied_sample(count=40):
    """``count`` sample files: the greyscale ones, the smallest, largest, most elongated, others."""
    files = sorted((SAMPLE / "val").iterdir())
    heads = {f: Image.open(f) for f in files}
    info = {f: (im.mode, im.size) for f, im in heads.items()}
    for im in heads.values():
        im.close()
    grey = [f for f in files if info[f][0] != "RGB"]
    by_area = sorted(files, key=lambda f: info[f][1][0] * info[f][1][1])
    by_aspect = sorted(files, key=lambda f: max(info[f][1]) / min(info[f][1]))
    picked = []
    for f in grey + by_area[:5] + by_area[-5:] + by_aspect[-5:] + files:
        if f not in picked:
            picked.append(f)
    return picked[:count], grey


# --- (i) pixels identical to torchvision ---


@needs_sample
@pytest.mark.parametrize("resize,crop", [(256, 224), (342, 299)])
def test_pixels_match_torchvision_preset(resize, crop):
    import torch
    from torchvision.transforms import functional as F
    from torchvision.transforms._presets import ImageClassification

    preset = ImageClassification(crop_size=crop, resize_size=resize)
    files, grey = varied_sample()
    assert grey and set(grey) <= set(files)
    for file in files:
        with Image.open(file) as im:
            expected = preset(im.convert("RGB"))  # ImageFolder's loader converts to RGB
        ours = load_image(file, resize, crop)
        assert ours.shape == (crop, crop, 3) and ours.dtype == np.uint8
        # Apply the preset's own last two steps to our pixels: equal floats means equal pixels.
        tensor = F.convert_image_dtype(
            torch.from_numpy(ours.copy()).permute(2, 0, 1).contiguous(), torch.float
        )
        got = F.normalize(tensor, mean=preset.mean, std=preset.std)
        assert torch.equal(
            got, expected
        ), f"{file.name} differs from torchvision at {resize}/{crop}"


def generated_images(folder):
    """Images of every kind the loader meets, made here (no ../shared needed): odd sizes whose
    crop offset is a half pixel (200x337 -> 256x431: (431-224)/2 = 103.5), greyscale, CMYK,
    PNG content under a .JPEG name, 1x1 and 2000x40."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for name, mode, size, fmt in [
        ("odd-portrait.JPEG", "RGB", (200, 337), "JPEG"),
        ("odd-landscape.JPEG", "RGB", (337, 200), "JPEG"),
        ("odd-both.JPEG", "RGB", (301, 257), "JPEG"),
        ("grey.JPEG", "L", (260, 310), "JPEG"),
        ("cmyk.JPEG", "CMYK", (250, 333), "JPEG"),
        ("png-inside.JPEG", "RGBA", (280, 230), "PNG"),
        ("one-pixel.JPEG", "RGB", (1, 1), "JPEG"),
        ("thin.JPEG", "RGB", (2000, 40), "JPEG"),
    ]:
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w]
        channels = len(mode) if mode != "RGBA" else 4
        base = np.stack([(xx * (c + 1) * 3 + yy * (7 - c)) % 256 for c in range(channels)], axis=-1)
        noise = rng.integers(0, 40, base.shape)
        array = np.clip(base + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode)
        image.save(folder / name, format=fmt, quality=90)
        made.append(folder / name)
    return made


@pytest.mark.parametrize("resize,crop", [(256, 224), (342, 299)])
def test_pixels_match_torchvision_preset_on_generated_images(tmp_path, resize, crop):
    import torch
    from torchvision.transforms import functional as F
    from torchvision.transforms._presets import ImageClassification

    preset = ImageClassification(crop_size=crop, resize_size=resize)
    for file in generated_images(tmp_path / "images"):
        with Image.open(file) as im:
            expected = preset(im.convert("RGB"))
        ours = load_image(file, resize, crop)
        assert ours.shape == (crop, crop, 3) and ours.dtype == np.uint8
        tensor = F.convert_image_dtype(torch.from_numpy(ours.copy()).permute(2, 0, 1).contiguous(), torch.float)
        got = F.normalize(tensor, mean=preset.mean, std=preset.std)
        assert torch.equal(got, expected), f"{file.name} differs from torchvision at {resize}/{crop}"


# --- (ii) indexing the ImageNet sample ---


@needs_sample
def test_index_flat_layout_with_val_map():
    rows = index_imagenet(SAMPLE / "val", labels=SAMPLE / "val_map.txt")
    truth = sample_labels()
    assert len(rows) == 500
    assert [Path(f).name for f, _ in rows] == sorted(truth)
    assert all(Path(f).is_absolute() and Path(f).is_file() for f, _ in rows)
    assert all(label == truth[Path(f).name] for f, label in rows)
    first = index_imagenet(SAMPLE / "val", labels=SAMPLE / "val_map.txt", images=10)
    assert first == rows[:10]


@needs_sample
def test_index_folder_layout_matches_val_map(tmp_path):
    synsets = [
        line.split()[0] for line in (SAMPLE / "synsets.txt").read_text().splitlines()
    ]
    root = tmp_path / "val"
    for name, label in sample_labels().items():
        folder = root / synsets[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(SAMPLE / "val" / name)
    rows = index_imagenet(root, synsets=SAMPLE / "synsets.txt")
    flat = index_imagenet(SAMPLE / "val", labels=SAMPLE / "val_map.txt")
    assert [(Path(f).name, label) for f, label in rows] == [
        (Path(f).name, label) for f, label in flat
    ]
    # 500 folders cannot define the 1,000-class order on their own.
    with pytest.raises(UserError, match="has 500 class folders.*set dataset.synsets"):
        index_imagenet(root)


def test_index_round_trip(tmp_path):
    rows = [(str(tmp_path / "a b.JPEG"), 3), (str(tmp_path / "c.JPEG"), 999)]
    write_index(tmp_path / "index.tsv", rows)
    assert (tmp_path / "index.tsv").read_text().splitlines()[0] == "file\tlabel"
    assert read_index(tmp_path / "index.tsv") == rows


# --- (iii) synthetic data and the cache ---


def test_synthetic_is_deterministic_and_varied(tmp_path):
    rows = make_synthetic(tmp_path / "a", 25, seed=3)
    again = make_synthetic(tmp_path / "b", 25, seed=3)
    other = make_synthetic(tmp_path / "c", 5, seed=4)
    digest = [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f, _ in rows]
    assert digest == [
        hashlib.sha256(Path(f).read_bytes()).hexdigest() for f, _ in again
    ]
    assert [label for _, label in rows] == [label for _, label in again]
    assert digest[:5] != [
        hashlib.sha256(Path(f).read_bytes()).hexdigest() for f, _ in other
    ]
    assert make_synthetic(tmp_path / "d", 10, seed=3) == [
        (f.replace("/a/", "/d/"), l) for f, l in rows[:10]
    ]
    images = [Image.open(f) for f, _ in rows]
    assert all(im.format == "JPEG" for im in images)
    modes = [im.mode for im in images]
    assert modes.count("L") == 5 and modes.count("RGB") == 20
    sizes = {im.size for im in images}
    assert (
        len(sizes) == 25
        and min(min(s) for s in sizes) >= 60
        and max(max(s) for s in sizes) <= 700
    )
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert all(np.asarray(im).std() > 10 for im in images)  # not flat
    assert len({label for _, label in rows}) > 15 and all(
        0 <= label < 1000 for _, label in rows
    )


def test_preprocess_writes_the_cache(tmp_path):
    rows = make_synthetic(tmp_path / "img", 70, seed=0)  # more than one chunk of 64
    out = tmp_path / "cache" / "72-64.npy"
    preprocess(rows, 72, 64, out, workers=1)
    cache = np.load(out, mmap_mode="r")
    assert cache.shape == (70, 64, 64, 3) and cache.dtype == np.uint8
    assert np.array_equal(cache[0], load_image(rows[0][0], 72, 64))
    assert np.array_equal(cache[69], load_image(rows[69][0], 72, 64))
    assert sorted(p.name for p in out.parent.iterdir()) == ["72-64.npy"]
    # The entry points, with a process pool, give the same bytes.
    index = tmp_path / "index.tsv"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "index_dataset.py"),
            "--kind",
            "synthetic",
            "--images",
            "70",
            "--seed",
            "0",
            "--image-dir",
            str(tmp_path / "img2"),
            "--out",
            str(index),
            "--labels-out",
            str(tmp_path / "labels.npy"),
        ],
        check=True,
        capture_output=True,
    )
    assert np.array_equal(
        np.load(tmp_path / "labels.npy"), np.array([l for _, l in rows], dtype=np.int64)
    )
    pooled = tmp_path / "pooled.npy"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "preprocess.py"),
            "--index",
            str(index),
            "--resize",
            "72",
            "--crop",
            "64",
            "--out",
            str(pooled),
            "--workers",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    assert np.array_equal(np.load(pooled), np.asarray(cache))


# --- (iv) error sentences ---


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match=r"dataset\.root .*nowhere is not a directory"):
        index_imagenet(tmp_path / "nowhere", labels=tmp_path / "val_map.txt")


def test_label_file_errors(tmp_path):
    make_synthetic(tmp_path, 2, seed=0)
    with pytest.raises(
        UserError, match=r"dataset\.labels .*missing\.txt does not exist"
    ):
        index_imagenet(tmp_path, labels=tmp_path / "missing.txt")
    labels = tmp_path / "val_map.txt"
    labels.write_text("synthetic_000000.JPEG 5\nsynthetic_000007.JPEG 1\n")
    with pytest.raises(
        UserError,
        match=r"line 2 names synthetic_000007\.JPEG, which is not in dataset\.root",
    ):
        index_imagenet(tmp_path, labels=labels)
    labels.write_text("")
    with pytest.raises(UserError, match="no images found"):
        index_imagenet(tmp_path, labels=labels)
    with pytest.raises(UserError, match="give dataset.labels"):
        index_imagenet(tmp_path)


def test_too_many_images(tmp_path):
    make_synthetic(tmp_path, 3, seed=0)
    labels = tmp_path / "val_map.txt"
    labels.write_text("".join(f"synthetic_{i:06d}.JPEG {i}\n" for i in range(3)))
    assert len(index_imagenet(tmp_path, labels=labels, images="3")) == 3
    with pytest.raises(
        UserError, match=r"dataset\.images is 4 but .* holds only 3 images"
    ):
        index_imagenet(tmp_path, labels=labels, images=4)
    with pytest.raises(UserError, match=r"dataset\.images is 'some'"):
        index_imagenet(tmp_path, labels=labels, images="some")


def test_corrupt_jpeg_names_the_file(tmp_path):
    rows = make_synthetic(tmp_path / "img", 3, seed=0)
    broken = Path(rows[1][0])
    broken.write_bytes(broken.read_bytes()[:300])  # a truncated JPEG
    out = tmp_path / "cache" / "x.npy"
    with pytest.raises(UserError, match=f"{broken} cannot be read as an image"):
        preprocess(rows, 72, 64, out, workers=1)
    assert list(out.parent.iterdir()) == []  # neither the cache nor its temporary file
    index = tmp_path / "index.tsv"
    write_index(index, rows)
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "preprocess.py"),
            "--index",
            str(index),
            "--resize",
            "72",
            "--crop",
            "64",
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{broken} cannot be read as an image" in proc.stderr
    assert list(out.parent.iterdir()) == []
