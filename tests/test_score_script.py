"""workflow/scripts/score.py as the score rule runs it, on prediction files built by hand."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCORE = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "score.py"


def predictions(path, top1, logits, runtime="onnxruntime", precision="int8"):
    top5 = np.zeros((len(top1), 5), dtype=np.int32)
    top5[:, 0] = top1
    top5[:, 1:] = 999
    meta = {"cell": {"runtime": runtime, "model": "m", "precision": precision}, "provenance": {"runtime": {"x": 1}}}
    np.savez(path, top5=top5, logits=np.asarray(logits, np.float32), meta=json.dumps(meta))
    return path


def score(tmp_path, *args):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(SCORE), *map(str, args), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.fixture
def files(tmp_path):
    labels = tmp_path / "labels.npy"
    np.save(labels, np.array([3, 1, 2, 0]))
    cell = predictions(tmp_path / "cell.npz", [3, 1, 0, 0], [[1, 0], [0, 1]])
    ref = predictions(tmp_path / "ref.npz", [3, 2, 0, 1], [[1, 0], [1, 1]], "torch", "fp32")
    return labels, cell, ref


def test_a_cell_is_scored_against_the_reference_it_is_given(tmp_path, files):
    labels, cell, ref = files
    proc, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference", ref,
                      "--reference-name", "torch/fp32", "--random-weights", "1")
    assert proc.returncode == 0, proc.stderr
    assert got["cell"] == {"runtime": "onnxruntime", "model": "m", "precision": "int8"}
    assert (got["images"], got["top1"], got["mismatches"]) == (4, 0.75, 2)
    assert got["cosine"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert got["rel_error"] == pytest.approx(1 / math.sqrt(3))
    assert (got["reference"], got["reference_available"], got["random_weights"]) == ("torch/fp32", True, True)
    assert got["provenance"]["predictions"] == str(cell) and got["provenance"]["runtime"] == {"x": 1}


def test_without_a_reference_only_top1_and_top5(tmp_path, files):
    labels, cell, _ = files
    proc, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference-name", "torch/fp32",
                      "--random-weights", "0")
    assert proc.returncode == 0, proc.stderr
    assert (got["top1"], got["mismatches"], got["cosine"], got["reference_available"]) == (0.75, None, None, False)
    assert got["random_weights"] is False


def test_a_file_that_is_not_a_prediction_file_is_named(tmp_path, files):
    labels, cell, _ = files
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    proc, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference", broken,
                      "--reference-name", "torch/fp32")
    assert proc.returncode == 2 and got is None
    assert f"infbench: {broken} is not a prediction file of this workflow" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("missing", ["--predictions", "--labels", "--reference-name", "--out"])
def test_every_option_the_rule_passes_is_required(tmp_path, files, missing):
    labels, cell, ref = files
    args = {"--predictions": cell, "--labels": labels, "--reference": ref, "--reference-name": "torch/fp32",
            "--out": tmp_path / "out.json"}
    del args[missing]
    argv = [str(a) for pair in args.items() for a in pair]
    proc = subprocess.run([sys.executable, str(SCORE), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"the following arguments are required: {missing}" in proc.stderr


def test_weights_are_taken_as_trained_unless_the_rule_says_random(tmp_path, files):
    labels, cell, ref = files
    proc, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference", ref,
                      "--reference-name", "torch/fp32")
    assert proc.returncode == 0, proc.stderr
    assert got["random_weights"] is False


def test_images_the_index_left_out_are_counted_and_named(tmp_path, files):
    labels, cell, ref = files
    bad = tmp_path / "bad_images.tsv"
    bad.write_text("file\treason\n/data/a.JPEG\tOSError: Truncated File Read\n/data/b.JPEG\tUnidentifiedImageError\n")
    proc, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference", ref,
                      "--reference-name", "torch/fp32", "--bad-images", bad)
    assert proc.returncode == 0, proc.stderr
    assert (got["skipped_images"], got["skipped_files"]) == (2, ["/data/a.JPEG", "/data/b.JPEG"])
    assert got["images"] == 4  # the images every cell saw
    _, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference-name", "torch/fp32")
    assert (got["skipped_images"], got["skipped_files"]) == (0, [])
    # many: all counted, the first twenty named
    bad.write_text("file\treason\n" + "".join(f"/data/{i:02d}.JPEG\tOSError: broken\n" for i in range(25)))
    _, got = score(tmp_path, "--predictions", cell, "--labels", labels, "--reference-name", "torch/fp32",
                   "--bad-images", bad)
    assert (got["skipped_images"], got["skipped_files"]) == (25, [f"/data/{i:02d}.JPEG" for i in range(20)])
