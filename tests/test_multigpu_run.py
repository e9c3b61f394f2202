"""The checks of a run over several GPUs (benchmarks/h200/run.sh GPUS=N): slots_check.py on a
run's results, logs and nvidia-smi's process samples, and compare_cells.py on two runs'
cells, each on files whose verdicts are worked out by hand."""

import json
import os
import subprocess
import sys

from conftest import REPO
from test_gpu_slots import H200, UUIDS, fake_gpus

from infbench import results, slots

SLOTS_CHECK = REPO / "benchmarks/h200/slots_check.py"
COMPARE = REPO / "benchmarks/compare_cells.py"


def speed_result(root, runtime, precision, bs, rate, slot=None, span=None):
    """A speed result as measure_speed.py writes it, with what the checks read."""
    start, end = span or ("10:00:00", "10:00:01")
    record = {
        "cell": {"runtime": runtime, "model": "resnet50", "arch": "resnet50", "precision": precision,
                 "batch_size": bs, "device": "cuda"},
        "result": {"images_per_s": rate},
        "provenance": {"started": f"2026-12-03T{start}+00:00", "finished": f"2026-12-03T{end}+00:00",
                       **({"gpu_slot": slot} if slot else {})},
    }  # fmt: skip
    path = root / "results" / "speed" / runtime / "resnet50" / f"{precision}-bs{bs}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results.write(path, record)


def slot(k, cpus, pid):
    return {"index": k, "uuid": UUIDS[k], "name": H200, "gpus": 2, "cpus": cpus, "waited_s": 0.0, "pid": pid}


def slot_line(tmp_path, monkeypatch, k, script):
    """The ``gpu slot:`` line a step's log gets for GPU k (said by infbench.slots itself)."""
    monkeypatch.setenv("PATH", fake_gpus(tmp_path / "bin", [H200, H200]))
    monkeypatch.setenv(slots.LOCKS, str(tmp_path / "locks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", str(k))
    said = []
    _, _, fd = slots.hold_for_step(script, ["--device", "cuda"], os.environ, said.append, cpus=[0, 1, 2, 3])
    os.close(fd)
    return said[-1]


def check(root, *extra):
    return subprocess.run(
        [sys.executable, str(SLOTS_CHECK), "--results", str(root / "results"), "--logs", str(root / "logs"),
         "--json", str(root / "check.json"), *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_run_that_kept_each_gpu_and_core_to_one_timed_cell_passes(tmp_path, monkeypatch):
    """GPU 0 runs two cells back to back (the second starts the second the first ends), GPU 1
    one beside them on other cores; the pids nvidia-smi saw on each GPU are those the logs
    gave that GPU, one pid no log names."""
    speed_result(tmp_path, "torch", "fp16", 8, 100.0, slot(0, [0, 1], 111), ("10:00:00", "10:00:10"))
    speed_result(tmp_path, "torch", "fp16", 50, 300.0, slot(0, [0, 1], 111), ("10:00:10", "10:00:20"))
    speed_result(tmp_path, "tensorrt", "fp16", 8, 200.0, slot(1, [2, 3], 222), ("10:00:05", "10:00:15"))
    (tmp_path / "logs").mkdir()
    line0 = slot_line(tmp_path, monkeypatch, 0, "measure_speed.py")
    line1 = slot_line(tmp_path, monkeypatch, 1, "evaluate.py")
    me = os.getpid()  # the line names this process: both steps "ran" as it, so give the log of each its own pid
    (tmp_path / "logs" / "speed.log").write_text(f"{line0.replace(f'pid {me}', 'pid 111')}\nwindow 1/3\n")
    (tmp_path / "logs" / "evaluate.log").write_text(f"{line1.replace(f'pid {me}', 'pid 222')}\n")
    apps = tmp_path / "apps.csv"
    apps.write_text(
        f"2026/12/03 10:00:01.000, 111, {UUIDS[0]}, 1200 MiB\n2026/12/03 10:00:06.000, 222, {UUIDS[1]}, 900 MiB\n"
        f"2026/12/03 10:00:07.000, 111, {UUIDS[0]}, 1200 MiB\n2026/12/03 10:00:07.000, 999, {UUIDS[1]}, 10 MiB\n"
    )
    proc = check(tmp_path, "--apps", str(apps))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = json.loads((tmp_path / "check.json").read_text())
    assert findings == {
        "per_gpu": {UUIDS[0]: 2, UUIDS[1]: 1},
        "overlaps": [],
        "shared_cores": [],
        "processes": {"matched": 2, "mismatched": [], "unknown": 1},
    }


def test_two_cells_on_one_gpu_shared_cores_and_a_runtime_on_another_gpu_fail(tmp_path):
    speed_result(tmp_path, "torch", "fp16", 8, 100.0, slot(0, [0, 1], 111), ("10:00:00", "10:00:10"))
    speed_result(tmp_path, "torch", "fp16", 50, 300.0, slot(0, [0, 1], 112), ("10:00:09", "10:00:20"))  # on GPU 0 too
    speed_result(tmp_path, "tensorrt", "fp16", 8, 200.0, slot(1, [1, 2], 222), ("10:00:15", "10:00:25"))  # CPU 1
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "evaluate.log").write_text(f"gpu slot: GPU 1 ({UUIDS[1]}, {H200}), pid 333\n")
    apps = tmp_path / "apps.csv"
    apps.write_text(f"2026/12/03 10:00:01.000, 333, {UUIDS[0]}, 900 MiB\n")  # given GPU 1, ran on GPU 0
    proc = check(tmp_path, "--apps", str(apps))
    assert proc.returncode == 1
    findings = json.loads((tmp_path / "check.json").read_text())
    assert findings["overlaps"] == [["speed torch/resnet50/fp16/bs50", "speed torch/resnet50/fp16/bs8"]]
    assert findings["shared_cores"] == [["speed tensorrt/resnet50/fp16/bs8", "speed torch/resnet50/fp16/bs50"]]
    assert findings["processes"]["mismatched"] == [{"pid": 333, "slot": UUIDS[1], "ran_on": UUIDS[0]}]


def test_each_cell_of_two_runs_is_compared_within_the_tolerance(tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    speed_result(one, "torch", "fp16", 8, 1000.0)
    speed_result(one, "torch", "fp16", 50, 2000.0)
    speed_result(one, "tensorrt", "fp32", 8, 500.0)  # not in the second run
    speed_result(many, "torch", "fp16", 8, 1015.0)  # +1.5 %
    speed_result(many, "torch", "fp16", 50, 1950.0)  # -2.5 %
    proc = subprocess.run(
        [sys.executable, str(COMPARE), str(one / "results"), str(many / "results"), "--json", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "c.json").read_text())
    assert [(r["cell"], round(r["ratio"], 4), r["off"]) for r in record["rows"]] == [
        ("torch/resnet50/fp16/bs50", 0.975, True),
        ("torch/resnet50/fp16/bs8", 1.015, False),
    ]
    assert record["only"] == {"first": ["tensorrt/resnet50/fp32/bs8"], "second": []}
    assert "| torch/resnet50/fp16/bs50 | 2,000.0 | 1,950.0 | 0.975 (off by more than 2%) |" in proc.stdout
