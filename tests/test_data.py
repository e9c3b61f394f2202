"""Data path: indexing, synthetic JPEGs, and preprocessing identical to torchvision's preset."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infbench.data import (
    cache_name,
    index_imagenet,
    load_image,
    make_synthetic,
    preprocess,
    read_devkit_meta,
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


# the sizes and resize filters of torchvision's published presets: the seed models' (bilinear),
# efficientnet_b0's and swin_t's (bicubic)
PRESETS = [(256, 224, "bilinear"), (342, 299, "bilinear"), (256, 224, "bicubic"), (232, 224, "bicubic")]


def torchvision_preset(resize, crop, interpolation):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    return ImageClassification(crop_size=crop, resize_size=resize, interpolation=InterpolationMode(interpolation))


@needs_sample
@pytest.mark.parametrize("resize,crop,interpolation", PRESETS)
def test_pixels_match_torchvision_preset(resize, crop, interpolation):
    import torch
    from torchvision.transforms import functional as F

    preset = torchvision_preset(resize, crop, interpolation)
    files, grey = varied_sample()
    assert grey and set(grey) <= set(files)
    for file in files:
        with Image.open(file) as im:
            expected = preset(im.convert("RGB"))  # ImageFolder's loader converts to RGB
        ours = load_image(file, resize, crop, interpolation)
        assert ours.shape == (crop, crop, 3) and ours.dtype == np.uint8
        # Apply the preset's own last two steps to our pixels: equal floats means equal pixels.
        tensor = F.convert_image_dtype(
            torch.from_numpy(ours.copy()).permute(2, 0, 1).contiguous(), torch.float
        )
        got = F.normalize(tensor, mean=preset.mean, std=preset.std)
        assert torch.equal(
            got, expected
        ), f"{file.name} differs from torchvision at {resize}/{crop} {interpolation}"


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


@pytest.mark.parametrize("resize,crop,interpolation", PRESETS)
def test_pixels_match_torchvision_preset_on_generated_images(tmp_path, resize, crop, interpolation):
    import torch
    from torchvision.transforms import functional as F

    preset = torchvision_preset(resize, crop, interpolation)
    for file in generated_images(tmp_path / "images"):
        with Image.open(file) as im:
            expected = preset(im.convert("RGB"))
        ours = load_image(file, resize, crop, interpolation)
        assert ours.shape == (crop, crop, 3) and ours.dtype == np.uint8
        tensor = F.convert_image_dtype(torch.from_numpy(ours.copy()).permute(2, 0, 1).contiguous(), torch.float)
        got = F.normalize(tensor, mean=preset.mean, std=preset.std)
        assert torch.equal(got, expected), f"{file.name} differs from torchvision at {resize}/{crop} {interpolation}"


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


# --- (ii b) the devkit's ground truth, Kaggle's LOC csv, and label files that disagree ---

# Made-up WNIDs whose sorted position is k: class index k in torchvision's order.
FAKE_WNIDS = [f"n{10000000 + k:08d}" for k in range(1000)]


def devkit_wnid(ilsvrc_id):
    """The fixture devkit's order: ILSVRC2012_ID i is the class 7i mod 1000 (not i - 1)."""
    return FAKE_WNIDS[7 * ilsvrc_id % 1000]


def write_devkit_meta(path, wnid_of_id, extra=None, compression=False):
    """A meta.mat like the devkit's: a synsets struct array (N x 1) with its eight fields
    (and the ``extra`` variables beside it, compressed if ``compression``).

    Besides the 1,000 leaves (IDs 1-1000) it holds two inner nodes whose WNIDs sort before
    every leaf, and the entries are shuffled: neither their position nor the inner nodes
    may move a class index.
    """
    from scipy.io import savemat

    entries = [(i, wnid, []) for i, wnid in wnid_of_id.items()]
    entries += [(1001, "n00001740", [1002]), (1002, "n00002137", [1, 2])]
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    synsets = np.zeros((len(entries), 1), dtype=[(f, object) for f in fields])
    for row, j in enumerate(np.random.default_rng(0).permutation(len(entries))):
        ilsvrc_id, wnid, children = entries[j]
        synsets[row, 0] = (
            np.uint16(ilsvrc_id),
            wnid,
            f"words of {wnid}",
            f"gloss of {wnid}",
            np.uint8(len(children)),
            np.asarray(children, dtype=np.uint16).reshape(1, -1),
            np.uint8(1 if children else 0),
            np.uint16(0 if children else 1300),
        )
    savemat(str(path), {"synsets": synsets, **(extra or {})}, do_compression=compression)
    return path


def write_jpegs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (24, 16), (40 * i % 256, 90, 160)).save(folder / name)
    return folder


def devkit_names(count):
    return [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, count + 1)]


def labels_of(rows):
    return [(Path(f).name, label) for f, label in rows]


def test_read_devkit_meta(tmp_path):
    meta = write_devkit_meta(
        tmp_path / "meta.mat", {i: devkit_wnid(i) for i in range(1, 1001)}
    )
    wnid_of = read_devkit_meta(meta)
    assert list(wnid_of) == list(range(1, 1001))  # leaves only, inner nodes left out
    assert wnid_of[1] == "n10000007" and wnid_of[1000] == "n10000000"
    (tmp_path / "not.mat").write_text("1\n2\n")
    with pytest.raises(UserError, match=r"not\.mat is not the ILSVRC2012 devkit's meta"):
        read_devkit_meta(tmp_path / "not.mat")
    short = write_devkit_meta(
        tmp_path / "short.mat", {i: devkit_wnid(i) for i in range(1, 1000)}
    )
    with pytest.raises(UserError, match="gives 999 distinct WNIDs to the ILSVRC2012_IDs"):
        read_devkit_meta(short)


def devkit_set(tmp_path, count):
    """``count`` devkit-named JPEGs in tmp_path/val and a meta.mat of all 1,000 classes."""
    root = write_jpegs(tmp_path / "val", devkit_names(count))
    return root, write_devkit_meta(tmp_path / "meta.mat", {i: devkit_wnid(i) for i in range(1, 1001)})


def test_index_devkit_ground_truth(tmp_path):
    root, meta = devkit_set(tmp_path, 5)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("1\n2\n143\n1000\n500\n")
    rows = index_imagenet(root, labels=truth, devkit_meta=meta)
    # by hand: ID 1 -> n10000007 -> 7, 2 -> 14, 143 -> 1001 mod 1000 = 1, 1000 -> 0, 500 -> 500
    assert labels_of(rows) == list(zip(devkit_names(5), [7, 14, 1, 0, 500]))
    assert index_imagenet(root, labels=truth, devkit_meta=meta, images=2) == rows[:2]
    # dataset.synsets, when given, is the class order (here: reversed)
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in reversed(FAKE_WNIDS)))
    rows = index_imagenet(root, labels=truth, devkit_meta=meta, synsets=synsets)
    assert [label for _, label in rows] == [992, 985, 998, 999, 499]
    with pytest.raises(UserError, match="set dataset.devkit_meta to the devkit's data/meta.mat"):
        index_imagenet(root, labels=truth)


def test_index_loc_csv(tmp_path):
    names = devkit_names(4)
    root = write_jpegs(tmp_path / "val", names)
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000003,n10000999 1 2 30 40 n10000999 5 6 70 80 \n"
        "ILSVRC2012_val_00000001,n10000042 10 20 100 200 \n"
        "ILSVRC2012_val_00000004,n10000000 0 0 10 10 \n"
        "ILSVRC2012_val_00000002,n10000042 3 3 9 9 \n"
    )
    expected = list(zip(names, [42, 42, 999, 0]))
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("".join(f"{w} name {k}\n" for k, w in enumerate(FAKE_WNIDS)))
    assert labels_of(index_imagenet(root, labels=csv, synsets=synsets)) == expected
    meta = write_devkit_meta(
        tmp_path / "meta.mat", {i: devkit_wnid(i) for i in range(1, 1001)}
    )
    assert labels_of(index_imagenet(root, labels=csv, devkit_meta=meta)) == expected
    with pytest.raises(
        UserError,
        match=r"LOC_val_solution\.csv names 3 WNIDs, not 1000, .*set dataset\.synsets",
    ):
        index_imagenet(root, labels=csv)


def test_disagreeing_label_file_is_one_error_listing_every_line(tmp_path):
    root = write_jpegs(tmp_path / "val", ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG", "e.JPEG"])
    labels = tmp_path / "val_map.txt"
    labels.write_text("a.JPEG 1\nz.JPEG 2\na.JPEG 1\nb.JPEG 1000\nc.JPEG x\ne.JPEG 1500\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert str(err.value) == (
        f"dataset.labels {labels} ('<file name> <class index>' lines (val_map.txt))"
        f" does not match the images in dataset.root {root} in 6 places:"
        " line 2 names z.JPEG, which is not in dataset.root;"
        " line 3 repeats a.JPEG (first on line 1);"
        " line 4 gives class index 1000, outside 0-999;"
        " line 5 reads 'c.JPEG x', not '<file name> <class index 0-999>';"
        " line 6 gives class index 1500, outside 0-999;"
        " d.JPEG in dataset.root has no line;"
        " fix dataset.labels or dataset.root so that each image has exactly one valid line"
    )


def test_disagreeing_ground_truth_and_loc_csv(tmp_path):
    root, meta = devkit_set(tmp_path, 3)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("1\n1001\n0\nseven\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=truth, devkit_meta=meta)
    assert str(err.value) == (
        f"dataset.labels {truth} (the ILSVRC2012 devkit's validation ground truth)"
        f" does not match the images in dataset.root {root} in 3 places:"
        " line 2 gives ILSVRC2012_ID 1001, outside 1-1000;"
        " line 3 gives ILSVRC2012_ID 0, outside 1-1000;"
        " line 4 reads 'seven', not one ILSVRC2012_ID 1-1000;"
        " fix dataset.labels or dataset.root so that each image has exactly one valid line"
    )
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n10000001 1 2 3 4\n"
        "ILSVRC2012_val_00000002,n99999999 1 2 3 4\n"
        "ILSVRC2012_val_00000001,n10000001 1 2 3 4\n"
        "ILSVRC2012_val_00000009,n10000001 1 2 3 4\n"
        "ILSVRC2012_val_00000003 n10000001\n"
    )
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=csv, devkit_meta=meta)
    assert (
        "(Kaggle's LOC_val_solution.csv) does not match the images in dataset.root"
        f" {root} in 4 places: line 3 gives WNID n99999999, which is not a class of"
        f" dataset.devkit_meta {meta}; line 4 repeats ILSVRC2012_val_00000001.JPEG"
        " (first on line 2); line 5 names ILSVRC2012_val_00000009.JPEG, which is not"
        " in dataset.root; line 6 reads 'ILSVRC2012_val_00000003 n10000001', not"
        " 'ImageId,WNID ...'; fix"
    ) in str(err.value)


def test_disagreement_lists_twenty_and_counts_the_rest(tmp_path):
    names = [f"img{i:02d}.JPEG" for i in range(26)]
    root = write_jpegs(tmp_path / "val", names)
    labels = tmp_path / "val_map.txt"
    labels.write_text("img00.JPEG 0\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    message = str(err.value)
    assert " in 25 places: img01.JPEG in dataset.root has no line;" in message
    assert "img20.JPEG in dataset.root has no line; and 5 more; fix" in message
    assert "img21.JPEG" not in message
    assert "\n" not in message  # one line: launch.sh repeats it where Snakemake shows it
    # past twice twenty: the count is still all but the twenty listed (65 - 20, not 65 % 20)
    root = write_jpegs(tmp_path / "many", [f"img{i:02d}.JPEG" for i in range(66)])
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert " in 65 places: " in str(err.value) and "; and 45 more; fix" in str(err.value)


@needs_sample
def test_index_sample_from_ground_truth_and_loc_csv(tmp_path):
    """The sample's val_map.txt rewritten as the devkit's and Kaggle's files gives its rows."""
    synsets = [
        line.split()[0] for line in (SAMPLE / "synsets.txt").read_text().splitlines()
    ]
    truth = sample_labels()
    flat = index_imagenet(SAMPLE / "val", labels=SAMPLE / "val_map.txt")
    # a devkit whose ID order is a shuffle of the sorted WNIDs
    shuffled = np.random.default_rng(1).permutation(synsets).tolist()
    meta = write_devkit_meta(
        tmp_path / "meta.mat", {i + 1: w for i, w in enumerate(shuffled)}
    )
    ground_truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    ground_truth.write_text(
        "".join(
            f"{shuffled.index(synsets[truth[name]]) + 1}\n"
            for name in devkit_names(len(truth))
        )
    )
    rows = index_imagenet(SAMPLE / "val", labels=ground_truth, devkit_meta=meta)
    assert rows == flat
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(
        "ImageId,PredictionString\n"
        + "".join(
            f"{Path(name).stem},{synsets[label]} 1 2 3 4 {synsets[label]} 5 6 7 8\n"
            for name, label in sorted(truth.items(), reverse=True)
        )
    )
    assert index_imagenet(SAMPLE / "val", labels=csv, synsets=SAMPLE / "synsets.txt") == flat
    assert index_imagenet(SAMPLE / "val", labels=csv, devkit_meta=meta) == flat


def test_index_log_names_images_classes_and_layout(tmp_path):
    root, meta = devkit_set(tmp_path, 3)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("1\n1\n2\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "index_dataset.py"),
            "--root",
            str(root),
            "--labels",
            str(truth),
            "--devkit-meta",
            str(meta),
            "--out",
            str(tmp_path / "out" / "index.tsv"),
            "--labels-out",
            str(tmp_path / "out" / "labels.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        f"indexed 3 images (2 classes) from dataset.root {root}, labelled by"
        f" dataset.labels {truth} (the ILSVRC2012 devkit's validation ground truth)"
        f" into {tmp_path / 'out' / 'index.tsv'}"
    ) in proc.stderr
    assert np.load(tmp_path / "out" / "labels.npy").tolist() == [7, 7, 14]


# --- (iii) synthetic data and the cache ---


def test_synthetic_pixels_of_a_seed_stay_those_of_the_published_runs(tmp_path):
    """The pixels of synthetic images 0 and 1 (colour) and 4 (greyscale) of seed 0, before JPEG
    encoding, as config/gpu.yaml's runs had them (docs/results/h200.md): a change to the
    image formula (gradient angle, shapes, noise) or to numpy's or Pillow's drawing changes
    every synthetic cell's numbers, and must be a deliberate one (update these digests).
    Image 1's gradient runs past 255 before it is clipped. The files are those images as
    JPEGs of quality 90, every fifth one greyscale, with these labels."""
    import hashlib
    import io

    from infbench.data import _synthetic_image

    digests = {}
    for i, grey in ((0, False), (1, False), (4, True)):
        pixels = np.asarray(_synthetic_image(np.random.default_rng([0, i]), grey=grey))
        digests[i] = (pixels.shape, hashlib.sha256(pixels.tobytes()).hexdigest())
    assert digests == {
        0: ((468, 605, 3), "96a418606934facd9adf9848c2418ded56e1c618d70f330dc7a4e988edb830a2"),
        1: ((630, 394, 3), "fbd750b9e48cd17aa1566789e6652e447867002f5608d1cbec8f0e1d5400b923"),
        4: ((626, 348), "2490e84b605999ccb27ff6ed8febdb473ee9b4188501ac4df644e4eabeaf7658"),
    }
    rows = make_synthetic(tmp_path, 5, seed=0)
    assert [label for _, label in rows] == [287, 579, 855, 613, 741]
    for i, (file, _) in enumerate(rows):
        with Image.open(file) as image:
            assert image.mode == ("L" if i == 4 else "RGB")
            reference = io.BytesIO()
            Image.new(image.mode, (8, 8)).save(reference, format="JPEG", quality=90)
            assert image.quantization == Image.open(reference).quantization


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
    assert make_synthetic(tmp_path / "d" / "nested", 10, seed=3) == [  # folders made as needed
        (f.replace("/a/", "/d/nested/"), label) for f, label in rows[:10]
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


def test_a_bicubic_cache_has_its_own_name_and_the_bicubic_pixels(tmp_path):
    """preprocess.py --interpolation bicubic, as the workflow runs it (a process pool), writes
    what load_image gives with that filter; the bilinear name is the one caches always had."""
    assert (cache_name(256, 224), cache_name(256, 224, "bilinear"), cache_name(256, 224, "bicubic")) == (
        "256-224",
        "256-224",
        "256-224-bicubic",
    )
    rows = make_synthetic(tmp_path / "img", 6, seed=0)
    index = tmp_path / "index.tsv"
    write_index(index, rows)
    out = tmp_path / f"{cache_name(72, 64, 'bicubic')}.npy"
    command = [sys.executable, str(SCRIPTS / "preprocess.py"), "--index", str(index), "--resize", "72"]
    command += ["--crop", "64", "--interpolation", "bicubic", "--out", str(out), "--workers", "2"]
    subprocess.run(command, check=True, capture_output=True)
    cache = np.load(out)
    expected = np.stack([load_image(file, 72, 64, "bicubic") for file, _ in rows])
    assert np.array_equal(cache, expected)
    assert not np.array_equal(cache, np.stack([load_image(file, 72, 64) for file, _ in rows]))
    with pytest.raises(UserError, match="interpolation 'nearest' is not one of bilinear, bicubic"):
        load_image(rows[0][0], 72, 64, "nearest")


def test_preprocess_writes_the_cache(tmp_path):
    rows = make_synthetic(tmp_path / "img", 70, seed=0)  # more than one chunk of 64
    out = tmp_path / "cache" / "72-64.npy"
    preprocess(rows, 72, 64, out, workers=1)
    cache = np.load(out, mmap_mode="r")
    assert cache.shape == (70, 64, 64, 3) and cache.dtype == np.uint8
    assert np.array_equal(cache[0], load_image(rows[0][0], 72, 64))
    assert np.array_equal(cache[69], load_image(rows[69][0], 72, 64))
    assert sorted(p.name for p in out.parent.iterdir()) == ["72-64.npy"]
    # The entry points as the workflow runs them, with a process pool, give the same bytes.
    index, images = tmp_path / "index.tsv", tmp_path / "img2"
    subprocess.run(
        [sys.executable, str(SCRIPTS / "make_synthetic.py"), "--images", "70", "--seed", "0", "--out", str(images)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "index_dataset.py"),
            "--root",
            str(images),
            "--labels",
            str(images / "val_map.txt"),
            "--out",
            str(index),
            "--labels-out",
            str(tmp_path / "labels.npy"),
        ],
        check=True,
        capture_output=True,
    )
    assert np.array_equal(
        np.load(tmp_path / "labels.npy"), np.array([label for _, label in rows], dtype=np.int64)
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
    with pytest.raises(UserError, match=r"dataset\.labels .*val_map\.txt is empty"):
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


@pytest.mark.parametrize(
    "wnids",
    [
        ("m10000001", "dog", "nx0000001"),  # strings that do not start with a WNID
        ("n1000000", "n100000010", "o10000001"),  # one digit short, one long, another letter
    ],
)
def test_a_loc_line_whose_string_does_not_start_with_a_wnid_is_malformed(tmp_path, wnids):
    """A LOC line's WNID must be 'n' and eight digits, else the line is malformed (not a WNID
    that the devkit lacks)."""
    root, meta = devkit_set(tmp_path, 3)
    csv = tmp_path / "LOC_val_solution.csv"
    lines = [f"ILSVRC2012_val_{i:08d},{wnid} 1 2 3 4" for i, wnid in enumerate(wnids, start=1)]
    csv.write_text("ImageId,PredictionString\n" + "".join(line + "\n" for line in lines))
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=csv, devkit_meta=meta)
    listed = "; ".join(f"line {i} reads '{line}', not 'ImageId,WNID ...'" for i, line in enumerate(lines, start=2))
    assert f" in 3 places: {listed}; fix" in str(err.value)


def test_an_index_file_without_its_header_is_refused(tmp_path):
    index = tmp_path / "index.tsv"
    for text in ("/data/a.JPEG\t1\n", "path\tlabel\n/data/a.JPEG\t1\n"):  # sorting before the header, or after
        index.write_text(text)
        with pytest.raises(UserError) as err:
            read_index(index)
        assert str(err.value) == (
            f"{index} is not an infbench index (its header is not 'file<TAB>label'); delete it so that it is rebuilt"
        )


def test_dataset_images_counts_from_one():
    from infbench.data import select

    rows = [("a", 0), ("b", 1)]
    assert select(rows, 1, "x") == rows[:1] and select(rows, "2", "x") == rows and select(rows, "all", "x") == rows
    with pytest.raises(UserError, match="dataset.images is 0; set it to all or a positive whole number"):
        select(rows, 0, "x")


def test_a_synsets_file_with_a_repeated_line_is_refused(tmp_path):
    """1,000 distinct WNIDs and one of them again: 1,001 lines are not the class order."""
    root = write_jpegs(tmp_path / "val" / FAKE_WNIDS[0], ["a.JPEG"]).parent
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in FAKE_WNIDS) + f"{FAKE_WNIDS[3]} name\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, synsets=synsets)
    assert str(err.value) == (
        f"dataset.synsets {synsets} lists 1001 synsets (1000 distinct), not 1000;"
        " give the full list in label order, each synset once"
    )
    # 1,000 lines, one of them a repeat: the count is right, the classes are not
    synsets.write_text("".join(f"{w} name\n" for w in FAKE_WNIDS[:999]) + f"{FAKE_WNIDS[3]} name\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, synsets=synsets)
    assert str(err.value).startswith(f"dataset.synsets {synsets} lists 1000 synsets (999 distinct), not 1000;")


def test_trailing_blank_lines_of_the_devkit_ground_truth_are_ignored(tmp_path):
    root, meta = devkit_set(tmp_path, 3)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    for text in ("5\n1\n9\n\n\n", "5\n1\n9\n\n"):  # two blank lines at the end, or one
        truth.write_text(text)
        rows = index_imagenet(root, labels=truth, devkit_meta=meta)
        assert labels_of(rows) == list(zip(devkit_names(3), [35, 7, 63]))  # class 7i mod 1000 of ID i


def test_a_meta_mat_without_wnids_is_refused(tmp_path):
    """A struct array with ILSVRC2012_ID but no WNID field cannot map the ground truth."""
    from scipy.io import savemat

    synsets = np.zeros((2, 1), dtype=[("ILSVRC2012_ID", object), ("words", object)])
    synsets[0, 0], synsets[1, 0] = (np.uint16(1), "tench"), (np.uint16(2), "goldfish")
    path = tmp_path / "meta.mat"
    savemat(str(path), {"synsets": synsets})
    with pytest.raises(UserError, match=r"has no 'synsets' struct array with fields ILSVRC2012_ID and WNID"):
        read_devkit_meta(path)


def test_a_bad_line_of_an_index_file_is_named_by_its_line_number(tmp_path):
    index = tmp_path / "index.tsv"
    index.write_text("file\tlabel\n/data/a.JPEG\t1\n/data/b.JPEG\tseven\n")
    with pytest.raises(UserError) as err:
        read_index(index)
    assert str(err.value) == f"{index} line 3 is not '<file><TAB><label>'; delete it so that it is rebuilt"


def test_a_label_file_with_exactly_twenty_problems_lists_them_all(tmp_path):
    names = [f"{i:02d}.JPEG" for i in range(21)]
    root = write_jpegs(tmp_path / "val", names)
    labels = tmp_path / "val_map.txt"
    labels.write_text("00.JPEG 3\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    message = str(err.value)
    assert " in 20 places: 01.JPEG in dataset.root has no line;" in message
    assert "20.JPEG in dataset.root has no line; fix dataset.labels" in message and "more" not in message


def test_the_same_file_name_in_two_class_folders_sorts_by_path(tmp_path):
    """Rows sort by file name, then by path: not by label, which the class order decides."""
    root = tmp_path / "val"
    for wnid in FAKE_WNIDS[:2]:
        write_jpegs(root / wnid, ["x.JPEG"])
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in reversed(FAKE_WNIDS)))  # labels 999, 998
    rows = index_imagenet(root, synsets=synsets)
    assert [(Path(f).parent.name, label) for f, label in rows] == [(FAKE_WNIDS[0], 999), (FAKE_WNIDS[1], 998)]


def test_a_meta_mat_giving_one_wnid_twice_is_refused(tmp_path):
    wnids = {i: devkit_wnid(i) for i in range(1, 1001)}
    wnids[1000] = wnids[999]
    meta = write_devkit_meta(tmp_path / "meta.mat", wnids)
    with pytest.raises(UserError, match="it gives 999 distinct WNIDs to the"):
        read_devkit_meta(meta)


def test_a_class_folder_outside_the_synsets_file_names_that_key(tmp_path):
    root = tmp_path / "val"
    write_jpegs(root / "n99999999", ["x.JPEG"])
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in FAKE_WNIDS))
    with pytest.raises(UserError) as err:
        index_imagenet(root, synsets=synsets)
    assert str(err.value).endswith("; remove the folder or fix dataset.synsets")


@pytest.mark.parametrize("line", ["b.JPEG", "b.JPEG 2 7"])  # no class index; one field too many
def test_a_label_line_without_a_class_index_is_a_problem_not_a_crash(tmp_path, line):
    root = write_jpegs(tmp_path / "val", ["a.JPEG", "b.JPEG"])
    labels = tmp_path / "val_map.txt"
    labels.write_text(f"a.JPEG 1\n{line}\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert f" in 1 place: line 2 reads '{line}', not '<file name> <class index 0-999>';" in str(err.value)


def test_a_loc_csv_naming_more_than_1000_wnids_cannot_give_the_class_order(tmp_path):
    """1,001 WNIDs sorted would give class indices up to 1000: refused, not one class too many."""
    root = write_jpegs(tmp_path / "val", ["ILSVRC2012_val_00000001.JPEG"])
    csv = tmp_path / "LOC_val_solution.csv"
    wnids = FAKE_WNIDS + ["n10001000"]
    csv.write_text("ImageId,PredictionString\n" + "".join(
        f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 3 4\n" for i, w in enumerate(wnids)))
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=csv)
    assert str(err.value) == (
        f"dataset.labels {csv} names 1001 WNIDs, not 1000, so their sorted order cannot give the labels;"
        " set dataset.synsets to the list of the 1,000 synsets (or dataset.devkit_meta to the devkit's meta.mat)"
    )


def test_a_loc_line_without_an_image_id_does_not_hide_the_lines_after_it(tmp_path):
    root, meta = devkit_set(tmp_path, 2)
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n,n10000001 1 2 3 4\nILSVRC2012_val_00000001,n10000001 1 2 3 4\n"
                   "ILSVRC2012_val_00000001,n10000001 1 2 3 4\nILSVRC2012_val_00000002,n10000002 1 2 3 4\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=csv, devkit_meta=meta)
    assert str(err.value) == (
        f"dataset.labels {csv} (Kaggle's LOC_val_solution.csv) does not match the images in dataset.root {root}"
        " in 2 places: line 2 reads ',n10000001 1 2 3 4', not 'ImageId,WNID ...';"
        " line 4 repeats ILSVRC2012_val_00000001.JPEG (first on line 3);"
        " fix dataset.labels or dataset.root so that each image has exactly one valid line"
    )


def test_a_synthetic_set_needs_a_positive_whole_number_of_images(tmp_path):
    for images in (0, "0", -3, "ten"):
        with pytest.raises(UserError) as err:
            make_synthetic(tmp_path / "img", images, seed=0)
        assert str(err.value) == (
            f"dataset.images is {images!r}; a synthetic data set needs a positive whole number"
        )
    assert not (tmp_path / "img").exists()  # refused before anything is written


def test_a_class_folder_indexes_its_images_only(tmp_path):
    """Notes, hidden files and sub-folders beside the JPEGs of a class folder are not images."""
    root = tmp_path / "val"
    folder = write_jpegs(root / FAKE_WNIDS[5], ["b.JPEG", "a.jpg"])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "crops.JPEG").mkdir()
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in FAKE_WNIDS))
    assert labels_of(index_imagenet(root, synsets=synsets)) == [("a.jpg", 5), ("b.JPEG", 5)]


def test_preprocess_makes_the_cache_folders_as_needed(tmp_path):
    rows = make_synthetic(tmp_path / "img", 1, seed=0)
    out = tmp_path / "cache" / "imagenet" / "72-64.npy"
    preprocess(rows, 72, 64, out)
    assert np.array_equal(np.load(out)[0], load_image(rows[0][0], 72, 64))


def test_blank_lines_inside_a_val_map_are_skipped(tmp_path):
    root = write_jpegs(tmp_path / "val", ["a.JPEG", "b.JPEG"])
    labels = tmp_path / "val_map.txt"
    labels.write_text("a.JPEG 1\n\n  \nb.JPEG 2\n")
    assert labels_of(index_imagenet(root, labels=labels)) == [("a.JPEG", 1), ("b.JPEG", 2)]


def test_the_problems_of_a_label_file_are_listed_in_line_order(tmp_path):
    """Line 9's class index and line 10's missing image: by line number, not as text ("line 10" < "line 9")."""
    names = [f"{i}.JPEG" for i in range(9)]
    root = write_jpegs(tmp_path / "val", names)
    labels = tmp_path / "val_map.txt"
    labels.write_text("".join(f"{name} 1\n" for name in names[:8]) + "8.JPEG 1000\nz.JPEG 1\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert (" in 2 places: line 9 gives class index 1000, outside 0-999;"
            " line 10 names z.JPEG, which is not in dataset.root; fix") in str(err.value)


def test_a_meta_mat_entry_of_id_0_is_not_a_class(tmp_path):
    """Only the ILSVRC2012_IDs 1-1000 are the leaf classes; an entry numbered 0 is left out like the inner nodes."""
    wnids = {0: "n00000999", **{i: devkit_wnid(i) for i in range(1, 1001)}}
    meta = write_devkit_meta(tmp_path / "meta.mat", wnids)
    assert read_devkit_meta(meta) == {i: devkit_wnid(i) for i in range(1, 1001)}


# --- (v) hostile label files and file names ---


def test_a_label_file_over_its_stated_size_is_refused_before_it_is_read(tmp_path):
    MAX_LABEL_BYTES, MAX_LABEL_LINES = 16 << 20, 1_000_000  # as data.py and config/README.md state them
    root = write_jpegs(tmp_path / "val", ["a.JPEG"])
    labels = tmp_path / "val_map.txt"
    with labels.open("wb") as f:  # a sparse file: no disk, no time
        f.truncate(MAX_LABEL_BYTES + 1)
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert str(err.value) == (
        f"dataset.labels {labels} is 16.0 MiB, more than the 16 MiB a label file may be; set dataset.labels to the right file"
    )
    labels.write_bytes(b"a.JPEG 1\n" + b"\n" * MAX_LABEL_LINES)  # 1,000,001 lines in 1 MB
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert str(err.value) == (
        f"dataset.labels {labels} has 1,000,001 lines, more than the 1,000,000 a label file may have;"
        " set dataset.labels to the right file"
    )
    labels.write_bytes(b"a.JPEG 1\n" + b"\n" * (MAX_LABEL_LINES - 1))  # exactly the bound: read
    assert labels_of(index_imagenet(root, labels=labels)) == [("a.JPEG", 1)]
    synsets = tmp_path / "synsets.txt"
    synsets.write_bytes(b"\r" * (MAX_LABEL_LINES + 1))  # old Mac line ends count as lines too
    write_jpegs(tmp_path / "folders" / FAKE_WNIDS[0], ["a.JPEG"])
    with pytest.raises(UserError, match=r"dataset\.synsets .* has 1,000,001 lines"):
        index_imagenet(tmp_path / "folders", synsets=synsets)


def test_a_long_malformed_line_is_shown_shortened(tmp_path):
    root = write_jpegs(tmp_path / "val", ["a.JPEG"])
    labels = tmp_path / "val_map.txt"
    labels.write_text("a.JPEG 1\n" + "x " * 100_000 + "\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert f" in 1 place: line 2 reads {'x ' * 40!r}..., not '<file name> <class index 0-999>'; fix" in str(err.value)
    assert len(str(err.value)) < 500


def meta_with_junk(path, junk_bytes):
    """The fixture devkit's meta.mat, compressed, with a variable of ``junk_bytes`` zeros beside synsets."""
    junk = {"junk": np.zeros(junk_bytes, np.uint8)}
    return write_devkit_meta(path, {i: devkit_wnid(i) for i in range(1, 1001)}, extra=junk, compression=True)


def test_a_meta_mat_is_read_for_its_synsets_only(tmp_path):
    """A 12 MiB variable beside them (12 kB compressed) is skipped, not loaded."""
    import tracemalloc

    meta = meta_with_junk(tmp_path / "meta.mat", 12 << 20)
    assert meta.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        wnid_of = read_devkit_meta(meta)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wnid_of == {i: devkit_wnid(i) for i in range(1, 1001)}
    assert peak < 6 << 20


def test_a_meta_mat_unpacking_past_its_bound_is_refused_before_scipy_reads_it(tmp_path):
    meta = meta_with_junk(tmp_path / "meta.mat", 17 << 20)
    with pytest.raises(UserError) as err:
        read_devkit_meta(meta)
    assert str(err.value) == (
        f"dataset.devkit_meta {meta} unpacks to more than 16 MiB, which the devkit's meta.mat does not;"
        " set dataset.devkit_meta to the ILSVRC2012 devkit's data/meta.mat"
    )
    assert read_devkit_meta(meta_with_junk(tmp_path / "under.mat", 15 << 20))[1] == devkit_wnid(1)


def test_a_label_file_names_images_inside_the_root_only(tmp_path):
    """'../outside/private.png' and an absolute path are problems, never indexed; a link the
    user made inside the root is followed."""
    outside = write_jpegs(tmp_path / "outside", ["private.png", "linked.JPEG"])
    root = write_jpegs(tmp_path / "val", ["a.JPEG"])
    (root / "b.JPEG").symlink_to(outside / "linked.JPEG")
    labels = tmp_path / "val_map.txt"
    labels.write_text(f"a.JPEG 1\nb.JPEG 2\n../outside/private.png 3\n{outside / 'private.png'} 4\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    why = "which is not a file name in dataset.root (label files name each image by its file name alone)"
    assert (
        f" in 2 places: line 3 names ../outside/private.png, {why}; line 4 names {outside / 'private.png'}, {why}; fix"
    ) in str(err.value)
    labels.write_text("a.JPEG 1\nb.JPEG 2\n")
    assert [(f, label) for f, label in index_imagenet(root, labels=labels)] == [
        (str(root / "a.JPEG"), 1), (str(root / "b.JPEG"), 2)
    ]
    csv = tmp_path / "LOC_val_solution.csv"  # an ImageId is a file name too
    csv.write_text(f"ImageId,PredictionString\na,{FAKE_WNIDS[1]} 1 2 3 4\nb,{FAKE_WNIDS[2]} 1 2 3 4\n"
                   f"../outside/linked,{FAKE_WNIDS[3]} 1 2 3 4\n")
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in FAKE_WNIDS))
    with pytest.raises(UserError, match=r" in 1 place: line 4 names \.\./outside/linked\.JPEG, which is not a file"):
        index_imagenet(root, labels=csv, synsets=synsets)


def test_control_characters_in_file_names_never_reach_the_index(tmp_path):
    """A tab or a line break in a name would add rows to index.tsv: refused, shown escaped."""
    root = tmp_path / "val"
    write_jpegs(root / FAKE_WNIDS[0], ["a.JPEG", "b\tc.JPEG"])
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{w} name\n" for w in FAKE_WNIDS))
    with pytest.raises(UserError) as err:
        index_imagenet(root, synsets=synsets)
    assert str(err.value) == (
        f"'{root / FAKE_WNIDS[0]}/b\\tc.JPEG' in dataset.root has a control character in its name, which"
        " index.tsv cannot hold; rename the file or move it out of dataset.root"
    )
    flat = write_jpegs(tmp_path / "flat", ["a.JPEG", "evil\n.JPEG", "odd\u2028.JPEG"])
    labels = tmp_path / "val_map.txt"
    labels.write_text("a.JPEG 1\n")
    with pytest.raises(UserError) as err:
        index_imagenet(flat, labels=labels)
    assert (" in 2 places: 'evil\\n.JPEG' in dataset.root has no line;"
            " 'odd\\u2028.JPEG' in dataset.root has no line; fix") in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    index = tmp_path / "index.tsv"
    with pytest.raises(UserError, match=r"'/data/x\\ny\.JPEG' holds a control character"):
        write_index(index, [("/data/a.JPEG", 1), ("/data/x\ny.JPEG", 2)])
    assert not index.exists()


@pytest.mark.parametrize("digit", ["\u00b2", "\u0663"])  # superscript two; Arabic-Indic three
def test_a_digit_that_is_not_ascii_is_a_malformed_line_not_a_crash(tmp_path, digit):
    from infbench.data import select

    root = write_jpegs(tmp_path / "val", ["a.JPEG", "b.JPEG"])
    labels = tmp_path / "val_map.txt"
    labels.write_text(f"a.JPEG 1\nb.JPEG {digit}\n")
    with pytest.raises(UserError) as err:
        index_imagenet(root, labels=labels)
    assert f" in 1 place: line 2 reads 'b.JPEG {digit}', not '<file name> <class index 0-999>';" in str(err.value)
    root, meta = devkit_set(tmp_path / "devkit", 2)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text(f"1\n{digit}\n")
    with pytest.raises(UserError, match=f" in 1 place: line 2 reads '{digit}', not one ILSVRC2012_ID 1-1000;"):
        index_imagenet(root, labels=truth, devkit_meta=meta)
    index = tmp_path / "index.tsv"
    index.write_text(f"file\tlabel\n/data/a.JPEG\t{digit}\n")
    with pytest.raises(UserError, match="line 2 is not '<file><TAB><label>'"):
        read_index(index)
    with pytest.raises(UserError, match=f"dataset.images is '{digit}'"):
        select([("a", 1)], digit, "x")
    with pytest.raises(UserError, match=f"dataset.images is '{digit}'"):
        make_synthetic(tmp_path / "synthetic", digit, seed=0)


def test_a_planted_link_at_a_temporary_name_is_replaced_not_followed(tmp_path):
    """index.tsv is written through .index.tsv.tmp: a link left there must not send it elsewhere."""
    target = tmp_path / "elsewhere.txt"
    (tmp_path / ".index.tsv.tmp").symlink_to(target)  # dangling: opening it would create the target
    write_index(tmp_path / "index.tsv", [("/data/a.JPEG", 1)])
    assert not target.exists()
    assert (tmp_path / "index.tsv").read_text() == "file\tlabel\n/data/a.JPEG\t1\n"
    target.write_text("keep me\n")
    (tmp_path / ".index.tsv.tmp").symlink_to(target)
    write_index(tmp_path / "index.tsv", [("/data/b.JPEG", 2)])
    assert target.read_text() == "keep me\n" and not (tmp_path / "index.tsv").is_symlink()
