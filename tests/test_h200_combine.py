"""benchmarks/h200/combine.py: one set of tables from the committed parts of the H200 matrix.

Run on the parts that are in the repository (docs/results/h200/), as a reader of the
published tables would: each cell shows the figure its part measured, a failure of a part
stays a failure with its reason, a cell no part measured is ``not run``.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
H200 = REPO / "docs" / "results" / "h200"
PART_A = H200 / "2026-12-02-tensorrt"
PART_B = H200 / "2026-12-02-part-b"
MODELS = ["alexnet", "vgg16", "resnet50", "inception_v3"]


def combine(out, *parts, config=PART_B / "h200.yaml"):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "h200" / "combine.py"), "--config", str(config)]
        + ["--models", *MODELS, "--out-dir", str(out), *map(str, parts)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def cells(out):
    with open(out / "cells.csv", newline="") as f:
        return list(csv.DictReader(f))


def cell(rows, kind, runtime, model, precision, bs=""):
    (row,) = [
        r
        for r in rows
        if (r["kind"], r["runtime"], r["model"], r["precision"], r["batch_size"])
        == (kind, runtime, model, precision, str(bs))
    ]
    return row


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("combined")
    proc = combine(out, PART_A, PART_B)
    assert proc.returncode == 0, proc.stderr
    return out, cells(out), proc


def test_each_cell_shows_the_figure_its_part_measured(both):
    _, rows, _ = both
    for part, (runtime, model, precision, bs) in [
        (PART_A, ("tensorrt", "alexnet", "fp16", 50)),
        (PART_A, ("tensorrt", "resnet50", "int8", 8)),
        (PART_B, ("tensorrt", "vgg16", "fp32", 8)),
        (PART_B, ("torch", "vgg16", "fp16", 50)),
    ]:
        path = part / "results" / "speed" / runtime / model / f"{precision}-bs{bs}.json"
        measured = json.loads(path.read_text())
        row = cell(rows, "speed", runtime, model, precision, bs)
        assert row["status"] == "measured"
        assert float(row["images_per_s"]) == pytest.approx(measured["result"]["images_per_s"], rel=1e-12)
        assert Path(REPO / row["source"]).resolve() == path.resolve()
    # part B's published vgg16 TensorRT fp32 figures, as docs/results/h200/README.md gives them
    assert round(float(cell(rows, "speed", "tensorrt", "vgg16", "fp32", 8)["images_per_s"])) == 2070
    assert round(float(cell(rows, "speed", "tensorrt", "vgg16", "fp32", 50)["images_per_s"])) == 2224


def test_every_configured_cell_is_there_once_and_counted_by_hand(both):
    _, rows, proc = both
    speed = [r for r in rows if r["kind"] == "speed"]
    # 4 models x (3 TensorRT + 3 ONNX Runtime + 2 PyTorch precisions) x 2 batch sizes
    assert len(speed) == 4 * 8 * 2
    # part A: alexnet and resnet50 at 3 precisions, inception_v3 at 2, x 2 batch sizes = 16;
    # part B: vgg16 TensorRT fp32, PyTorch fp32 and fp16 at both sizes, ONNX Runtime fp32 bs8 = 7
    assert sum(r["status"] == "measured" for r in speed) == 16 + 7
    assert sum(r["status"] == "failed" for r in speed) == 2
    assert json.loads(proc.stdout.splitlines()[0])["speed not run"] == 64 - 23 - 2


def test_a_failure_of_a_part_stays_a_failure_with_its_reason(both):
    out, rows, _ = both
    for bs in (8, 50):
        row = cell(rows, "speed", "tensorrt", "inception_v3", "int8", bs)
        assert row["status"] == "failed"
        assert row["reason"].startswith("in part 2026-12-02-tensorrt: ")
        assert "chooseHigherPrecision" in row["reason"] and f"batch size {bs}" in row["reason"]
    table = (out / "speed-bs8.md").read_text()
    assert "| inception_v3 | 2027 " in table.replace("  ", " ").replace("  ", " ")
    assert "failed" in next(line for line in table.splitlines() if line.startswith("| inception_v3"))


def test_a_later_part_replaces_an_earlier_parts_cell_and_says_so(tmp_path):
    later = tmp_path / "later"
    shutil.copytree(PART_B, later)
    source = PART_A / "results" / "speed" / "tensorrt" / "alexnet" / "fp16-bs8.json"
    target = later / "results" / "speed" / "tensorrt" / "alexnet" / "fp16-bs8.json"
    target.parent.mkdir(parents=True)
    record = json.loads(source.read_text())
    record["result"]["images_per_s"] = 12345.0
    target.write_text(json.dumps(record))
    proc = combine(tmp_path / "out", PART_A, later)
    assert proc.returncode == 0, proc.stderr
    assert f"{target} replaces {source}" in proc.stderr
    row = cell(cells(tmp_path / "out"), "speed", "tensorrt", "alexnet", "fp16", 8)
    assert float(row["images_per_s"]) == 12345.0


def test_a_result_of_another_config_is_stale_not_measured(tmp_path):
    config = tmp_path / "h200.yaml"
    config.write_text((PART_B / "h200.yaml").read_text().replace("timed_batches: 500", "timed_batches: 200"))
    assert config.read_text() != (PART_B / "h200.yaml").read_text()
    proc = combine(tmp_path / "out", PART_A, PART_B, config=config)
    assert proc.returncode == 0, proc.stderr
    speed = [r for r in cells(tmp_path / "out") if r["kind"] == "speed"]
    assert not any(r["status"] == "measured" for r in speed)
    assert sum(r["status"] == "stale" for r in speed) == 23


def test_a_folder_without_results_gets_one_sentence(tmp_path):
    proc = combine(tmp_path / "out", PART_A, tmp_path)
    assert proc.returncode != 0
    assert f"{tmp_path} has no results/ folder" in proc.stderr
    assert "Traceback" not in proc.stderr
