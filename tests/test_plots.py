"""The report's figures: what they draw is what cells.csv holds."""

import csv
from pathlib import Path


from infbench import plots

FIELDS = ["kind", "status", "runtime", "runtime_label", "model", "precision", "batch_size", "device_name",
          "images_per_s", "mismatches", "top1", "reference", "started"]


def write_cells(path):
    rows = [
        ("speed", "torch", "PyTorch", "resnet50", "fp32", 8, 1663.0, None),
        ("speed", "torch", "PyTorch", "resnet50", "fp16", 8, 6791.0, None),
        ("speed", "tensorrt", "TensorRT", "resnet50", "int8", 8, 17057.0, None),
        ("speed", "tensorrt", "TensorRT", "alexnet", "int8", 8, 40000.0, None),
        ("speed", "torch", "PyTorch", "resnet50", "fp32", 50, 2610.0, None),
        ("accuracy", "torch", "PyTorch", "resnet50", "fp16", None, None, 0),
        ("accuracy", "tensorrt", "TensorRT", "resnet50", "int8", None, None, 5),
        ("accuracy", "tensorrt", "TensorRT", "alexnet", "int8", None, None, None),  # no reference
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for kind, rt, lab, model, prec, bs, ips, mism in rows:
            writer.writerow({"kind": kind, "status": "measured", "runtime": rt, "runtime_label": lab, "model": model,
                             "precision": prec, "batch_size": bs or "", "device_name": "NVIDIA H200",
                             "images_per_s": ips or "", "mismatches": "" if mism is None else mism, "top1": "",
                             "reference": "torch/fp32", "started": "2026-11-29T02:57:14+00:00"})
    return path


def test_throughput_bars_are_the_cells_images_per_s(tmp_path):
    rows = plots.read_cells(write_cells(tmp_path / "cells.csv"))
    fig = plots.throughput_figure(rows, 8)
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == [1663.0, 6791.0, 17057.0, 40000.0]  # batch 8 only
    assert [t.get_text() for t in ax.get_xticklabels()] == ["resnet50", "alexnet"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PyTorch(fp32)", "PyTorch(fp16)", "TensorRT(int8)"]
    assert ax.get_title() == "Throughput, batch size 8\nNVIDIA H200; 2026-11-29"


def test_accuracy_points_pair_each_cells_speed_with_its_mismatches(tmp_path):
    rows = plots.read_cells(write_cells(tmp_path / "cells.csv"))
    _, points = plots.accuracy_vs_speed_figure(rows, 8)
    got = sorted((s["model"], s["precision"], s["images_per_s"], a["mismatches"]) for s, a in points)
    # torch fp32 has no accuracy row; alexnet int8 has no mismatches (no reference)
    assert got == [("resnet50", "fp16", 6791.0, 0.0), ("resnet50", "int8", 17057.0, 5.0)]


def test_write_plots_writes_png_and_svg_per_batch_size(tmp_path):
    written = plots.write_plots(write_cells(tmp_path / "cells.csv"), tmp_path / "plots")
    names = sorted(Path(p).name for p in written)
    assert names == sorted(f"{n}-bs{bs}.{e}" for n in ("throughput", "accuracy-vs-speed", "energy-vs-speed")
                           for bs in (8, 50) for e in ("png", "svg"))
    for path in written:
        assert Path(path).stat().st_size > 5000
    assert Path(tmp_path / "plots" / "throughput-bs8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == names  # no temporary files
