"""benchmarks/interference.py: the commands it replays (from real H200 results), its
arithmetic, and a whole run on the CPU: ONNX Runtime cells of a tiny real model timed alone
and beside a timed load on a second (fake) GPU and a calibration load."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from test_gpu_slots import H200, fake_gpus
from test_ort_cuda_options import tiny_cnn

sys.path.insert(0, str(REPO / "benchmarks"))

import interference  # noqa: E402

SCRIPTS = REPO / "workflow" / "scripts"
PART_A = REPO / "docs/results/h200/2026-12-02-tensorrt/results"


def test_the_replayed_commands_are_the_workflows_own_steps(tmp_path):
    """From the results of the H200 run (their provenance: interpreter and command): the speed
    job once for its two cells, with this checkout's script and the interpreter the workflow
    was given; its accuracy run and an engine build, each parsed by the step's own parser."""
    results = [PART_A / f"speed/tensorrt/resnet50/fp16-bs{bs}.json" for bs in (8, 50)]
    [job] = interference.speed_jobs(results, {"tensorrt": "/tmp/trtpy"})
    assert job["python"] == "/tmp/trtpy" and job["argv"][0] == str(SCRIPTS / "measure_speed.py")
    assert job["cells"] == ["tensorrt/resnet50/fp16/bs8", "tensorrt/resnet50/fp16/bs50"]
    recorded = json.loads(results[0].read_text())["provenance"]["command"]
    command = interference.speed_command(job, "/o", timing='{"windows": 1}')
    assert command[0] == "/tmp/trtpy" and command[1] == str(SCRIPTS / "measure_speed.py")
    assert interference.option_values(command, "--out") == ["/o/cell0.json", "/o/cell1.json"]
    assert interference.option_values(command, "--timing") == ['{"windows": 1}']
    assert command[2 : command.index("--timing")] == recorded[1 : recorded.index("--timing")]  # the rest as it ran

    accuracy = interference.evaluate_command(job, str(tmp_path / "p.npz"))
    assert accuracy[1] == str(SCRIPTS / "evaluate.py")
    assert interference.option_values(accuracy, "--batch-size") == ["8"]
    assert interference.option_values(accuracy, "--artifact") == ["results/engines/resnet50/fp16-bs8.plan"]
    # evaluate.py takes these arguments: it gets past its parser to the missing tensor cache
    ran = subprocess.run([sys.executable, *accuracy[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran.returncode != 0 and "error: " not in ran.stderr and "256-224.npy" in ran.stderr, ran.stderr

    sys.path.insert(0, str(SCRIPTS))
    import build_engine

    sidecar = json.loads((PART_A / "engines/resnet50/fp16-bs8.json").read_text())
    build = interference.build_command(sidecar, "/tmp/trtpy", "/o", 3)
    parsed = build_engine.parse_args(build[2:])
    assert (parsed.onnx, parsed.batch_size, parsed.precision) == (sidecar["onnx"], 8, "fp16")
    assert (parsed.workspace_mib, parsed.allow_tf32, parsed.tactic_sources) == (4096, 0, None)
    assert (parsed.timing_cache, parsed.out) == (
        "/o/timing3.cache",
        "/o/engine3.plan",
    )  # an empty cache, never the run's


def test_each_ratio_is_the_median_beside_over_the_median_alone():
    rounds = [
        {"kind": "alone", "rates": {"a/bs8": 100.0}},
        {"kind": "timed", "rates": {"a/bs8": 97.0}},
        {"kind": "alone", "rates": {"a/bs8": 112.0}},  # the mean alone would be 100.67
        {"kind": "timed", "rates": {"a/bs8": 99.0}},
        {"kind": "alone", "rates": {"a/bs8": 90.0}},
        {"kind": "timed", "rates": {"a/bs8": 95.0}},
        {"kind": "cpu", "rates": {"a/bs8": 99.0}},
    ]
    table = interference.ratios(rounds, ["timed", "cpu"])
    assert table == {"a/bs8": {"alone": 100.0, "timed": 97.0, "timed_ratio": 0.97, "cpu": 99.0, "cpu_ratio": 0.99}}
    text = interference.markdown(table, ["timed", "cpu"])
    assert "| a/bs8 | 100.0 | 97.0 (0.970) | 99.0 (0.990) |" in text
    assert "beside timed: lowest ratio 0.970 (below 0.98)" in text
    assert "beside cpu: lowest ratio 0.990 (at least 0.98)" in text
    rounds[-1]["load_steps_failed"] = 1
    text = interference.markdown(table, ["timed", "cpu"], rounds)
    assert "beside cpu: lowest ratio 0.990 (at least 0.98; but 1 of its load steps failed, so this says" in text


def test_a_whole_run_on_the_cpu(tmp_path, monkeypatch):
    """Two ONNX Runtime cells (batch 2 and 4) of a tiny real CNN, timed by measure_speed.py,
    then replayed alone and beside a timed load on the second fake GPU and beside a
    calibration: every replay's numbers, the ratios of the medians, and loads that ran (each
    finished steps while the cells were timed)."""
    monkeypatch.setenv("PATH", fake_gpus(tmp_path / "bin", [H200, H200]))
    monkeypatch.setenv("INFBENCH_GPU_LOCKS", str(tmp_path / "locks"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the replays write
    results = Path("results")
    onnx_file = results / "onnx/tiny/fp32.onnx"
    onnx_file.parent.mkdir(parents=True)
    tiny_cnn(str(onnx_file))
    cache = results / "cache/synthetic/16-16.npy"
    cache.parent.mkdir(parents=True)
    np.save(cache, np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    index = results / "datasets/synthetic/index.tsv"
    index.parent.mkdir(parents=True)
    index.write_text("file\tlabel\n" + "".join(f"img{i}.JPEG\t{i % 10}\n" for i in range(40)))
    outs = [str(results / f"speed/onnxruntime/tiny/fp32-bs{bs}.json") for bs in (2, 4)]
    timing = '{"warmup_batches": 1, "timed_batches": 20, "windows": 3, "staged_batches": 2, "max_spread": 1}'
    subprocess.run(
        [sys.executable, str(SCRIPTS / "measure_speed.py"), "--runtime", "onnxruntime", "--model", "tiny",
         "--arch", "resnet50", "--precision", "fp32", "--device", "cpu", "--crop", "16", "--batch-size", "2", "4",
         "--artifact", str(onnx_file), "--options", '{"threads": 1}', "--cache", str(cache), "--timing", timing,
         "--out", *outs],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/interference.py"), *outs, "--gpus", "0", "1", "--load", "timed", "cpu",
         "--rounds", "1", "--cpu-jobs", "1", "--cpu-images", "40", "--settle-s", "2", "--json", "interference.json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(Path("interference.json").read_text())
    assert [r["kind"] for r in record["rounds"]] == ["alone", "timed", "cpu"]
    for entry in record["rounds"]:
        assert sorted(entry["rates"]) == ["onnxruntime/tiny/fp32/bs2", "onnxruntime/tiny/fp32/bs4"]
        assert all(rate > 0 for rate in entry["rates"].values())
        loaded = entry["kind"] != "alone"
        assert entry["load_steps_finished"] is None if not loaded else entry["load_steps_finished"] >= 1, entry
        assert entry["load_steps_failed"] == 0, proc.stdout
    by_kind = {r["kind"]: r["rates"] for r in record["rounds"]}
    for cell, row in record["table"].items():
        assert row["timed_ratio"] == pytest.approx(by_kind["timed"][cell] / by_kind["alone"][cell])
        assert row["cpu_ratio"] == pytest.approx(by_kind["cpu"][cell] / by_kind["alone"][cell])
    assert "| onnxruntime/tiny/fp32/bs2 |" in proc.stdout
    assert not list(tmp_path.glob("interference-*"))  # the replays' files are gone
