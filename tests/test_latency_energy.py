"""Latency percentiles and energy per image beside images/s: the numbers against values
computed by hand, the counters' reads outside the timed region, and the tables.

The harness (``infbench.timing``) runs a fake session on a controlled clock, so that every
query time is known; the energy counters are a stand-in for nvidia-ml-py's ``pynvml``
module and a RAPL tree written under a temporary folder (``/sys/class/powercap``'s layout,
a counter that wrapped included); the latency cells go through measure_speed.py on real
ONNX Runtime.
"""

import csv
import os
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_weights
from infbench import energy, gpu, timing
from infbench.errors import NotMeasured
from infbench.results import cell_config
from infbench.tables import write_tables
from test_metrics_timing import Clock, TimedSession
from test_tables import CONFIG, make_results, notes, provenance, read_table

SCRIPTS = REPO / "workflow" / "scripts"


# --- percentiles and the latency harness ------------------------------------------------


def test_percentiles_by_nearest_rank_computed_by_hand():
    values = [7.0, 1.0, 5.0, 3.0, 9.0, 2.0, 8.0, 4.0, 10.0, 6.0]  # 1..10, shuffled
    # nearest rank: the ceil(p/100 x 10)-th smallest
    assert timing.percentile(values, 50) == 5.0  # the 5th
    assert timing.percentile(values, 90) == 9.0  # the 9th
    assert timing.percentile(values, 99) == 10.0  # the 10th: ceil(9.9)
    assert timing.percentile(values, 91) == 10.0  # ceil(9.1) = 10
    assert timing.percentile(values, 0) == 1.0
    thousand = list(range(1000, 0, -1))  # 1000 queries of 1..1000 ms
    assert timing.percentile(thousand, 99) == 990  # the 990th fastest, not an interpolation
    assert timing.percentile(thousand, 90) == 900 and timing.percentile(thousand, 50) == 500
    assert timing.percentile([4.0], 99) == 4.0


class QuerySession(TimedSession):
    """Runs take the given seconds in turn (after the warm-up's); syncs take ``sync_seconds``."""

    def __init__(self, clock, run_seconds, sync_seconds):
        super().__init__(clock, sync_seconds)
        self.run_seconds = list(run_seconds)

    def run(self, staged):
        self.clock.now += self.run_seconds.pop(0)
        self.log.append(f"run{staged}")
        return staged


def test_latency_times_each_query_from_its_run_to_its_sync(monkeypatch):
    clock = Clock(start=7.0)
    monkeypatch.setattr(timing, "time", clock)
    # warm-up: two runs of 1 s and a sync of 0.25 s; then 5 queries: run + sync each
    runs = [1.0, 1.0] + [0.002, 0.001, 0.004, 0.003, 0.010]
    syncs = [0.25] + [0.001, 0.001, 0.001, 0.001, 0.005]
    session = QuerySession(clock, runs, syncs)

    def probe():
        session.log.append("probe")
        clock.now += 50.0  # a slow reading outside the queries
        return {"sm_mhz": 1980.0}

    batches = [np.zeros((1, 2, 2, 3), np.uint8)] * 2
    got = timing.latency(session, batches, warmup_batches=2, queries=5, probe=probe)
    # query times: 3, 2, 5, 4, 15 ms
    assert got["query_ms"] == pytest.approx([3.0, 2.0, 5.0, 4.0, 15.0])
    assert got["p50_ms"] == pytest.approx(4.0)  # the 3rd of 2, 3, 4, 5, 15
    assert got["p90_ms"] == pytest.approx(15.0)  # ceil(4.5) = the 5th
    assert got["p99_ms"] == pytest.approx(15.0)
    assert got["mean_ms"] == pytest.approx(29.0 / 5)
    assert (got["queries"], got["batch_size"], got["staged_batches"], got["warmup_batches"]) == (5, 1, 2, 2)
    assert (got["staging_seconds"], got["warmup_seconds"]) == pytest.approx((1.0, 2.25))
    assert session.log == (
        ["stage", "stage", "run0", "run1", "sync", "probe"]
        + ["run0", "sync", "run1", "sync", "run0", "sync", "run1", "sync", "run0", "sync", "probe"]
    )
    assert got["probe"] == {"before": {"sm_mhz": 1980.0}, "after": {"sm_mhz": 1980.0}}


# --- energy: the reads outside the timed windows ----------------------------------------


class LoggedMeter:
    """An energy counter that logs its reads in the session's log and takes 30 s of the
    clock each (so that a read inside a window would show in its seconds); it counts 0.5 J
    per second of the clock."""

    def __init__(self, session, clock):
        self.session, self.clock = session, clock

    def read(self):
        self.session.log.append("energy")
        self.clock.now += 30.0
        return [0.5 * self.clock.now]


def test_energy_is_read_just_outside_the_first_and_last_timed_window(monkeypatch):
    clock = Clock(start=2.0)
    monkeypatch.setattr(timing, "time", clock)
    session = TimedSession(clock, [0.0, 0.5, 0.5, 0.0])  # warm-up sync, one per window; the last call

    def probe():
        session.log.append("probe")
        clock.now += 100.0
        return {}

    got = timing.measure(
        session,
        [np.zeros((2, 2, 2, 3), np.uint8)],
        warmup_batches=1,
        timed_batches=2,
        windows=2,
        probe=probe,
        after_window=lambda done, rate: session.log.append(f"window {done}"),
        meter=LoggedMeter(session, clock),
    )
    # staged batch 0 runs 1 s; each window: 2 runs and a 0.5 s sync
    assert session.log == [
        "stage", "run0", "sync", "probe", "energy",
        "run0", "run0", "sync", "window 1", "run0", "run0", "sync", "window 2",
        "energy", "probe",
    ]  # fmt: skip
    assert got["window_seconds"] == pytest.approx([2.5, 2.5])  # no read counted in a window
    # the readings bracket the windows: from after the first read to before the second
    assert got["energy"]["seconds"] == pytest.approx(5.0)
    assert got["energy"]["after"][0] - got["energy"]["before"][0] == pytest.approx(0.5 * (5.0 + 30.0))
    assert timing.measure(session, [np.zeros((2, 2, 2, 3), np.uint8)], 0, 1, 1)["energy"] is None


# --- energy: NVML (a stand-in for pynvml) -----------------------------------------------


class FakeNVMLError(Exception):
    pass


def fake_nvml(millijoules, supported=True, calls=None):
    """nvidia-ml-py's pynvml as the energy code uses it: one GPU, "NVIDIA H200", whose
    counter answers ``millijoules`` in turn (or NVML's "Not Supported")."""
    answers = list(millijoules)
    calls = [] if calls is None else calls

    def energy_of(handle):
        calls.append(("energy", handle))
        if not supported:
            raise FakeNVMLError("Not Supported")
        return answers.pop(0)

    return types.SimpleNamespace(
        NVMLError=FakeNVMLError,
        nvmlInit=lambda: calls.append(("init",)),
        nvmlDeviceGetHandleByIndex=lambda i: calls.append(("index", i)) or f"handle{i}",
        nvmlDeviceGetHandleByUUID=lambda u: calls.append(("uuid", u)) or f"handle-{u}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlDeviceGetTotalEnergyConsumption=energy_of,
    )


def test_nvml_energy_of_a_gpu_cell_in_images_per_joule_and_watts(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = []
    # the check when opened, then before and after the windows: 1,234,567 mJ -> 1,358,067 mJ
    nvml = fake_nvml([1_000_000, 1_234_567, 1_358_067], calls=calls)
    meter, why = energy.meter_for("cuda", nvml=nvml)
    assert why is None and meter.source == "NVML total energy of GPU 0 (NVIDIA H200)"
    before, after = meter.read(), meter.read()
    assert meter.joules(before, after) == pytest.approx(123.5)
    # 3 windows x 500 batches x 8 images in 0.25 s of readings
    block = energy.record(meter, None, {"before": before, "after": after, "seconds": 0.25}, 12_000)
    assert block["measured"] is True
    assert block["images_per_joule"] == pytest.approx(12_000 / 123.5)
    assert block["mean_watts"] == pytest.approx(494.0)  # 123.5 J / 0.25 s
    assert calls[:2] == [("init",), ("index", 0)]


def test_nvml_reads_the_gpu_cuda_visible_devices_names(monkeypatch):
    calls = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f3c0d9e-1111-2222-3333-444455556666,GPU-aaaa")
    meter, _ = energy.meter_for("cuda", nvml=fake_nvml([1, 2], calls=calls))
    assert ("uuid", "GPU-8f3c0d9e-1111-2222-3333-444455556666") in calls
    assert "GPU GPU-8f3c0d9e-1111-2222-3333-444455556666" in meter.source
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    calls.clear()
    energy.meter_for("cuda", nvml=fake_nvml([1], calls=calls))
    assert ("index", 3) in calls and gpu.visible_gpu() == "3"


def test_a_gpu_without_the_counter_is_not_measured_and_says_why(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter, why = energy.meter_for("cuda", nvml=fake_nvml([], supported=False))
    assert meter is None
    assert why == "NVML cannot read the energy counter of GPU 0 (Not Supported)"
    assert energy.record(None, why, None, 100) == {"measured": False, "reason": why}
    # a counter that stops answering between the readings: not measured, and why
    nvml = fake_nvml([10_000, 20_000])
    meter, _ = energy.meter_for("cuda", nvml=nvml)
    before = meter.read()
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: (_ for _ in ()).throw(FakeNVMLError("GPU is lost"))
    after = meter.read()
    block = energy.record(meter, None, {"before": before, "after": after, "seconds": 1.0}, 100)
    assert block["measured"] is False and block["reason"] == "NVML stopped answering for GPU 0 (GPU is lost)"


def test_without_nvidia_ml_py_the_reason_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml fails
    with pytest.raises(NotMeasured, match="nvidia-ml-py"):
        gpu.energy_counter()


def test_a_counter_that_did_not_advance_is_not_a_measurement():
    meter = energy.Meter("fake", [(lambda: 5, 1.0, None)])
    block = energy.record(meter, None, {"before": [5], "after": [5], "seconds": 0.004}, 8)
    assert block["measured"] is False and "did not advance during the 0.004 s" in block["reason"]


# --- energy: RAPL (a tree like /sys/class/powercap) --------------------------------------


def rapl_tree(root, zones):
    """powercap's layout: intel-rapl:<n> per package with name, energy_uj and
    max_energy_range_uj; a sub-zone (intel-rapl:0:0, the cores) and an mmio zone beside."""
    for zone, (name, energy_uj, max_range) in zones.items():
        folder = root / zone
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
        (folder / "energy_uj").write_text(f"{energy_uj}\n")
        (folder / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def test_rapl_sums_the_packages_and_accounts_for_a_wrap(tmp_path):
    max_range = 262_143_328_850
    root = rapl_tree(tmp_path / "powercap", {
        "intel-rapl:0": ("package-0", max_range - 1_500_000, max_range),  # 1.5 J before its wrap
        "intel-rapl:1": ("package-1", 40_000_000, max_range),
        "intel-rapl:0:0": ("core", 999, max_range),  # inside package 0: not added again
        "intel-rapl-mmio:0": ("package-0", 5, max_range),  # the same package through MMIO
        "intel-rapl:2": ("psys", 7, max_range),  # the platform: covers the packages
    })  # fmt: skip
    meter, why = energy.meter_for("cpu", rapl_root=str(root))
    assert why is None and meter.source == "RAPL package-0, package-1 (the whole CPU package: every process on it)"
    before = meter.read()
    assert before == [max_range - 1_500_000, 40_000_000]
    (root / "intel-rapl:0" / "energy_uj").write_text("2500000\n")  # wrapped: 1.5 J + 2.5 J
    (root / "intel-rapl:1" / "energy_uj").write_text("46000000\n")  # 6 J
    after = meter.read()
    assert meter.joules(before, after) == pytest.approx(10.0)
    block = energy.record(meter, None, {"before": before, "after": after, "seconds": 0.5}, 40)
    assert (block["images_per_joule"], block["mean_watts"]) == pytest.approx((4.0, 20.0))


def test_no_rapl_or_an_unreadable_one_is_not_measured_with_the_reason(tmp_path, monkeypatch):
    meter, why = energy.meter_for("cpu", rapl_root=str(tmp_path / "none"))
    assert meter is None and why.startswith(f"no RAPL package counter under {tmp_path / 'none'} (a virtual machine")
    root = rapl_tree(tmp_path / "powercap", {"intel-rapl:0": ("package-0", 1, 10)})
    counter = str(root / "intel-rapl:0" / "energy_uj")
    real_open = open

    def root_only(path, *args, **kwargs):  # Linux 5.10+: energy_uj is mode 0400
        if str(path) == counter:
            raise PermissionError(13, "Permission denied", counter)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", root_only)
    meter, why = energy.meter_for("cpu", rapl_root=str(root))
    assert meter is None
    assert why == (
        f"RAPL's {counter} is readable by root only on this machine (Linux restricts it since 5.10);"
        " run as root or make the energy_uj files readable (chmod o+r)"
    )


# --- the step script: latency cells and a speed cell's energy ---------------------------

CROP = 64


@pytest.fixture(scope="module")
def onnx_cell(tmp_path_factory):
    """alexnet's fp32 ONNX at 64 px (seeded weights) and a tensor cache of 4 random images."""
    from infbench.precision import export_fp32

    folder = tmp_path_factory.mktemp("cell")
    weights, onnx = folder / "w.safetensors", folder / "fp32.onnx"
    make_weights("alexnet", weights)
    export_fp32("alexnet", weights, CROP, onnx)
    cache = folder / "cache.npy"
    np.save(cache, np.random.default_rng(0).integers(0, 256, (4, CROP, CROP, 3), dtype=np.uint8))
    return onnx, cache


def step_args(onnx, cache, batch_sizes, outs, timing_block, config, *extra):
    return [
        "--runtime", "onnxruntime", "--model", "alexnet", "--arch", "alexnet", "--precision", "fp32",
        "--device", "cpu", "--crop", str(CROP), "--batch-size", *map(str, batch_sizes), "--artifact", str(onnx),
        "--cache", str(cache), "--options", json.dumps({"device": "cpu", "precisions": ["fp32"], "threads": 1}),
        "--timing", json.dumps(timing_block), "--config", json.dumps(config), *extra, "--out", *map(str, outs),
    ]  # fmt: skip


def latency_config(queries=20):
    config = json.loads(json.dumps(CONFIG))
    config["models"]["alexnet"]["crop"] = CROP
    config["latency"] = {"batch_sizes": [1, 2], "queries": queries}
    config["timing"].update(warmup_batches=2, staged_batches=2)  # as validation fills them in
    return config


def test_latency_cells_through_the_step_and_into_the_table(onnx_cell, tmp_path):
    """measure_speed.py --latency as the latency rule runs it, at batch sizes 1 and 2: each
    result's percentiles are those of its own query times, counted by hand; the table shows
    them as p50 / p90 / p99."""
    onnx, cache = onnx_cell
    config = latency_config()
    recorded = cell_config(config, "latency", "onnxruntime", "alexnet", "fp32")
    outs = [tmp_path / "latency" / f"fp32-bs{bs}.json" for bs in (1, 2)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "measure_speed.py"),
         *step_args(onnx, cache, [1, 2], outs, {"warmup_batches": 2, "staged_batches": 2}, recorded, "--latency", "20")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for bs, out in zip((1, 2), outs):
        data = json.loads(out.read_text())
        result = data["result"]
        assert data["cell"]["batch_size"] == bs and result["queries"] == 20 and len(result["query_ms"]) == 20
        ranked = sorted(result["query_ms"])
        # 20 queries: p50 the 10th fastest, p90 the 18th, p99 the 20th (ceil(19.8))
        assert (result["p50_ms"], result["p90_ms"], result["p99_ms"]) == (ranked[9], ranked[17], ranked[19])
        assert result["mean_ms"] == pytest.approx(sum(ranked) / 20)
        assert 0 < ranked[0] and result["warmup_batches"] == 2 and result["staged_batches"] == 2
        assert data["provenance"]["config"] == recorded
        assert f"bs{bs}: 20 queries, p50 {result['p50_ms']:.3f} ms" in proc.stdout
    assert "energy" not in json.loads(outs[0].read_text())  # a latency cell measures no energy

    out = tmp_path / "tables"
    write_tables(config, [], [], str(out), latency_files=[str(p) for p in outs])
    header, rows = read_table(out / "latency-bs1.md")
    assert header == ["model", "OneFlow(fp32)", "ONNX Runtime(fp32)", "ONNX Runtime(int8)", "PyTorch(fp32)"]
    result = json.loads(outs[0].read_text())["result"]
    shown = " / ".join(f"{result[k]:#.3g}" if result[k] < 100 else f"{round(result[k])}"
                       for k in ("p50_ms", "p90_ms", "p99_ms"))  # fmt: skip
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == shown
    assert rows["alexnet"]["PyTorch(fp32)"] == rows["resnet50"]["ONNX Runtime(fp32)"] == "not run"
    text = "\n".join(notes(out / "latency-bs1.md"))
    assert "p50 / p90 / p99 over 20 single queries, each run and then synchronised" in text
    assert "With fewer than 100 queries (20) p99 is the slowest query" in text
    assert "Timing: warm-up batches 2 (the speed tables'); staged batches in rotation 2." in text


class TenWatts:
    """A counter of a device that draws 10 W: joules = 10 x seconds of the perf counter."""

    source = "a 10 W stand-in"
    failure = None

    def __init__(self):
        import time

        self.clock = time.perf_counter

    def read(self):
        return [10.0 * self.clock()]

    def joules(self, before, after):
        return after[0] - before[0]


def test_a_speed_cells_energy_comes_from_its_windows(onnx_cell, tmp_path, monkeypatch):
    """measure_speed.py in this process, its device's counter a 10 W stand-in: the result's
    energy block counts every image of the windows, over the energy between the two reads."""
    import measure_speed

    onnx, cache = onnx_cell
    monkeypatch.setattr(energy, "meter_for", lambda device: (TenWatts(), None))
    timing_block = {"warmup_batches": 1, "timed_batches": 5, "windows": 3, "staged_batches": 2, "max_spread": 1e9}
    out = tmp_path / "speed.json"
    recorded = cell_config(CONFIG, "speed", "onnxruntime", "alexnet", "fp32")
    monkeypatch.setattr(sys, "argv", ["measure_speed.py", *step_args(onnx, cache, [2], [out], timing_block, recorded)])
    measure_speed.main()
    data = json.loads(out.read_text())
    block = data["energy"]
    assert block["measured"] is True and block["counter"] == "a 10 W stand-in"
    assert block["images"] == 3 * 5 * 2
    assert block["images_per_joule"] == pytest.approx(30 / block["joules"])
    assert block["mean_watts"] == pytest.approx(10.0, rel=1e-3)
    # the readings bracket the windows: at least their seconds, and little more
    windows = sum(data["result"]["window_seconds"])
    assert windows <= block["seconds"] < windows + 0.05
    assert "energy" not in data["result"] and "probe" not in data["result"]


# --- the tables -------------------------------------------------------------------------


def with_energy(path, block):
    data = json.loads(Path(path).read_text())
    data["energy"] = block
    Path(path).write_text(json.dumps(data))


def test_energy_table_cells_and_reasons(tmp_path):
    speed, accuracy = make_results(tmp_path / "results")
    # oneflow alexnet bs8: 2,637 img/s; 12,000 images over 250 J in 5 s
    with_energy(speed[0], {"measured": True, "counter": "NVML total energy of GPU 0 (NVIDIA H200)",
                           "joules": 250.0, "seconds": 5.0, "images": 12_000,
                           "images_per_joule": 48.0, "mean_watts": 50.0})  # fmt: skip
    with_energy(speed[1], {"measured": True, "counter": "RAPL package-0", "joules": 400.0, "seconds": 50.0,
                           "images": 12_000, "images_per_joule": 30.0, "mean_watts": 8.0})  # fmt: skip
    why = "no RAPL package counter under /sys/class/powercap (a virtual machine, or a CPU or kernel without it)"
    with_energy(speed[2], {"measured": False, "reason": why})
    # speed[3:]: written without an energy block, as results of an older version
    out = tmp_path / "results" / "tables"
    done = write_tables(CONFIG, speed, accuracy, str(out))
    header, rows = read_table(out / "energy-bs8.md")
    assert header == ["model", "OneFlow(fp32)", "ONNX Runtime(fp32)", "ONNX Runtime(int8)", "PyTorch(fp32)"]
    assert rows["alexnet"]["OneFlow(fp32)"] == "48.0 (50 W)"
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "30.0 (8.0 W)"
    assert rows["alexnet"]["ONNX Runtime(int8)"] == "not measured"
    assert rows["resnet50"]["PyTorch(fp32)"] == "not measured"
    assert rows["alexnet"]["PyTorch(fp32)"] == "not run"  # as in the speed table
    lines = notes(out / "energy-bs8.md")
    assert f"- `not measured`: alexnet ONNX Runtime(int8): {why}." in lines
    assert ("- `not measured`: resnet50 OneFlow(fp32), resnet50 PyTorch(fp32): its result file records no"
            " energy reading (an older version wrote it).") in lines  # fmt: skip
    assert ("- Counters: OneFlow: NVML total energy of GPU 0 (NVIDIA H200); ONNX Runtime: RAPL package-0."
            ) in lines  # fmt: skip
    with open(out / "cells.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["kind"] == "speed" and r["runtime"] == "oneflow"
                   and r["model"] == "alexnet" and r["batch_size"] == "8")  # fmt: skip
    assert (row["images_per_joule"], row["mean_watts"], row["energy_joules"], row["energy_seconds"]) == (
        "48.0",
        "50.0",
        "250.0",
        "5.0",
    )
    assert row["energy_counter"] == "NVML total energy of GPU 0 (NVIDIA H200)" and row["energy_reason"] == ""
    cells = done["cells"]
    unmeasured = cells[(cells["kind"] == "speed") & (cells["runtime"] == "onnxruntime") & (cells["precision"] == "int8")
                       & (cells["batch_size"] == 8) & (cells["model"] == "alexnet")]  # fmt: skip
    assert unmeasured["energy_reason"].tolist() == [why]


def write_latency(root, runtime, model, precision, bs, query_ms, config, device_name="Test Xeon 9999"):
    """A latency result file as measure_speed.py --latency writes it."""
    ranked = sorted(query_ms)
    data = {
        "cell": {"runtime": runtime, "model": model, "arch": model, "precision": precision,
                 "batch_size": bs, "device": "cpu"},
        "result": {**{f"p{p}_ms": timing.percentile(ranked, p) for p in (50, 90, 99)},
                   "mean_ms": sum(ranked) / len(ranked), "query_ms": query_ms, "queries": len(query_ms),
                   "batch_size": bs, "staged_batches": 4, "warmup_batches": 5},
        "clock_drop": None,
        "provenance": provenance(runtime, "latency", model, precision, config),
    }  # fmt: skip
    data["provenance"]["runtime"]["device_name"] = device_name
    path = root / "latency" / runtime / model / f"{precision}-bs{bs}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def test_latency_table_failed_stale_and_not_run_as_the_speed_cells(tmp_path):
    """Latency cells show their percentiles; one whose job failed says `failed` with the
    reason; one measured under another latency.queries is `stale`; a changed timing
    window (timed_batches) leaves latency cells fresh and makes speed cells stale."""
    config = latency_config(queries=200)
    config["latency"]["batch_sizes"] = [1]
    root = tmp_path / "results"
    # 200 queries of 1.00 .. 2.99 ms: p50 the 100th = 1.99, p90 the 180th = 2.79, p99 the 198th = 2.97
    fresh = write_latency(root, "onnxruntime", "alexnet", "fp32", 1, [1 + i / 100 for i in range(200)][::-1], config)
    old = latency_config(queries=100)
    stale = write_latency(root, "torch", "alexnet", "fp32", 1, [3.0] * 100, old)
    moved = write_latency(root, "oneflow", "resnet50", "fp32", 1, [0.5] * 200, config, device_name="Other Epyc 1234")
    elsewhere = write_latency(root, "oneflow", "alexnet", "fp32", 1, [0.25] * 200, config)
    failures = {("latency", "onnxruntime", "resnet50", "fp32", 1): "cell onnxruntime resnet50 fp32 at batch size 1"
                " ran out of host memory"}  # fmt: skip
    out = tmp_path / "tables"
    done = write_tables(config, [], [], str(out), failures, latency_files=[fresh, stale, moved, elsewhere])
    _, rows = read_table(out / "latency-bs1.md")
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "1.99 / 2.79 / 2.97"
    assert rows["alexnet"]["PyTorch(fp32)"] == "stale"
    assert rows["resnet50"]["ONNX Runtime(fp32)"] == "failed"
    assert rows["resnet50"]["OneFlow(fp32)"] == "0.500 / 0.500 / 0.500‡"
    assert rows["alexnet"]["OneFlow(fp32)"] == "0.250 / 0.250 / 0.250"
    assert rows["vgg16"]["ONNX Runtime(int8)"] == "not run"
    text = "\n".join(notes(out / "latency-bs1.md"))
    assert (
        "- `failed`: the cell's job, or a step it needs, failed (the next run tries it again); the log says:"
        " resnet50 ONNX Runtime(fp32): cell onnxruntime resnet50 fp32 at batch size 1 ran out of host memory." in text
    )
    assert "alexnet PyTorch(fp32): its result file was measured under another config (latency.queries changed" in text
    assert "resnet50 OneFlow(fp32): Other Epyc 1234 (cpu)" in text
    assert "OneFlow: its synchronisation reads the logits back to the host" in text
    assert "fewer than 100 queries" not in text
    cells = done["cells"]
    row = cells[(cells["kind"] == "latency") & (cells["runtime"] == "onnxruntime") & (cells["model"] == "alexnet")]
    assert row[["p50_ms", "p90_ms", "p99_ms", "queries"]].iloc[0].tolist() == pytest.approx([1.99, 2.79, 2.97, 200])
    assert row["mean_ms"].iloc[0] == pytest.approx(1.995)
    # a result for a batch size no longer configured is left out, not shown
    config["latency"]["batch_sizes"] = [2]
    done = write_tables(config, [], [], str(out), latency_files=[fresh])
    assert done["unused"] == [fresh] and not (out / "latency-bs2.md").read_text().count("1.99")
    # the throughput windows' own keys do not touch a latency cell; its warm-up does
    config["latency"]["batch_sizes"] = [1]
    config["timing"]["timed_batches"] = 7
    write_tables(config, [], [], str(out), latency_files=[fresh])
    _, rows = read_table(out / "latency-bs1.md")
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "1.99 / 2.79 / 2.97"
    config["timing"]["warmup_batches"] = 1
    write_tables(config, [], [], str(out), latency_files=[fresh])
    _, rows = read_table(out / "latency-bs1.md")
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "stale"


def test_partial_tables_name_the_failed_latency_cell(tmp_path):
    """After a failed run: aggregate.py --what-ran with a plan whose latency job failed (its
    log ends with the exit status and the step's sentence) writes the latency table with
    `failed` and the reason, and the latency results that exist."""
    config = latency_config()
    config["latency"]["batch_sizes"] = [1]
    root = tmp_path / "results"
    done = write_latency(root, "onnxruntime", "alexnet", "fp32", 1, [2.0] * 20, config)
    log = tmp_path / "logs" / "latency" / "torch" / "alexnet" / "fp32.log"
    log.parent.mkdir(parents=True)
    log.write_text("starting\ninfbench: cell torch alexnet fp32 at batch size 1 ran out of host memory (x)\n"
                   "infbench-exit: 2\n")  # fmt: skip
    ok = tmp_path / "logs" / "ok.log"
    ok.write_text("infbench-exit: 0\n")
    step = {"name": "timing the latency cell", "own": True, "outputs": []}
    plan = {
        "config": config, "speed": [], "accuracy": [], "macs": [], "partial_dir": str(tmp_path / "partial"),
        "latency": [
            {"key": ["onnxruntime", "alexnet", "fp32", 1], "result": done, "steps": [{**step, "log": str(ok)}]},
            {"key": ["torch", "alexnet", "fp32", 1], "result": str(root / "latency/torch/alexnet/fp32-bs1.json"),
             "steps": [{**step, "log": str(log)}]},
        ],
    }  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "aggregate.py"), "--what-ran", str(tmp_path / "plan.json"),
                           "--out-dir", str(out)], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = (out / "latency-bs1.md").read_text()
    assert text.splitlines()[2].startswith("> Partial: written from what ran")
    _, rows = read_table(out / "latency-bs1.md")
    assert rows["alexnet"]["ONNX Runtime(fp32)"] == "2.00 / 2.00 / 2.00"
    assert rows["alexnet"]["PyTorch(fp32)"] == "failed"
    assert "alexnet PyTorch(fp32): cell torch alexnet fp32 at batch size 1 ran out of host memory (x)." in text


def test_the_energy_figure_plots_each_measured_cell(tmp_path):
    from infbench import plots

    speed, accuracy = make_results(tmp_path / "results")
    with_energy(speed[0], {"measured": True, "counter": "c", "joules": 250.0, "seconds": 5.0, "images": 12_000,
                           "images_per_joule": 48.0, "mean_watts": 50.0})  # fmt: skip
    with_energy(speed[2], {"measured": False, "reason": "no counter"})
    out = tmp_path / "tables"
    write_tables(CONFIG, speed, accuracy, str(out))
    rows = plots.read_cells(out / "cells.csv")
    fig, points = plots.energy_vs_speed_figure(rows, 8)
    assert [(p["model"], p["runtime"], p["images_per_s"], p["images_per_joule"]) for p in points] == [
        ("alexnet", "oneflow", 2637.4, 48.0)
    ]
    ((x, y),) = fig.axes[0].collections[0].get_offsets().tolist()
    assert (x, y) == (2637.4, 48.0)
    _, none = plots.energy_vs_speed_figure(rows, 50)
    assert none == []


# --- benchmarks/latency_energy_check.py: the GPU checks' parts, on the CPU ----------------


def check_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "latency_energy_check", REPO / "benchmarks" / "latency_energy_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_power_draw_integral_by_hand():
    check = check_script()
    samples = [(10.0, 100.0), (11.0, 200.0), (12.0, 200.0), (13.0, 50.0)]
    # 10.5 -> 11: 150 to 200 W over 0.5 s = 87.5 J; 11 -> 12: 200 J; 12 -> 12.5: 200 to 125 W = 81.25 J
    assert check.integral(samples, 10.5, 12.5) == pytest.approx(368.75)
    assert check.integral(samples, 10.0, 13.0) == pytest.approx(150 + 200 + 125)
    assert check.integral(samples, 9.9, 12.0) is None  # the samples begin after the first reading
    assert check.integral(samples[:1], 10.0, 10.0) is None


# nvidia-smi answering --query-gpu with the H200's name and power limit, and, with -lms, a
# power.draw of WATTS every period with its timestamp, as the real one prints them
NVIDIA_SMI = """#!{python}
import datetime, sys, time
args = sys.argv[1:]
fields = next(a for a in args if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
assert args[args.index("-i") + 1] == "0", args
if "-lms" in args:
    assert fields == ["timestamp", "power.draw"], fields
    while True:
        now = datetime.datetime.now()
        print(f"{{now:%Y/%m/%d %H:%M:%S}}.{{now.microsecond // 1000:03d}}, {watts}", flush=True)
        time.sleep(int(args[args.index("-lms") + 1]) / 1000)
print(", ".join({{"name": "NVIDIA H200", "power.limit": "700.00"}}[f] for f in fields))
"""


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    def install(watts):
        tool = tmp_path / "bin" / "nvidia-smi"
        tool.parent.mkdir(exist_ok=True)
        tool.write_text(NVIDIA_SMI.format(python=sys.executable, watts=watts))
        tool.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return install


def test_the_gpu_facts_idle_draw_and_power_limit(nvidia_smi):
    nvidia_smi("61.25")
    check = check_script()
    args = types.SimpleNamespace(device="cuda", power_field="power.draw", idle_seconds=0.6)
    facts = check.gpu_facts(args)
    assert facts == {"device": "0", "name": "NVIDIA H200", "limit_w": 700.0, "idle_w": 61.25, "field": "power.draw"}
    assert check.gpu_facts(types.SimpleNamespace(device="cpu")) is None


class Watts:
    """A device counter that draws ``watts`` all the time (joules from the perf counter)."""

    def __init__(self, watts):
        import time

        self.watts, self.clock, self.source, self.failure = watts, time.perf_counter, f"{watts} W stand-in", None

    def read(self):
        return [self.watts * self.clock()]

    def joules(self, before, after):
        return after[0] - before[0]


@pytest.mark.parametrize("draw, agrees", [("240.00", True), ("300.00", False)], ids=["agrees", "25% more"])
def test_an_energy_cell_against_power_draw_sampled_beside_it(onnx_cell, nvidia_smi, draw, agrees):
    """A real ONNX Runtime cell on the CPU, its counter a 240 W stand-in, nvidia-smi's
    power.draw sampled beside it: the counter's joules agree with the samples' integral
    when the draw is 240 W and not when it is 300 W; 240 W lies between an idle 60 W and
    the 700 W limit."""
    from infbench.runtimes.base import SessionSpec

    nvidia_smi(draw)
    check = check_script()
    onnx, _ = onnx_cell
    spec = SessionSpec(runtime="onnxruntime", model="alexnet", arch="alexnet", precision="fp32", batch_size=2,
                       device="cpu", artifact=str(onnx), crop=CROP, options={"threads": 1})  # fmt: skip
    args = types.SimpleNamespace(warmup=1, energy_seconds=1.0, windows=2, power_field="power.draw")
    facts = {"device": "0", "idle_w": 60.0, "limit_w": 700.0}
    row = check.energy_cell(spec, args, check.random_batches(2, CROP, 2), Watts(240.0), facts)
    block = row["energy"]
    assert block["measured"] and block["mean_watts"] == pytest.approx(240.0, rel=1e-3)
    assert block["images"] == 2 * row["timed_batches"] * 2
    assert row["power_samples"] >= 10  # 100 ms apart over at least a second
    assert row["energy_ratio"] == pytest.approx(240.0 / float(draw), rel=0.03)
    assert row["energy_plausible"] is agrees and row["watts_plausible"] is True
