"""GPU slots on a machine of several GPUs (infbench/slots.py, workflow/scripts/gpu_slot.py),
on the CPU: N fake GPUs (an nvidia-smi on PATH that lists them as the real one answers
``--query-gpu=index,uuid,name``), real processes started through launch.sh as Snakemake
starts every step, and the plan Snakemake makes with ``--resources gpu=2``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO

from infbench import gpu, provenance, slots
from infbench.errors import UserError

SCRIPTS = REPO / "workflow" / "scripts"
LAUNCH = SCRIPTS / "launch.sh"
H200 = "NVIDIA H200"
UUIDS = [f"GPU-5e3c0b8a-7f1d-4c2e-9a6b-00000000000{i}" for i in range(4)]

# nvidia-smi as the slots ask it: every GPU, "index, uuid, name" a line (`--format=csv,
# noheader,nounits`: ", " between the fields, as in tests/test_gpu.py's recorded answer);
# a command line it does not expect fails
NVIDIA_SMI = """#!{python}
import sys
assert sys.argv[1:] == ["--query-gpu=index,uuid,name", "--format=csv,noheader,nounits"], sys.argv
for index, (uuid, name) in enumerate({gpus!r}):
    print(f"{{index}}, {{uuid}}, {{name}}")
"""


def fake_gpus(folder, names):
    """An nvidia-smi in ``folder`` that lists one GPU of each name in ``names``; returns PATH
    with it first."""
    folder.mkdir(exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(NVIDIA_SMI.format(python=sys.executable, gpus=list(zip(UUIDS, names))))
    tool.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def two_h200(tmp_path, monkeypatch):
    """Two fake H200s on PATH and a lock folder of this test's own."""
    monkeypatch.setenv("PATH", fake_gpus(tmp_path / "bin", [H200, H200]))
    monkeypatch.setenv(slots.LOCKS, str(tmp_path / "locks"))
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", slots.SLOT):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


# --- the machine's GPUs -------------------------------------------------------------------


def test_the_gpus_are_listed_by_index_uuid_and_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_gpus(tmp_path / "bin", [H200, "NVIDIA A100-SXM4-80GB"]))
    assert gpu.list_gpus() == [
        {"index": "0", "uuid": UUIDS[0], "name": H200},
        {"index": "1", "uuid": UUIDS[1], "name": "NVIDIA A100-SXM4-80GB"},
    ]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu.list_gpus() == []  # a CPU machine: no slots, steps run as before


def test_cuda_visible_devices_chooses_the_gpus_a_run_may_take():
    gpus = [{"index": str(i), "uuid": UUIDS[i], "name": H200} for i in range(4)]
    assert slots.candidates(gpus, None) == gpus
    assert slots.candidates(gpus, f"2,{UUIDS[3]}") == [gpus[2], gpus[3]]  # an index or a UUID
    assert slots.candidates(gpus, "MIG-4f2a0e4c-1b2d-5e6f-8a9b-0c1d2e3f4a5b") is None  # not a GPU it lists
    assert slots.candidates(gpus, "") is None


def test_gpus_of_two_models_are_refused_in_one_sentence():
    gpus = [
        {"index": "0", "uuid": UUIDS[0], "name": H200},
        {"index": "1", "uuid": UUIDS[1], "name": "NVIDIA A100-SXM4-80GB"},
        {"index": "2", "uuid": UUIDS[2], "name": H200},
    ]
    with pytest.raises(UserError) as err:
        slots.one_model(gpus)
    assert str(err.value) == (
        "this machine's GPUs are of 2 models (0, 2: NVIDIA H200; 1: NVIDIA A100-SXM4-80GB), and one run's"
        " cells and engines must run on one: start snakemake with CUDA_VISIBLE_DEVICES naming GPUs of one"
        " model (e.g. CUDA_VISIBLE_DEVICES=0,2)"
    )
    slots.one_model([gpus[0], gpus[2]])  # one model: nothing to say


def test_which_steps_take_a_gpu_and_which_are_timed():
    assert slots.step_needs("/w/scripts/measure_speed.py", ["--runtime", "torch", "--device", "cuda"]) == "timed"
    assert slots.step_needs("measure_speed.py", ["--device", "cpu"]) is None
    assert slots.step_needs("evaluate.py", ["--device=cuda"]) == "gpu"
    assert slots.step_needs("build_engine.py", ["--onnx", "x.onnx"]) == "gpu"
    assert slots.step_needs("calibrate_int8.py", ["--device", "cuda"]) is None


# --- cores of their own -----------------------------------------------------------------


def fake_topology(root, cores, threads_per_core):
    """A sysfs cpu folder of ``cores`` physical cores on one package, Linux's numbering:
    CPU c and c + cores are the two hyper-threads of core c."""
    for thread in range(threads_per_core):
        for core in range(cores):
            topology = root / f"cpu{thread * cores + core}" / "topology"
            topology.mkdir(parents=True)
            (topology / "physical_package_id").write_text("0\n")
            (topology / "core_id").write_text(f"{core}\n")
    return str(root)


def test_timed_cells_of_two_gpus_get_whole_cores_of_their_own(tmp_path):
    """4 cores with 2 hyper-threads each (CPUs 0-7, CPU c and c + 4 one core): GPU 0's timed
    cells run on cores 0 and 1 (CPUs 0, 1, 4, 5), GPU 1's on cores 2 and 3 (CPUs 2, 3, 6, 7).
    Cut by CPU number, 0-3 and 4-7, every core would be shared by both."""
    sysfs = fake_topology(tmp_path / "cpu", cores=4, threads_per_core=2)
    cpus = list(range(8))
    assert slots.core_share(0, 2, cpus, sysfs) == [0, 1, 4, 5]
    assert slots.core_share(1, 2, cpus, sysfs) == [2, 3, 6, 7]
    # 3 GPUs: a core each, the fourth core for no timed cell
    assert [slots.core_share(k, 3, cpus, sysfs) for k in range(3)] == [[0, 4], [1, 5], [2, 6]]
    assert slots.core_share(0, 1, cpus, sysfs) == cpus  # one GPU: every core, as before
    with pytest.raises(UserError, match="has 4 CPU cores for its 5 GPUs"):
        slots.core_share(0, 5, cpus, sysfs)


def test_a_timed_step_is_pinned_to_its_gpus_share_and_an_accuracy_run_is_not(two_h200):
    sysfs = fake_topology(two_h200 / "cpu", cores=4, threads_per_core=2)
    said = []
    first = slots.hold_for_step("measure_speed.py", ["--device", "cuda"], os.environ, said.append, range(8), sysfs)
    second = slots.hold_for_step("measure_speed.py", ["--device", "cuda"], os.environ, said.append, range(8), sysfs)
    third = None
    try:
        assert first[0]["CUDA_VISIBLE_DEVICES"] == UUIDS[0] and first[1] == [0, 1, 4, 5]
        assert second[0]["CUDA_VISIBLE_DEVICES"] == UUIDS[1] and second[1] == [2, 3, 6, 7]
        assert said[0] == f"gpu slot: GPU 0 ({UUIDS[0]}, {H200}), CPUs 0-1,4-5, pid {os.getpid()}"
        os.close(first[2])  # GPU 0 is free again
        third = slots.hold_for_step("evaluate.py", ["--device", "cuda"], os.environ, said.append, range(8), sysfs)
        assert third[0]["CUDA_VISIBLE_DEVICES"] == UUIDS[0] and third[1] is None
        assert json.loads(third[0][slots.SLOT])["cpus"] is None
    finally:
        for held in (second, third):
            if held:
                os.close(held[2])


# --- real processes through launch.sh -----------------------------------------------------

# a step that says which GPU it was given, its CPUs, its provenance's slot and when it ran
STEP = """
import json, os, sys, time
sys.path.insert(0, {scripts!r})
from infbench import provenance
t0 = time.time()
with open({pids!r} + "/" + str(os.getpid()), "w") as f:
    f.write("started")
time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
block = provenance.result_block({{}}, "s", "f", __file__, provenance.Phases(t0))
print(json.dumps({{
    "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "slot": block.get("gpu_slot"),
    "cpus": sorted(os.sched_getaffinity(0)), "launched": float(os.environ["INFBENCH_LAUNCHED"]),
    "start": t0, "end": time.time(), "pid": os.getpid(),
}}))
"""


def step_script(folder, name):
    """A step named like the workflow's ``name`` (measure_speed.py, evaluate.py, ...)."""
    (folder / "pids").mkdir(exist_ok=True)
    script = folder / name
    script.write_text(STEP.format(scripts=str(SCRIPTS), pids=str(folder / "pids")))
    return script


def launch(script, log, *args, env=None):
    """launch.sh running ``script`` as Snakemake runs a step."""
    return subprocess.Popen(
        ["bash", str(LAUNCH), sys.executable, "gone", str(script), str(log), *args],
        env=env or os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def report(log):
    """The step's own line (JSON) in its log, and the log."""
    text = log.read_text()
    line = next(line for line in text.splitlines() if line.startswith("{"))
    return json.loads(line), text


def test_no_two_steps_hold_one_gpu_at_once(two_h200):
    """Six accuracy runs on cuda started at once on two GPUs: each GPU runs one step at a
    time, both GPUs are used, and a step's result names the GPU it saw."""
    script = step_script(two_h200, "evaluate.py")
    logs = [two_h200 / f"step{i}.log" for i in range(6)]
    procs = [launch(script, log, "--device", "cuda", "--sleep", "0.4") for log in logs]
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    runs = [report(log)[0] for log in logs]
    by_gpu = {}
    for run in runs:
        assert run["slot"]["uuid"] == run["visible"] and run["slot"]["name"] == H200
        assert run["slot"]["index"] == UUIDS.index(run["visible"]) and run["slot"]["gpus"] == 2
        assert run["slot"]["pid"] == run["pid"]  # the step itself holds the lock
        by_gpu.setdefault(run["visible"], []).append((run["start"], run["end"]))
    assert sorted(by_gpu) == UUIDS[:2]
    for uuid, spans in by_gpu.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two steps on {uuid} at once: {spans}"
    waited = sorted(run["slot"]["waited_s"] for run in runs)
    assert all(w < 0.4 for w in waited[:2]) and waited[-1] >= 0.4  # two started at once, the rest queued


def test_a_killed_step_frees_its_gpu(tmp_path, monkeypatch):
    """One GPU: a second step waits (its log says for which holder) until the first step's
    process is killed (SIGKILL: no handler runs), then starts on that GPU."""
    monkeypatch.setenv("PATH", fake_gpus(tmp_path / "bin", [H200]))
    monkeypatch.setenv(slots.LOCKS, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    script = step_script(tmp_path, "build_engine.py")
    first = launch(script, tmp_path / "first.log", "--sleep", "60")
    deadline = time.monotonic() + 30
    while not list((tmp_path / "pids").iterdir()):
        assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    [holder] = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    second = launch(script, tmp_path / "second.log", "--sleep", "0")
    time.sleep(1.5)
    assert second.poll() is None and len(list((tmp_path / "pids").iterdir())) == 1  # still waiting
    waiting = (tmp_path / "second.log").read_text()
    assert f"gpu slot: waiting for a free GPU, all 1 are held (GPU 0: pid {holder}, build_engine.py" in waiting
    killed_at = time.monotonic()
    os.kill(holder, signal.SIGKILL)
    assert second.wait(timeout=30) == 0, second.stderr.read()
    assert time.monotonic() - killed_at < 5
    run, _ = report(tmp_path / "second.log")
    assert run["visible"] == UUIDS[0] and run["slot"]["waited_s"] >= 1.5
    assert first.wait(timeout=30) == 128 + signal.SIGKILL
    assert (tmp_path / "first.log").read_text().endswith("infbench-exit: 137\n")


def test_a_timed_step_runs_on_its_gpus_cores_and_records_its_slot(two_h200):
    """Through launch.sh, the timed steps of GPU 0 and GPU 1 are pinned to disjoint shares
    of this machine's cores (from its own topology) and record them; a CPU step takes
    nothing and records no slot; the start-up time is counted from the step's own start."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(slots.physical_cores(cpus)) < 2:
        pytest.skip("needs two CPU cores: one for each fake GPU's timed cells")
    script = step_script(two_h200, "measure_speed.py")
    procs = [launch(script, two_h200 / f"timed{i}.log", "--device", "cuda", "--sleep", "1") for i in range(2)]
    cpu_step = launch(script, two_h200 / "cpu.log", "--device", "cpu", "--sleep", "0")
    for proc in procs + [cpu_step]:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    runs = sorted((report(two_h200 / f"timed{i}.log")[0] for i in range(2)), key=lambda r: r["slot"]["index"])
    for k, run in enumerate(runs):
        assert run["slot"]["uuid"] == UUIDS[k] and run["cpus"] == run["slot"]["cpus"] == slots.core_share(k, 2, cpus)
        assert 0 <= run["start"] - run["launched"] < 5
    assert not set(runs[0]["cpus"]) & set(runs[1]["cpus"])
    plain, _ = report(two_h200 / "cpu.log")
    assert plain["visible"] is None and plain["slot"] is None and plain["cpus"] == cpus


def test_under_slurm_the_gpu_slurm_gave_is_left_alone(two_h200, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    script = step_script(two_h200, "measure_speed.py")
    proc = launch(script, two_h200 / "slurm.log", "--device", "cuda", "--sleep", "0")
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    run, text = report(two_h200 / "slurm.log")
    assert run["visible"] == "0" and run["slot"] is None and run["cpus"] == sorted(os.sched_getaffinity(0))
    assert "gpu slot: none taken, this is SLURM job 4242: SLURM gave it its GPU" in text
    assert not (two_h200 / "locks").exists()


def test_a_held_slot_reaches_the_provenance(monkeypatch):
    record = {"index": 1, "uuid": UUIDS[1], "name": H200, "gpus": 2, "cpus": [2, 3], "waited_s": 0.0}
    monkeypatch.setenv(slots.SLOT, json.dumps(record))
    assert provenance.result_block({}, "s", "f", __file__, provenance.Phases(time.time()))["gpu_slot"] == record
    monkeypatch.delenv(slots.SLOT)
    assert "gpu_slot" not in provenance.result_block({}, "s", "f", __file__, provenance.Phases(time.time()))


# --- the plan: --resources gpu=2 ----------------------------------------------------------


def plan(workdir, *args, env=None):
    """A dry-run's jobs: [{rule, threads, gpu, argv}] (argv: the step's command as bash splits it)."""
    config = {
        "dataset": {"kind": "synthetic", "images": 8, "seed": 3},
        "models": {"resnet50": {"arch": "resnet50", "resize": 72, "crop": 64, "checkpoint": {"random": 0}}},
        "runtimes": {
            "tensorrt": {"device": "cuda", "precisions": ["fp16"]},
            "torch": {"device": "cuda", "precisions": ["fp32"]},
            "onnxruntime": {"device": "cpu", "precisions": ["fp32"]},
        },
        "batch_sizes": [8],
        "latency": {"batch_sizes": [1]},
        "accuracy": {"reference": "torch/fp32"},
    }
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n", "-p", *args,
         "--directory", str(workdir), "--configfile", str(workdir / "config.yaml")],
        cwd=workdir, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = []
    blocks = re.split(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, flags=re.M)[1:]
    for rule, block in zip(blocks[::2], blocks[1::2]):
        job = {"rule": rule, "threads": 1, "gpu": 0, "argv": None}
        for line in block.splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "threads":
                job["threads"] = int(value)
            elif key == "resources":
                job["gpu"] = int(dict(r.split("=", 1) for r in value.split(", ")).get("gpu", 0))
            elif line.startswith(f"Shell command: {LAUNCH} "):  # a step (a compound one is the tables')
                command = 'args() { printf "%s\\0" "$@"; }; args ' + line[len("Shell command: ") :]
                out = subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout
                job["argv"] = out.decode().split("\0")[:-1]
        jobs.append(job)
    return jobs


def test_the_plan_with_two_gpus_runs_two_timed_cells_at_once(tmp_path):
    """--cores 4 --resources gpu=2: every job that takes a GPU slot is one Snakemake counts a
    GPU for, and the other way round; a timed cell on cuda asks for half the cores (two of
    them run side by side, one per GPU), on the CPU for all; builds and accuracy runs on cuda
    for one. With gpu=1, a timed cell on cuda asks for every core, as before."""
    jobs = plan(tmp_path / "two", "--cores", "4", "--resources", "gpu=2")
    steps = [job for job in jobs if job["argv"]]
    assert {job["rule"] for job in steps} >= {"build_engine", "speed", "latency", "evaluate", "preprocess"}
    for job in steps:
        script, args = job["argv"][3], job["argv"][5:]
        needs = slots.step_needs(script, args)
        assert (needs is not None) == (job["gpu"] == 1), job
        cuda = "--device" in args and slots.device_of(args) == "cuda"
        if job["rule"] in ("speed", "latency"):
            assert needs == ("timed" if cuda else None)
            assert job["threads"] == (2 if cuda else 4), job
        elif job["rule"] in ("evaluate", "build_engine"):
            assert job["threads"] == (1 if needs else 4), job
    timed_on_cuda = [job for job in steps if slots.step_needs(job["argv"][3], job["argv"][5:]) == "timed"]
    assert len(timed_on_cuda) == 4  # speed and latency of tensorrt fp16 and torch fp32
    one = plan(tmp_path / "one", "--cores", "4", "--resources", "gpu=1")
    assert {job["threads"] for job in one if job["rule"] in ("speed", "latency")} == {4}


def test_a_timed_cell_on_cuda_asks_for_its_gpus_share_of_the_cores_where_snakemake_runs_it():
    """The plan above holds where Snakemake runs the jobs itself; a cluster executor (SLURM:
    each job a node or its share, the GPU from SLURM) keeps every core, as a dry-run cannot
    show (it plans every job as run here)."""
    assert slots.timed_cores(16, "cuda", 4, local=True) == 4
    assert slots.timed_cores(16, "cuda", 3, local=True) == 5
    assert slots.timed_cores(2, "cuda", 4, local=True) == 1
    assert slots.timed_cores(16, "cuda", 1, local=True) == 16  # one GPU: every core, as before
    assert slots.timed_cores(16, "cuda", None, local=True) == 16  # no gpu resource given
    assert slots.timed_cores(16, "cpu", 4, local=True) == 16  # a CPU cell: nothing beside it
    assert slots.timed_cores(16, "cuda", 100, local=False) == 16  # profiles/slurm
