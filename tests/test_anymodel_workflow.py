"""Bring your own model, through the whole workflow on the CPU: four torchvision archs of
other families than the seed's (a bicubic one and a ViT among them) and a model given as an
ONNX file, through PyTorch and ONNX Runtime fp32/int8, into the tables."""

import csv

import numpy as np
import pytest

from infbench.data import load_image, read_index
from test_onnx_file import tiny_onnx
from test_workflow import planned_outputs, read_markdown_table, snakemake

MODELS = ["r18", "mnv3", "eff", "vit", "mine"]
COLUMNS = ["ONNX Runtime(fp32)", "ONNX Runtime(int8)", "PyTorch(fp32)"]


def anymodel_config(onnx_path, digest):
    # 64 px crops where the arch takes any size; vit_b_32 takes its 224 only (4.4 GMACs)
    small = {"resize": 72, "crop": 64, "checkpoint": {"random": 0}}
    return {
        "dataset": {"kind": "synthetic", "images": 6, "seed": 0},
        "models": {
            "r18": {"arch": "resnet18", **small},
            "mnv3": {"arch": "mobilenet_v3_small", **small},
            "eff": {"arch": "efficientnet_b0", **small},  # interpolation from its weights: bicubic
            "vit": {"arch": "vit_b_32", "checkpoint": {"random": 0}},  # 256 / 224 from its weights
            "mine": {"checkpoint": {"onnx": str(onnx_path), "sha256": digest}},
        },
        "runtimes": {
            "onnxruntime": {"device": "cpu", "precisions": ["fp32", "int8"], "threads": 2},
            "torch": {"device": "cpu", "precisions": ["fp32"], "threads": 2},
        },
        "batch_sizes": [2],
        "timing": {"warmup_batches": 1, "timed_batches": 2, "windows": 1, "staged_batches": 1},
        "latency": {"batch_sizes": []},
        "calibration": {"images": 4, "method": "minmax"},
    }


@pytest.fixture(scope="module")
def anymodel_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("anymodel")
    onnx_path, digest = tiny_onnx(workdir / "mine.onnx", layout="NHWC")
    config = anymodel_config(onnx_path, digest)
    snakemake(workdir, config=config)
    return workdir, config


@pytest.mark.workflow
def test_every_new_arch_and_the_onnx_file_reach_the_tables(anymodel_run):
    workdir, _ = anymodel_run
    tables = workdir / "results/tables"
    for name in ("speed-bs2.md", "precision.md"):
        header, rows = read_markdown_table(tables / name)
        assert header[1:] == COLUMNS and list(rows) == MODELS, name
        for model in MODELS:
            for column in COLUMNS:
                shown = rows[model][column]
                if model == "mine" and column == "PyTorch(fp32)":
                    assert shown == "needs a framework model", name
                elif name.startswith("speed"):
                    assert float(shown.rstrip("*")) > 0, (name, model, column)
                else:  # top-1 / mismatches against ONNX Runtime(fp32)
                    assert shown.split(" (")[0].count(" / ") == 1, (name, model, column)
    notes = (tables / "speed-bs2.md").read_text()
    assert "`needs a framework model`: the model is an ONNX file" in notes and notes.count(": mine.") == 1
    assert "- Resize filter: r18, mnv3, vit, mine bilinear; eff bicubic." in notes


@pytest.mark.workflow
def test_the_new_archs_run_as_torchvision_defines_them(anymodel_run):
    """Their logits agree between PyTorch and ONNX Runtime; efficientnet_b0's cache is the
    bicubic one, pixel for pixel; vit_b_32 runs at its published 224 px, whose MACs are
    torchvision's published figure."""
    import torchvision

    workdir, _ = anymodel_run
    with open(workdir / "results/tables/cells.csv") as f:
        cells = {(r["kind"], r["runtime"], r["model"], r["precision"]): r for r in csv.DictReader(f)}
    for model in ["r18", "mnv3", "eff", "vit"]:
        torch_cell = cells[("accuracy", "torch", model, "fp32")]
        assert torch_cell["status"] == "measured" and float(torch_cell["cosine"]) > 0.9999, model
        assert float(cells[("accuracy", "onnxruntime", model, "int8")]["cosine"]) > 0.9, model
    published = torchvision.models.get_model_weights("vit_b_32").DEFAULT.meta["_ops"]
    assert float(cells[("speed", "torch", "vit", "fp32")]["gmacs_per_image"]) == pytest.approx(published, abs=0.001)
    assert cells[("speed", "onnxruntime", "mine", "fp32")]["gmacs_per_image"] == ""
    caches = sorted(p.name for p in (workdir / "results/cache/synthetic").glob("*.npy"))
    assert caches == ["256-224.npy", "72-64-bicubic.npy", "72-64.npy", "73-64.npy"]
    rows = read_index(workdir / "results/datasets/synthetic/index.tsv")
    bicubic = np.load(workdir / "results/cache/synthetic/72-64-bicubic.npy")
    assert np.array_equal(bicubic, np.stack([load_image(file, 72, 64, "bicubic") for file, _ in rows]))


def test_cells_a_runtime_cannot_run_are_not_planned(tmp_path):
    """A dry-run: no OneFlow job of an arch flowvision lacks, no PyTorch or OneFlow job of
    an ONNX-file model, and no reference predictions asked of them."""
    onnx_path, digest = tiny_onnx(tmp_path / "mine.onnx")
    config = anymodel_config(onnx_path, digest)
    config["models"] = {k: config["models"][k] for k in ("r18", "vit", "mine")}
    config["runtimes"]["oneflow"] = {"device": "cpu", "precisions": ["fp32"]}
    config["accuracy"] = {"reference": "oneflow/fp32"}
    outputs = planned_outputs(snakemake(tmp_path, "-n", config=config))
    cells = {tuple(p.split("/")[1:4]) for p in outputs if p.startswith(("results/speed/", "results/accuracy/"))}
    oneflow = {(kind, model) for kind, runtime, model in cells if runtime == "oneflow"}
    assert oneflow == {("speed", "r18"), ("accuracy", "r18")}
    assert {model for _, runtime, model in cells if runtime == "torch"} == {"r18", "vit"}
    assert {model for _, runtime, model in cells if runtime == "onnxruntime"} == {"r18", "vit", "mine"}
    assert "results/onnx/mine/fp32.onnx" in outputs and "results/weights/mine.safetensors" not in outputs
