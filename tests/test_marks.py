"""The speed tables' marks through the path that makes them: `*` from measure_speed.py timing a
real ONNX Runtime cell, `†` from nvidia-smi's readings around the timed windows, each into
its result file and through aggregate.py into the table. (`‡`, `failed`, `not run` and
`stale`: test_tables.py and test_resume.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_weights
from infbench import gpu, results, timing
from infbench.precision import export_fp32
from infbench.results import cell_config

SCRIPTS = REPO / "workflow" / "scripts"
CROP = 64


def config(max_spread):
    return {
        "dataset": {"kind": "synthetic"},
        "models": {"alexnet": {"arch": "alexnet", "resize": 72, "crop": CROP, "checkpoint": {"random": 0}}},
        "runtimes": {"onnxruntime": {"device": "cpu", "precisions": ["fp32"], "threads": 1}},
        "batch_sizes": [2],
        "timing": {"warmup_batches": 1, "timed_batches": 5, "windows": 3, "staged_batches": 2, "max_spread": max_spread},
        "accuracy": {"reference": "onnxruntime/fp32"},
    }


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """alexnet's fp32 ONNX at 64 px (seeded weights) and a tensor cache of 4 random images."""
    folder = tmp_path_factory.mktemp("cell")
    weights, onnx = folder / "w.safetensors", folder / "fp32.onnx"
    make_weights("alexnet", weights)
    export_fp32("alexnet", weights, CROP, onnx)
    cache = folder / "cache.npy"
    np.save(cache, np.random.default_rng(0).integers(0, 256, (4, CROP, CROP, 3), dtype=np.uint8))
    return onnx, cache


def measure(cell, cfg, out):
    """measure_speed.py as the speed rule runs it, for the one cell of ``cfg``."""
    onnx, cache = cell
    rt = cfg["runtimes"]["onnxruntime"]
    cmd = [sys.executable, str(SCRIPTS / "measure_speed.py"), "--runtime", "onnxruntime", "--model", "alexnet",
           "--arch", "alexnet", "--precision", "fp32", "--device", "cpu", "--crop", str(CROP),
           "--batch-size", "2", "--artifact", str(onnx), "--cache", str(cache),
           "--options", json.dumps(rt), "--timing", json.dumps(cfg["timing"]),
           "--config", json.dumps(cell_config(cfg, "speed", "onnxruntime", "alexnet", "fp32")), "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(Path(out).read_text())


def speed_cell(tmp_path, cfg, result):
    """aggregate.py as the tables rule runs it; the cell's text in speed-bs2.md and its notes."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "tables"
    cmd = [sys.executable, str(SCRIPTS / "aggregate.py"), "--config", str(tmp_path / "config.json"),
           "--speed", str(result), "--out-dir", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    text = (out / "speed-bs2.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| alexnet"))
    return row.split("|")[2].strip(), [line for line in text.splitlines() if line.startswith("- ")]


def test_a_spread_above_max_spread_is_starred_and_one_below_is_not(cell, tmp_path):
    """With timing.max_spread just above 0 every real cell's windows disagree by more: `*`,
    and the footnote lists its windows; with a bound no spread reaches, no mark."""
    tight, loose = config(1e-9), config(1e9)
    starred = measure(cell, tight, tmp_path / "tight.json")
    assert starred["result"]["spread"] > 1e-9 and starred["flagged"] is True
    text, notes = speed_cell(tmp_path / "a", tight, tmp_path / "tight.json")
    assert text.endswith("*") and text.count("*") == 1
    assert any(n.startswith("- `*`: timing spread") and "alexnet ONNX Runtime(fp32)" in n for n in notes)

    plain = measure(cell, loose, tmp_path / "loose.json")
    assert plain["flagged"] is False
    text, notes = speed_cell(tmp_path / "b", loose, tmp_path / "loose.json")
    assert "*" not in text and float(text) > 0
    assert not any(n.startswith("- `*`") for n in notes)


# nvidia-smi answering --query-gpu with one reading per call, in order (an H200 at its boost
# clock before the windows, then throttled to 1,500 MHz at 87 C after them)
NVIDIA_SMI = """#!{python}
import sys
from pathlib import Path
readings = {readings!r}
count = Path({counter!r})
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
fields = next(a for a in sys.argv[1:] if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
print(", ".join(readings[min(n, len(readings) - 1)][f] for f in fields))
"""
READING = {"clocks.sm": "1980", "clocks.mem": "3201", "temperature.gpu": "41", "power.draw": "350.10",
           "clocks_throttle_reasons.active": "0x0000000000000000"}  # fmt: skip
THROTTLED = {**READING, "clocks.sm": "1500", "temperature.gpu": "87", "power.draw": "690.00",
             "clocks_throttle_reasons.active": "0x0000000000000020"}  # fmt: skip


def nvidia_smi(tmp_path, monkeypatch, readings):
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir(exist_ok=True)
    tool.write_text(NVIDIA_SMI.format(python=sys.executable, readings=readings, counter=str(tmp_path / "calls")))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("after, marked", [(THROTTLED, True), (READING, False)], ids=["throttled", "steady"])
def test_a_gpu_whose_sm_clock_fell_while_timed_is_daggered(cell, tmp_path, monkeypatch, after, marked):
    """The harness reads the clocks just before the first and after the last window (here
    from nvidia-smi's answers); a fall of the SM clock by more than 10 % is the cell's
    clock drop in its result, and `†` with the readings in the table."""
    from infbench import runtimes
    from infbench.runtimes.base import SessionSpec

    nvidia_smi(tmp_path, monkeypatch, [READING, after])
    onnx, cache = cell
    cfg = config(1e9)
    spec = SessionSpec(runtime="onnxruntime", model="alexnet", arch="alexnet", precision="fp32", batch_size=2,
                       device="cpu", artifact=str(onnx), crop=CROP, options=cfg["runtimes"]["onnxruntime"])  # fmt: skip
    session = runtimes.load("onnxruntime").open_session(spec)
    try:
        batches = list(np.load(cache)[:4].reshape(2, 2, CROP, CROP, 3))
        result = timing.measure(session, batches, 1, 3, 2, probe=gpu.clock_state)
    finally:
        session.close()
    clocks = result.pop("probe")
    assert clocks["before"]["sm_mhz"] == 1980 and clocks["after"]["mem_mhz"] == 3201
    # the result as measure_speed.py writes it for a cell on cuda
    record = {
        "cell": {"runtime": "onnxruntime", "model": "alexnet", "arch": "alexnet", "precision": "fp32",
                 "batch_size": 2, "device": "cuda"},
        "result": result,
        "flagged": timing.spread_flagged(result["spread"], cfg["timing"]["max_spread"]),
        "clock_drop": gpu.clock_drop(clocks["before"], clocks["after"]),
        "provenance": {"runtime": {"device_name": "NVIDIA H200"}, "gpu_clocks": clocks,
                       "config": cell_config(cfg, "speed", "onnxruntime", "alexnet", "fp32")},
    }  # fmt: skip
    results.write(tmp_path / "cell.json", record)
    text, notes = speed_cell(tmp_path, cfg, tmp_path / "cell.json")
    assert text.endswith("†") is marked
    dagger = [n for n in notes if n.startswith("- `†`")]
    if marked:
        assert dagger and "alexnet ONNX Runtime(fp32): SM clock 1980 -> 1500 MHz while timed, 41 -> 87 C" in dagger[0]
    else:
        assert dagger == [] and float(text) > 0
