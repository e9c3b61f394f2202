"""The aggregate step: result files in the documented formats -> tables a user can read."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from infbench.errors import UserError
from infbench.results import cell_config
from infbench.tables import write_tables
from infbench.timing import spread_flagged

AGGREGATE = os.path.join(
    os.path.dirname(__file__), "..", "workflow", "scripts", "aggregate.py"
)

SOURCE = "Oneflow-Benchmark cnn_benchmark/benchmark.md"
CONFIG = {
    "dataset": {"kind": "synthetic"},
    "models": {
        "alexnet": {"arch": "alexnet", "resize": 256, "crop": 224, "checkpoint": {"random": 0}},
        "resnet50": {"arch": "resnet50", "resize": 256, "crop": 224, "checkpoint": {}},
        "vgg16": {"arch": "vgg16", "resize": 256, "crop": 224, "checkpoint": {}},
    },
    # deliberately not in the tables' order: columns must follow OneFlow, TensorRT,
    # ONNX Runtime, PyTorch and fp32, fp16, int8 whatever the config's order
    "runtimes": {
        "torch": {"device": "cpu", "precisions": ["fp32"]},
        "onnxruntime": {"device": "cpu", "precisions": ["int8", "fp32"]},
        "oneflow": {"device": "cpu", "precisions": ["fp32"]},
    },
    "batch_sizes": [8, 50],
    "timing": {"warmup_batches": 5, "timed_batches": 500, "windows": 3, "max_spread": 0.1},
    "accuracy": {"reference": "oneflow/fp32"},
    "reference_results": [
        {"label": "TensorRT official", "device": "GeForce RTX 2080 Ti", "model": "resnet50",
         "precision": "fp16", "batch_size": 8, "images_per_s": 2500, "source": SOURCE},
        {"label": "TensorRT official", "device": "GeForce RTX 2080 Ti", "model": "resnet50",
         "precision": "fp32", "batch_size": 8, "images_per_s": 1025, "source": SOURCE},
    ],
}  # fmt: skip

VERSIONS = {"oneflow": {"oneflow": "0.9.0"}, "onnxruntime": {"onnxruntime": "1.32.0"},
            "torch": {"torch": "2.14.1"}}  # fmt: skip


def provenance(runtime, kind="speed", model=None, precision=None, config=CONFIG):
    """A result's provenance block, with the config it was measured under (the tables show a
    result only if that is the current config of its cell)."""
    return {
        "config": cell_config(config, kind, runtime, model, precision),
        "runtime": {
            **VERSIONS[runtime],  # each library under its own key, as the runtimes' info() has it
            "device_name": "Test Xeon 9999",
            "threads": 2,
        },
        "host": {"hostname": "h", "cpu": "Test Xeon 9999", "cpu_count": 2},
        "started": "2026-11-28T10:00:00+00:00",
        "finished": "2026-11-28T10:01:00+00:00",
    }


def write_speed(root, runtime, model, precision, bs, windows, max_spread=0.1, clock_drop=None):
    """A speed result file exactly as the measure step writes it."""
    median = sorted(windows)[len(windows) // 2]
    spread = (max(windows) - min(windows)) / median
    data = {
        "cell": {"runtime": runtime, "model": model, "arch": model, "precision": precision,
                 "batch_size": bs, "device": "cpu"},
        "result": {"images_per_s": median, "window_images_per_s": windows,
                   "window_seconds": [500 * bs / w for w in windows], "spread": spread,
                   "ms_per_batch": 1000 * bs / median, "batch_size": bs, "staged_batches": 4,
                   "warmup_batches": 5, "timed_batches": 500, "windows": len(windows)},
        "flagged": spread_flagged(spread, max_spread),
        "clock_drop": clock_drop,
        "provenance": provenance(runtime, "speed", model, precision),
    }  # fmt: skip
    path = root / "speed" / runtime / model / f"{precision}-bs{bs}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def write_accuracy(root, runtime, model, precision, top1, mismatches, random_weights,
                   cosine=None, rel_error=None, nonfinite_images=0):  # fmt: skip
    """An accuracy summary exactly as the evaluate step writes it."""
    data = {
        "cell": {"runtime": runtime, "model": model, "arch": model, "precision": precision,
                 "batch_size": 50, "device": "cpu"},
        "images": 500, "top1": top1, "top5": min(1.0, top1 + 0.2),
        "reference": "oneflow/fp32", "reference_available": mismatches is not None,
        "reference_config": cell_config(CONFIG, "accuracy", "oneflow", model, "fp32") if mismatches is not None else None,
        "mismatches": mismatches, "logit_images": 100, "cosine": cosine, "rel_error": rel_error,
        "random_weights": random_weights, "provenance": provenance(runtime, "accuracy", model, precision),
        "nonfinite_images": nonfinite_images,
    }  # fmt: skip
    path = root / "accuracy" / runtime / model / f"{precision}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def make_results(root):
    """A few cells: torch/alexnet bs8 missing, onnxruntime int8 alexnet bs8 flagged."""
    speed = [
        write_speed(root, "oneflow", "alexnet", "fp32", 8, [2630.0, 2637.4, 2641.0]),
        write_speed(root, "onnxruntime", "alexnet", "fp32", 8, [81.0, 81.24, 81.5]),
        write_speed(root, "onnxruntime", "alexnet", "int8", 8, [100.0, 120.0, 128.2]),
        write_speed(root, "oneflow", "resnet50", "fp32", 8, [657.0, 657.6, 658.0]),
        write_speed(root, "torch", "resnet50", "fp32", 8, [15.0, 15.04, 15.1]),
        write_speed(root, "onnxruntime", "resnet50", "fp32", 50, [37.0, 37.5, 38.0]),
    ]
    accuracy = [
        # alexnet: random weights, reference available
        write_accuracy(root, "oneflow", "alexnet", "fp32", 0.002, 0, True, 1.0, 0.0),
        write_accuracy(
            root, "onnxruntime", "alexnet", "fp32", 0.001, 3, True, 0.999981, 2.1e-5
        ),
        # resnet50: real weights, reference available
        write_accuracy(root, "oneflow", "resnet50", "fp32", 0.6131, 0, False, 1.0, 0.0),
        write_accuracy(
            root, "onnxruntime", "resnet50", "int8", 0.6134, 59, False, 0.998, 0.05
        ),
        # vgg16: the reference cell oneflow/fp32 was not run
        write_accuracy(root, "torch", "vgg16", "fp32", 0.4951, None, False),
    ]
    return speed, accuracy


def read_table(path):
    """The first markdown table of a file as (header, {row label: {column: cell}})."""
    lines = [
        ln
        for ln in open(path, encoding="utf-8").read().splitlines()
        if ln.startswith("|")
    ]

    def split(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = split(lines[0])
    assert set(lines[1]) <= set("|- "), "second line must be the header rule"
    rows = {}
    for ln in lines[2:]:
        cells = split(ln)
        assert len(cells) == len(header)
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


def notes(path):
    """The footnote lines under the table."""
    return [
        ln
        for ln in open(path, encoding="utf-8").read().splitlines()
        if ln.startswith("- ")
    ]


@pytest.fixture
def tables(tmp_path):
    speed, accuracy = make_results(tmp_path / "results")
    out = tmp_path / "results" / "tables"
    done = write_tables(CONFIG, speed, accuracy, str(out))
    return out, done


def test_speed_table_columns_cells_and_markers(tables):
    out, done = tables
    header, rows = read_table(out / "speed-bs8.md")
    assert header == [
        "model", "OneFlow(fp32)", "ONNX Runtime(fp32)", "ONNX Runtime(int8)", "PyTorch(fp32)",
        "TensorRT official(fp32)", "TensorRT official(fp16)",
    ]  # fmt: skip
    assert list(rows) == ["alexnet", "resnet50", "vgg16"]
    assert rows["alexnet"]["OneFlow(fp32)"] == "2637"
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "81.2"  # 1 decimal below 100
    assert rows["alexnet"]["PyTorch(fp32)"] == "not run"
    assert rows["alexnet"]["ONNX Runtime(int8)"] == "120*"
    assert rows["resnet50"]["PyTorch(fp32)"] == "15.0"
    assert rows["resnet50"]["TensorRT official(fp32)"] == "1025"
    assert rows["resnet50"]["TensorRT official(fp16)"] == "2500"
    assert rows["alexnet"]["TensorRT official(fp16)"] == "—"
    assert all(rows["vgg16"][c] == "not run" for c in header[1:5])
    assert all(cell for row in rows.values() for cell in row.values()), "no blank cell"

    text = "\n".join(notes(out / "speed-bs8.md"))
    assert "`not run`:" in text and "`—`:" in text
    flag = next(n for n in notes(out / "speed-bs8.md") if n.startswith("- `*`"))
    assert "alexnet ONNX Runtime(int8) 23.5%" in flag and "max_spread = 10%" in flag
    assert f"TensorRT official: device GeForce RTX 2080 Ti; source {SOURCE}." in text
    assert "Test Xeon 9999 (cpu)" in text
    assert (
        "OneFlow: oneflow 0.9.0" in text and "ONNX Runtime: onnxruntime 1.32.0" in text
    )
    assert "warm-up batches 5; timed batches per window 500; windows 3;" in text
    assert "staged batches in rotation 4" in text


def test_speed_table_other_batch_size_has_no_reference_columns(tables):
    out, _ = tables
    header, rows = read_table(out / "speed-bs50.md")
    assert header[-1] == "PyTorch(fp32)", "no reference figure at batch size 50"
    assert rows["resnet50"]["ONNX Runtime(fp32)"] == "37.5"
    assert rows["alexnet"]["OneFlow(fp32)"] == "not run"
    assert not any(
        n.startswith("- `*`") or n.startswith("- `—`")
        for n in notes(out / "speed-bs50.md")
    )


def test_precision_table(tables):
    out, _ = tables
    path = out / "precision.md"
    header, rows = read_table(path)
    assert header == ["model", "OneFlow(fp32)", "ONNX Runtime(fp32)", "ONNX Runtime(int8)",
                      "PyTorch(fp32)"]  # fmt: skip
    assert rows["resnet50"]["ONNX Runtime(int8)"] == "0.613 / 59"
    assert rows["resnet50"]["OneFlow(fp32)"] == "0.613 / 0"
    assert (
        rows["alexnet"]["ONNX Runtime(fp32)"] == "0.001 / 3 (cos 0.99998, rel 2.1e-05)"
    )
    assert rows["vgg16"]["PyTorch(fp32)"] == "0.495 / n/a (top-5 0.695)"
    assert rows["vgg16"]["OneFlow(fp32)"] == "not run"
    text = open(path, encoding="utf-8").read()
    assert "over 500 images" in text and "reference cell OneFlow(fp32)" in text
    footnotes = "\n".join(notes(path))
    assert "`n/a (top-5 …)`: the reference cell OneFlow(fp32) has no predictions" in footnotes
    int8 = next(n for n in notes(path) if n.startswith("- int8:"))
    assert int8 == (
        "- int8: one not recorded calibration (ONNX Runtime's) on not recorded images of the"
        " data set (seed not recorded, listed in `results/onnx/<model>/calibration.tsv`),"
        " written per runtime as Q/DQ ONNX. ONNX Runtime(int8): uint8 activations and int8"
        " weights through every op ONNX Runtime quantises (`int8-u8s8.onnx`); Gemm and MatMul"
        " outputs, so the logits, in fp32."
    )
    random_note = next(n for n in notes(path) if "random weights" in n)
    assert random_note.startswith("- alexnet: random weights")
    assert "(cos …, rel …) compare" in random_note and "first 100 images" in random_note


def test_a_cell_with_non_finite_logits_says_so_instead_of_numbers(tmp_path):
    speed, accuracy = make_results(tmp_path / "results")
    accuracy.append(write_accuracy(tmp_path / "results", "torch", "alexnet", "fp32", 0.002, 497, True,
                                   None, None, nonfinite_images=500))
    out = tmp_path / "results" / "tables"
    write_tables(CONFIG, speed, accuracy, str(out))
    _, rows = read_table(out / "precision.md")
    assert rows["alexnet"]["PyTorch(fp32)"] == "non-finite logits in 500 images"
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "0.001 / 3 (cos 0.99998, rel 2.1e-05)"
    assert any(n.startswith("- non-finite logits: NaN or infinite logits") for n in notes(out / "precision.md"))
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["kind"] == "accuracy" and r["runtime"] == "torch"
                   and r["model"] == "alexnet")
    assert (row["nonfinite_images"], row["mismatches"]) == ("500", "497")


def test_a_cell_whose_gpu_slowed_while_timed_is_marked(tmp_path):
    speed, accuracy = make_results(tmp_path / "results")
    speed.append(write_speed(tmp_path / "results", "torch", "alexnet", "fp32", 8, [900.0, 905.0, 910.0],
                             clock_drop="SM clock 1980 -> 1500 MHz while timed, 41 -> 87 C"))
    out = tmp_path / "results" / "tables"
    write_tables(CONFIG, speed, accuracy, str(out))
    _, rows = read_table(out / "speed-bs8.md")
    assert rows["alexnet"]["PyTorch(fp32)"] == "905†"
    assert rows["alexnet"]["OneFlow(fp32)"] == "2637"  # the others unmarked
    assert ("- `†`: the GPU's SM clock fell by more than 10 % between the start and the end of the timed"
            " windows (thermal or power limits, or another process), so the figure may be low: alexnet"
            " PyTorch(fp32): SM clock 1980 -> 1500 MHz while timed, 41 -> 87 C.") in notes(out / "speed-bs8.md")
    assert not any("†" in n for n in notes(out / "speed-bs50.md"))
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["kind"] == "speed" and r["runtime"] == "torch"
                   and r["model"] == "alexnet" and r["batch_size"] == "8")
    assert row["clock_drop"] == "SM clock 1980 -> 1500 MHz while timed, 41 -> 87 C"


def test_images_left_out_as_unreadable_are_counted_under_the_precision_table(tmp_path):
    speed, accuracy = make_results(tmp_path / "results")
    for path in accuracy:
        data = json.loads(Path(path).read_text())
        data.update(skipped_images=3, skipped_files=["/d/x/a.JPEG", "/d/x/b.JPEG", "/d/x/c.JPEG"], classes=1000)
        Path(path).write_text(json.dumps(data))
    out = tmp_path / "results" / "tables"
    write_tables(CONFIG, speed, accuracy, str(out))
    assert "Cells: top-1 accuracy over 500 images of 1000 classes / mismatches" in (out / "precision.md").read_text()
    assert ("- 3 unreadable images were left out of every cell (`dataset.bad_images: skip`), such as"
            " a.JPEG, b.JPEG, c.JPEG; all of them are listed in `results/datasets/<set>/bad_images.tsv`."
            ) in notes(out / "precision.md")
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        assert {r["skipped_images"] for r in csv.DictReader(f) if r["kind"] == "accuracy" and r["status"] == "measured"} == {"3"}


def test_cells_csv(tables):
    out, _ = tables
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # speed: 2 batch sizes x 3 models x 4 columns; reference: 2 figures; accuracy: 3 x 4
    assert len(rows) == 24 + 2 + 12
    kinds = [r["kind"] for r in rows]
    assert kinds.count("speed") == 24 and kinds.count("reference") == 2
    assert kinds.count("accuracy") == 12

    def find(**want):
        hits = [r for r in rows if all(r[k] == v for k, v in want.items())]
        assert len(hits) == 1, want
        return hits[0]

    flagged = find(kind="speed", runtime="onnxruntime", model="alexnet", precision="int8",
                   batch_size="8")  # fmt: skip
    assert flagged["flagged"] == "true" and float(flagged["spread"]) == pytest.approx(
        0.235, abs=1e-3
    )
    assert float(flagged["images_per_s"]) == 120.0
    assert (
        flagged["runtime_label"] == "ONNX Runtime"
        and flagged["device_name"] == "Test Xeon 9999"
    )
    assert (
        flagged["versions"] == "onnxruntime 1.32.0"
        and flagged["timed_batches"] == "500"
    )
    assert flagged["source"].endswith("speed/onnxruntime/alexnet/int8-bs8.json")
    assert flagged["started"] == "2026-11-28T10:00:00+00:00"
    missing = find(kind="speed", runtime="torch", model="alexnet", batch_size="8")
    assert missing["status"] == "not run" and missing["images_per_s"] == ""
    ref = find(kind="reference", model="resnet50", precision="fp16")
    # the frame's images/s column is float, so the config's integer figure reads 2500.0
    assert float(ref["images_per_s"]) == 2500 and ref["source"] == SOURCE
    assert (
        ref["device_name"] == "GeForce RTX 2080 Ti"
        and ref["runtime_label"] == "TensorRT official"
    )
    acc = find(
        kind="accuracy", runtime="onnxruntime", model="alexnet", precision="fp32"
    )
    assert acc["mismatches"] == "3" and acc["random_weights"] == "true"
    assert float(acc["cosine"]) == pytest.approx(0.999981) and acc["images"] == "500"
    assert find(kind="accuracy", runtime="torch", model="vgg16")["mismatches"] == ""


# every cell of the tables made from make_results, worked out by hand from the result files
# written there (images/s: the median window; * where the spread is above 10 %)
EXPECTED = {
    "speed-bs8.md": {
        "alexnet": ["2637", "81.2", "120*", "not run", "—", "—"],
        "resnet50": ["658", "not run", "not run", "15.0", "1025", "2500"],
        "vgg16": ["not run", "not run", "not run", "not run", "—", "—"],
    },
    "speed-bs50.md": {
        "alexnet": ["not run"] * 4,
        "resnet50": ["not run", "37.5", "not run", "not run"],
        "vgg16": ["not run"] * 4,
    },
    "precision.md": {
        "alexnet": ["0.002 / 0 (cos 1.00000, rel 0.0e+00)", "0.001 / 3 (cos 0.99998, rel 2.1e-05)",
                    "not run", "not run"],
        "resnet50": ["0.613 / 0", "not run", "0.613 / 59", "not run"],
        "vgg16": ["not run", "not run", "not run", "0.495 / n/a (top-5 0.695)"],
    },
}  # fmt: skip


def test_the_pandas_tables_hold_what_the_result_files_hold(tables):
    """Each table is a pivot of the cell frame: every cell must be the one its result file
    gives, in its model's row and its Runtime(precision)'s column (hand-computed above), and
    the frame and cells.csv must hold each file's numbers as the file has them."""
    out, done = tables
    for name, expected in EXPECTED.items():
        header, rows = read_table(out / name)
        assert {model: [row[h] for h in header[1:]] for model, row in rows.items()} == expected, name

    cells = done["cells"]
    assert len(cells) == 24 + 2 + 12 and cells.columns[:4].tolist() == ["kind", "status", "runtime", "runtime_label"]
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(cells)
    speed_files = sorted((out.parent / "speed").rglob("*.json"))
    accuracy_files = sorted((out.parent / "accuracy").rglob("*.json"))
    assert len(speed_files) == 6 and len(accuracy_files) == 5
    for path in speed_files + accuracy_files:
        data = json.loads(path.read_text())
        cell = data["cell"]
        kind = "speed" if "result" in data else "accuracy"
        where = (cells["kind"] == kind) & (cells["runtime"] == cell["runtime"]) & (cells["model"] == cell["model"])
        where &= cells["precision"] == cell["precision"]
        if kind == "speed":
            where &= cells["batch_size"] == cell["batch_size"]
        (i,) = cells.index[where]
        row, csv_row = cells.loc[i], csv_rows[i]
        assert row["source"] == csv_row["source"] == str(path)
        column = {"oneflow": "OneFlow", "onnxruntime": "ONNX Runtime", "torch": "PyTorch"}[cell["runtime"]]
        column += f"({cell['precision']})"
        if kind == "speed":
            result = data["result"]
            for key in ("images_per_s", "spread", "ms_per_batch"):
                assert row[key] == result[key] and float(csv_row[key]) == result[key], key
            assert row["window_images_per_s"] == result["window_images_per_s"]
            assert bool(row["flagged"]) is data["flagged"]
            _, table = read_table(out / f"speed-bs{cell['batch_size']}.md")
            rate = result["images_per_s"]
            text = f"{round(rate)}" if rate >= 100 else f"{rate:.1f}"
            assert table[cell["model"]][column] == text + ("*" if data["flagged"] else ""), path
        else:
            for key in ("top1", "top5", "cosine", "rel_error", "mismatches"):
                if data[key] is None:
                    assert row[key] is pd.NA and csv_row[key] == "", key
                else:
                    assert row[key] == data[key] and float(csv_row[key]) == data[key], key
            _, table = read_table(out / "precision.md")
            mismatches = "n/a" if data["mismatches"] is None else data["mismatches"]
            assert table[cell["model"]][column].startswith(f"{data['top1']:.3f} / {mismatches}"), path


def test_report_joins_tables_and_writes_are_clean(tables):
    out, done = tables
    assert sorted(os.listdir(out)) == ["cells.csv", "energy-bs50.md", "energy-bs8.md", "precision.md",
                                       "report.md", "speed-bs50.md", "speed-bs8.md"]  # fmt: skip
    report = (out / "report.md").read_text(encoding="utf-8")
    sections = [ln for ln in report.splitlines() if ln.startswith("## ")]
    assert sections == [
        "## Speed, batch size 8",
        "## Speed, batch size 50",
        "## Energy, batch size 8",
        "## Energy, batch size 50",
        "## Precision",
    ]
    assert (out / "speed-bs8.md").read_text(encoding="utf-8").split("\n", 2)[
        2
    ] in report
    assert done["unused"] == []


def test_unparseable_result_file_names_it(tmp_path):
    speed, accuracy = make_results(tmp_path)
    with open(speed[0], "w") as f:
        f.write('{"cell": {"runtime": "oneflow"')  # truncated by a killed job
    with pytest.raises(
        UserError, match="delete it so the workflow regenerates it"
    ) as err:
        write_tables(CONFIG, speed, accuracy, str(tmp_path / "tables"))
    assert speed[0] in str(err.value)
    data = json.loads(open(accuracy[0]).read())
    del data["top1"]
    open(accuracy[0], "w").write(json.dumps(data))
    with pytest.raises(UserError, match="'top1'"):
        write_tables(CONFIG, speed[1:], accuracy, str(tmp_path / "tables"))


def test_stale_results_are_refused_or_left_out(tmp_path):
    speed, accuracy = make_results(tmp_path)
    extra = write_speed(
        tmp_path / "old", "onnxruntime", "alexnet", "fp32", 16, [50.0, 50.0, 50.0]
    )
    done = write_tables(CONFIG, speed + [extra], accuracy, str(tmp_path / "tables"))
    assert done["unused"] == [extra]
    twin = write_speed(
        tmp_path / "twin", "oneflow", "alexnet", "fp32", 8, [1.0, 1.0, 1.0]
    )
    with pytest.raises(UserError, match="same cell"):
        write_tables(CONFIG, speed + [twin], accuracy, str(tmp_path / "tables"))


def test_a_score_against_another_reference_keeps_top1_and_top5_not_its_mismatches(tmp_path):
    """accuracy.reference changed since the cells were scored (their reference failed since,
    say): top-1 and top-5 do not depend on it and stay; mismatches and agreement do, so they
    read n/a, and the note names the reference each was scored against."""
    speed, accuracy = make_results(tmp_path)
    other = dict(CONFIG, accuracy={"reference": "onnxruntime/fp32"})
    out = tmp_path / "tables"
    done = write_tables(other, speed, accuracy, str(out))
    _, rows = read_table(out / "precision.md")
    assert rows["resnet50"]["ONNX Runtime(int8)"] == "0.613 / n/a (top-5 0.813)"
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "0.001 / n/a (top-5 0.201)"  # no (cos …): that was against oneflow
    assert (
        "- `n/a (top-5 …)` where the mismatches were counted against other predictions than ONNX"
        " Runtime(fp32)'s under the current config (`accuracy.reference: onnxruntime/fp32`): alexnet"
        " OneFlow(fp32): oneflow/fp32; alexnet ONNX Runtime(fp32): oneflow/fp32;"
    ) in "\n".join(notes(out / "precision.md"))
    cells = done["cells"]
    scored = cells[(cells["kind"] == "accuracy") & (cells["status"] == "measured")]
    assert scored["mismatches"].isna().all() and scored["cosine"].isna().all()
    # the four scored against OneFlow fp32; vgg16's never had its reference
    assert scored["scored_against"].fillna("").tolist() == ["oneflow/fp32"] * 4 + [""]


def test_mismatches_against_reference_predictions_of_another_config_are_not_shown(tmp_path):
    """The reference cell is still oneflow/fp32, but its runtime block changed since the
    cells were scored (its predictions are redone, or failed to be): mismatches counted
    against its old predictions read n/a; the OneFlow cells themselves are stale."""
    speed, accuracy = make_results(tmp_path)
    changed = json.loads(json.dumps(CONFIG))
    changed["runtimes"]["oneflow"]["mode"] = "graph"
    out = tmp_path / "tables"
    write_tables(changed, speed, accuracy, str(out))
    _, rows = read_table(out / "precision.md")
    assert rows["resnet50"]["ONNX Runtime(int8)"] == "0.613 / n/a (top-5 0.813)"
    assert rows["resnet50"]["OneFlow(fp32)"] == "stale"
    assert "resnet50 ONNX Runtime(int8): oneflow/fp32 predictions made under another config" in (
        out / "precision.md"
    ).read_text()


def test_a_result_measured_under_another_config_is_stale_and_shows_no_figure(tmp_path):
    """The cells' results were measured under CONFIG; then alexnet's checkpoint and the timing
    changed. Every alexnet cell and every speed cell is `stale` with what changed, and no
    figure of theirs is shown; resnet50's accuracy cells (timing does not touch them) stay."""
    speed, accuracy = make_results(tmp_path)
    changed = json.loads(json.dumps(CONFIG))
    changed["models"]["alexnet"]["checkpoint"] = {"url": "https://example.org/a.pth", "sha256": "0" * 64}
    changed["timing"]["timed_batches"] = 100
    out = tmp_path / "tables"
    done = write_tables(changed, speed, accuracy, str(out))
    _, rows = read_table(out / "speed-bs8.md")
    assert rows["alexnet"]["OneFlow(fp32)"] == rows["resnet50"]["OneFlow(fp32)"] == "stale"
    assert rows["alexnet"]["PyTorch(fp32)"] == "not run"  # no result file at all
    assert rows["resnet50"]["TensorRT official(fp32)"] == "1025"  # a reference figure is no result
    stale = next(n for n in notes(out / "speed-bs8.md") if n.startswith("- `stale`"))
    assert stale.startswith(
        "- `stale`: its result file was measured under another config, so its figures are not shown:"
        " alexnet OneFlow(fp32): its result file was measured under another config"
        " (models.alexnet.checkpoint, timing.timed_batches changed since); the next run measures it again;"
    )
    assert "resnet50 OneFlow(fp32): its result file was measured under another config (timing.timed_batches" in stale
    _, rows = read_table(out / "precision.md")
    assert rows["alexnet"]["OneFlow(fp32)"] == "stale" and rows["resnet50"]["OneFlow(fp32)"] == "0.613 / 0"
    cells = done["cells"]
    stale_rows = cells[cells["status"] == "stale"]
    assert len(stale_rows) == 6 + 2  # every speed file, and alexnet's two accuracy summaries
    assert stale_rows["images_per_s"].isna().all() and stale_rows["top1"].isna().all()
    assert stale_rows["source"].str.endswith(".json").all()
    # a cell whose job (or a step it needs) failed since says so rather than stale
    failures = {("speed", "oneflow", "alexnet", "fp32", 8): "fetching alexnet's checkpoint failed: no network"}
    write_tables(changed, speed, accuracy, str(out), failures)
    _, rows = read_table(out / "speed-bs8.md")
    assert rows["alexnet"]["OneFlow(fp32)"] == "failed" and rows["resnet50"]["OneFlow(fp32)"] == "stale"
    # a result that records no config (an older version's) is stale too
    data = json.loads(Path(speed[0]).read_text())
    del data["provenance"]["config"]
    Path(speed[0]).write_text(json.dumps(data))
    write_tables(CONFIG, speed, accuracy, str(out))
    _, rows = read_table(out / "speed-bs8.md")
    assert rows["alexnet"]["OneFlow(fp32)"] == "stale" and rows["alexnet"]["ONNX Runtime(fp32)"] == "81.2"
    assert "alexnet OneFlow(fp32): its result file records no config (an older version wrote it)" in "\n".join(
        notes(out / "speed-bs8.md")
    )


def test_tables_of_a_run_that_did_not_finish_say_so_first(tmp_path):
    speed, accuracy = make_results(tmp_path)
    out = tmp_path / "tables"
    write_tables(CONFIG, speed, accuracy, str(out), partial=True)
    for name in ("speed-bs8.md", "speed-bs50.md", "precision.md"):
        assert (out / name).read_text().splitlines()[2].startswith("> Partial: written from what ran before")
    assert (out / "report.md").read_text().splitlines()[2].startswith("> Partial:")
    write_tables(CONFIG, speed, accuracy, str(out))
    assert "Partial" not in (out / "speed-bs8.md").read_text()


def test_config_mistakes_name_the_key(tmp_path):
    speed, accuracy = make_results(tmp_path)
    broken = dict(CONFIG, reference_results=[{"label": "x", "model": "resnet50"}])
    with pytest.raises(UserError, match=r"reference_results\[0\] lacks 'precision'"):
        write_tables(broken, speed, accuracy, str(tmp_path / "tables"))
    broken = dict(CONFIG, accuracy={"reference": "oneflow"})
    with pytest.raises(UserError, match="accuracy.reference"):
        write_tables(broken, speed, accuracy, str(tmp_path / "tables"))


def test_cli(tmp_path):
    """The tables step as the workflow runs it, MACs per image from convert_weights' records:
    a record of another crop matches no model, an unreadable one is said and costs only
    its model's MACs; a bad result file stops it with one sentence."""
    speed, accuracy = make_results(tmp_path / "results")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    macs = [tmp_path / f"{name}.macs.json" for name in ("resnet50", "alexnet", "vgg16")]
    macs[0].write_text('{"arch": "resnet50", "crop": 224, "macs_per_image": 4089184256}')
    macs[1].write_text('{"arch": "alexnet", "crop": 192, "macs_per_image": 520000000}')  # another crop
    macs[2].write_text('{"arch": "vgg16"')
    out = tmp_path / "tables"
    cmd = [sys.executable, AGGREGATE, "--config", str(config), "--speed", *speed,
           "--accuracy", *accuracy, "--macs", *map(str, macs), "--out-dir", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert str(out / "precision.md") in proc.stdout
    assert proc.stderr == (
        f"infbench: {macs[2]} cannot be read (JSONDecodeError), so the tables leave out its model's"
        " MACs per image: delete it so that the workflow counts them again\n"
    )
    _, rows = read_table(out / "speed-bs8.md")
    assert rows["resnet50"]["OneFlow(fp32)"] == "658"
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        speed_rows = [r for r in csv.DictReader(f) if r["kind"] == "speed" and r["runtime"] in CONFIG["runtimes"]]
    assert {(r["model"], r["gmacs_per_image"]) for r in speed_rows if r["status"] == "measured"} == {
        ("resnet50", "4.089184256"), ("alexnet", "")}  # vgg16 has no measured cell here
    open(speed[0], "w").write("not json")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert speed[0] in proc.stderr and "delete it" in proc.stderr


def test_int8_note_says_how_each_int8_column_was_quantised():
    from infbench.tables import int8_note

    config = {
        "runtimes": {
            "onnxruntime": {"device": "cpu", "precisions": ["int8"]},
            "tensorrt": {"device": "cuda", "precisions": ["fp16", "int8"]},
        },
        "calibration": {"method": "entropy", "images": 500, "seed": 0},
    }
    note = int8_note(config)
    assert note.startswith(
        "int8: one entropy calibration (ONNX Runtime's) on 500 images of the data set (seed 0,"
    )
    trt, ort = note.index("TensorRT(int8): symmetric int8 Q/DQ on the inputs of Conv"), note.index(
        "ONNX Runtime(int8): uint8 activations"
    )
    assert trt < ort, "in the tables' column order"
    assert "emulated" not in note
    config["runtimes"]["onnxruntime"]["device"] = "cuda"
    assert "ONNX Runtime(int8): symmetric int8" in int8_note(config)
    assert "; on CUDA emulated: ONNX Runtime's CUDA provider has no int8 convolutions" in int8_note(config)
    config["runtimes"] = {"torch": {"device": "cpu", "precisions": ["fp32"]}}
    assert int8_note(config) is None


def test_share_of_peak_from_macs_and_the_devices_dense_peak():
    from infbench.tables import add_share_of_peak, gpu_peaks

    peaks = gpu_peaks()
    assert peaks["NVIDIA H200"]["fp16"] == 989.4 and "datasheet" in peaks["NVIDIA H200"]["source"]
    rows = [
        {"model": "resnet50", "precision": "fp16", "device_name": "NVIDIA H200", "images_per_s": 31929.0},
        {"model": "resnet50", "precision": "fp32", "device_name": "NVIDIA H200", "images_per_s": 4249.0},
        {"model": "resnet50", "precision": "fp32", "device_name": "NVIDIA H200", "images_per_s": 4249.0, "tf32": True},
        {"model": "resnet50", "precision": "fp32", "device_name": "Test Xeon 9999", "images_per_s": 40.0},
        {"model": "vgg16", "precision": "fp32", "device_name": "NVIDIA H200", "images_per_s": 10.0},
    ]
    add_share_of_peak(rows, {"resnet50": 4_089_184_256}, peaks)
    # 2 x 4.089 GMACs x 31,929 img/s = 261.1 TFLOPS of 989.4; 34.75 of 66.9 (fp32); of 494.7 (tf32)
    assert rows[0]["percent_of_peak"] == pytest.approx(26.39, abs=0.01)
    assert rows[1]["percent_of_peak"] == pytest.approx(51.95, abs=0.01)
    assert rows[2]["percent_of_peak"] == pytest.approx(7.02, abs=0.01)
    assert rows[3]["percent_of_peak"] is None and rows[3]["gmacs_per_image"] == pytest.approx(4.089, abs=1e-3)
    assert rows[4]["percent_of_peak"] is None and rows[4]["gmacs_per_image"] is None  # MACs not given


@pytest.mark.parametrize("arch, crop, gmacs", [("alexnet", 224, 0.71), ("vgg16", 224, 15.47),
                                               ("resnet50", 224, 4.09), ("inception_v3", 299, 5.71)])
def test_macs_per_image_match_torchvisions_published_figures(arch, crop, gmacs):
    from infbench.flops import macs_per_image

    assert macs_per_image(arch, crop) / 1e9 == pytest.approx(gmacs, abs=0.005)


def test_the_speed_footnote_gives_each_gpu_cells_share_of_peak(tmp_path):
    speed, accuracy = make_results(tmp_path / "results")
    path = Path(write_speed(tmp_path / "results", "torch", "resnet50", "fp32", 50, [4249.0, 4250.0, 4251.0]))
    data = json.loads(path.read_text())
    data["cell"]["device"], data["provenance"]["runtime"]["device_name"] = "cuda", "NVIDIA H200"
    path.write_text(json.dumps(data))
    out = tmp_path / "results" / "tables"
    write_tables(CONFIG, speed + [str(path)], accuracy, str(out), macs={"resnet50": 4_089_184_256})
    assert ("- % of peak (2 × MACs per image × images/s ÷ the device's dense peak for the precision;"
            " NVIDIA H200: workflow/data/gpu_peaks.yaml): resnet50 PyTorch(fp32) 52.0 %.") in notes(out / "speed-bs50.md")
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "speed" and r["model"] == "resnet50"]
    assert {(r["runtime"], r["batch_size"], r["percent_of_peak"][:5]) for r in rows if r["percent_of_peak"]} == {
        ("torch", "50", "51.95")}  # 2 x 4.089e9 x 4,250 img/s / 66.9e12
    assert all(r["gmacs_per_image"].startswith("4.089") for r in rows if r["status"] == "measured")
    # above 100 % (vgg16 fp32 on TensorRT did 102.8 % on the H200): the note says why
    data["result"]["images_per_s"] = 8500.0  # 2 x 4.089e9 x 8,500 / 66.9e12 = 103.9 %
    path.write_text(json.dumps(data))
    write_tables(CONFIG, speed + [str(path)], accuracy, str(out), macs={"resnet50": 4_089_184_256})
    share = next(n for n in notes(out / "speed-bs50.md") if n.startswith("- % of peak"))
    assert "resnet50 PyTorch(fp32) 103.9 %. Above 100 %: the MACs count a direct convolution" in share


def test_a_cell_measured_on_another_device_than_the_rest_is_marked(tmp_path):
    """A user reran one cell on another machine: its figure says so, the others do not."""
    speed, accuracy = make_results(tmp_path / "results")
    moved = next(p for p in speed if "/torch/resnet50/" in p and p.endswith("fp32-bs8.json"))
    data = json.loads(Path(moved).read_text())
    data["provenance"]["runtime"]["device_name"] = data["provenance"]["host"]["cpu"] = "Other Epyc 1234"
    Path(moved).write_text(json.dumps(data))
    out = tmp_path / "results" / "tables"
    write_tables(CONFIG, speed, accuracy, str(out))
    _, rows = read_table(out / "speed-bs8.md")
    assert rows["resnet50"]["PyTorch(fp32)"].endswith("‡")
    assert not any("‡" in cell for model, row in rows.items() for column, cell in row.items()
                   if (model, column) != ("resnet50", "PyTorch(fp32)"))
    assert ("- `‡`: measured on another device than most of the table's cpu cells (Test Xeon 9999), so not"
            " comparable with them: resnet50 PyTorch(fp32): Other Epyc 1234 (cpu).") in notes(out / "speed-bs8.md")
    assert not any("‡" in n for n in notes(out / "speed-bs50.md"))


def test_pandas_2_is_refused_in_one_sentence():
    """With pandas 2 a missing clock drop would read as the text "None" and flag every cell."""
    from infbench.errors import UserError
    from infbench.tables import require_pandas_3

    require_pandas_3("3.1.1")
    with pytest.raises(UserError) as err:
        require_pandas_3("2.2.3")
    assert str(err.value) == (
        "infbench's tables need pandas 3 or newer, and this environment has pandas 2.2.3:"
        " install the pins of envs/requirements-main.txt (make env)"
    )
