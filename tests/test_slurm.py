"""The workflow on a real SLURM cluster through profiles/slurm: a single-node SLURM started
on this machine (Debian's slurm-wlm and munge, installed when missing and when the tests run
as root), the tiny config run through it, and the same config run locally to compare.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, apt_install

pytestmark = pytest.mark.workflow

# the executor plugin's own place (`make env-cluster`), put on PYTHONPATH for the SLURM run only
CLUSTER_LIB = REPO / ".venv-cluster"
SLURM_TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun", "munge", "munged")
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def _missing_tools():
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [tool for tool in SLURM_TOOLS if shutil.which(tool, path=paths) is None]


def _tool(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _munge_works():
    munge = subprocess.run([_tool("munge"), "-n"], capture_output=True, timeout=30)
    if munge.returncode != 0:
        return False
    return subprocess.run([_tool("unmunge")], input=munge.stdout, capture_output=True, timeout=30).returncode == 0


def _start_munged():
    """Start munged as Debian's init script does; True if this call started it."""
    if _munge_works():
        return False
    if os.path.exists("/etc/init.d/munge"):
        subprocess.run(["/etc/init.d/munge", "start"], capture_output=True, timeout=60)
    else:
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", _tool("munged")], capture_output=True, timeout=60)
    for _ in range(50):
        if _munge_works():
            return True
        time.sleep(0.1)
    pytest.skip("munged could not be started, so SLURM cannot authenticate: see `munged --foreground`")


def _stop(pid_files):
    """Stop the daemons whose pids these files hold (those the fixture started) and wait for them."""
    pids = []
    for path in pid_files:
        try:
            pid = int(Path(path).read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError, IndexError):
            pass
    deadline = time.monotonic() + 10
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _slurm_conf(base, host, node_line):
    return f"""ClusterName=infbench
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=300
{node_line} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A single-node SLURM on this machine, from its own slurm.conf in a temporary directory:
    yields the environment for its client tools (and for Snakemake's SLURM executor), and
    stops slurmctld and slurmd afterwards, also when the test fails."""
    if not (CLUSTER_LIB / "snakemake_executor_plugin_slurm").is_dir():
        pytest.skip("the SLURM executor plugin is not installed: run `make env-cluster`")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if _missing_tools() and is_root and shutil.which("apt-get"):
        apt_install("slurm-wlm", "munge")
    missing = _missing_tools()
    if missing:
        pytest.skip(
            f"SLURM cannot be started here: {', '.join(missing)} missing (apt-get install slurm-wlm munge, as root)"
        )
    if not is_root:
        pytest.skip("SLURM cannot be started here: slurmctld and slurmd run as root and the tests do not")
    started_munged = _start_munged()
    base = tmp_path_factory.mktemp("slurm")
    (base / "state").mkdir()
    (base / "spool").mkdir()
    host = socket.gethostname().split(".")[0]
    # this machine's CPUs and memory as slurmd sees them
    node = subprocess.run([_tool("slurmd"), "-C"], capture_output=True, text=True, timeout=60).stdout.splitlines()[0]
    node = re.sub(r"^NodeName=\S+", f"NodeName={host}", node)
    conf = base / "slurm.conf"
    conf.write_text(_slurm_conf(base, host, node))
    # The jobstep plugin starts each step with srun after dropping SLURM_* variables, SLURM_CONF
    # among them; srun would then look for /etc/slurm/slurm.conf. A shim puts this one back.
    shims = base / "bin"
    shims.mkdir()
    (shims / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {_tool("srun")} "$@"\n')
    (shims / "srun").chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{shims}:{os.environ['PATH']}"}
    try:
        subprocess.run([_tool("slurmctld"), "-f", str(conf)], env=env, check=True, timeout=60)
        subprocess.run([_tool("slurmd"), "-f", str(conf)], env=env, check=True, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30)
            if state.stdout.strip() == "idle":
                break
            if time.monotonic() > deadline:
                logs = "".join(
                    (base / name).read_text()[-3000:]
                    for name in ("slurmctld.log", "slurmd.log")
                    if (base / name).exists()
                )
                raise AssertionError(f"the SLURM node never became idle (sinfo: {state.stdout!r}):\n{logs}")
            time.sleep(0.2)
        yield env
    finally:
        _stop([base / "slurmd.pid", base / "slurmctld.pid"])
        if started_munged and os.path.exists("/etc/init.d/munge"):
            subprocess.run(["/etc/init.d/munge", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def slurm_config():
    """The smallest config that has every kind of step: one model, two runtimes on the CPU."""
    return {
        "dataset": {"kind": "synthetic", "images": 8, "seed": 3},
        "models": {"alexnet": {"arch": "alexnet", "resize": 72, "crop": 64, "checkpoint": {"random": 0}}},
        "runtimes": {
            "torch": {"device": "cpu", "precisions": ["fp32"], "threads": 1},
            "onnxruntime": {"device": "cpu", "precisions": ["fp32"], "threads": 1},
        },
        "batch_sizes": [4],
        "timing": {"warmup_batches": 1, "timed_batches": 2, "windows": 1, "staged_batches": 2},
        "latency": {"batch_sizes": []},  # latency jobs are speed jobs' kin (test_workflow.py runs them)
        "accuracy": {"reference": "torch/fp32"},
    }


def _start(workdir, args, env):
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(slurm_config(), sort_keys=False))
    cmd = SNAKEMAKE + args + ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, what):
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"the {what} run failed:\n{out[-8000:]}"
    return out, time.monotonic() - t0


def _without_numbers(text):
    """A table with each number as N and the markdown columns' padding (which follows the
    numbers' widths) collapsed."""
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return re.sub(r" +", " ", re.sub(r"-{3,}", "---", text))


def test_the_matrix_runs_as_slurm_jobs_and_gives_the_tables_of_a_local_run(slurm, tmp_path):
    cluster_env = {**slurm, "PYTHONPATH": os.pathsep.join(filter(None, [str(CLUSTER_LIB), slurm.get("PYTHONPATH")]))}
    t0 = time.monotonic()
    # --cores 1: a step asks for one CPU, so that the two accuracy runs may share the node;
    # status checks from the first second on (they wait longer each time nothing finished)
    on_slurm = _start(
        tmp_path / "slurm",
        ["--profile", str(REPO / "profiles/slurm"), "--cores", "1", "--latency-wait", "5",
         "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"],
        cluster_env,
    )  # fmt: skip
    # the local run of the same config meanwhile: the SLURM run mostly waits on the queue
    local = _start(tmp_path / "local", ["--cores", "2", "--resources", "gpu=1"], os.environ)
    slurm_out, _ = _finish(on_slurm, "SLURM")
    slurm_wall = time.monotonic() - t0
    _finish(local, "local")
    print(f"SLURM run {slurm_wall:.1f} s, both runs {time.monotonic() - t0:.1f} s")

    # every job SLURM saw, and each completed: the data steps (one group job), the model's
    # weights and ONNX (one group job), two timed cells and two accuracy runs. The node has no
    # GPU: a cell on the CPU that asked for one would never have started.
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=slurm, capture_output=True, text=True)
    states = dict(line.split() for line in jobs.stdout.splitlines())
    print(f"SLURM saw {len(states)} jobs")
    assert sorted(states.values()) == ["COMPLETED"] * 6, jobs.stdout
    # which step ran as which job: the plugin's log per job (rule or group)/[wildcards/]jobid.log
    slurm_logs = tmp_path / "slurm" / ".snakemake" / "slurm_logs"
    ran_as = {p.stem: p.relative_to(slurm_logs).parts[0] for p in slurm_logs.rglob("*.log")}
    assert sorted(ran_as) == sorted(states)
    assert sorted(ran_as.values()) == sorted(
        ["group_data_index_dataset_preprocess_synthetic_images", "group_model_convert_weights_export_onnx"]
        + ["rule_speed", "rule_speed", "rule_evaluate", "rule_evaluate"]
    )
    # each cell's result names its job; scores, tables and plots ran where Snakemake ran
    results = tmp_path / "slurm" / "results"
    for runtime in ("torch", "onnxruntime"):
        speed = json.loads((results / f"speed/{runtime}/alexnet/fp32-bs4.json").read_text())
        assert ran_as[speed["provenance"]["slurm"]["job_id"]] == "rule_speed"
        assert speed["provenance"]["slurm"]["node"] == socket.gethostname().split(".")[0]
        accuracy = json.loads((results / f"accuracy/{runtime}/alexnet/fp32.json").read_text())
        assert ran_as[accuracy["provenance"]["slurm"]["job_id"]] == "rule_evaluate"
    for rule in ("score", "tables", "plots"):
        assert f"localrule {rule}:" in slurm_out
    local_results = tmp_path / "local" / "results"
    if "SLURM_JOB_ID" not in os.environ:  # outside SLURM, a result says nothing of it
        assert (
            "slurm" not in json.loads((local_results / "speed/torch/alexnet/fp32-bs4.json").read_text())["provenance"]
        )

    # the same tables as the local run: the precision table exactly, the others but for the
    # timed numbers
    tables, local_tables = results / "tables", local_results / "tables"
    assert (tables / "precision.md").read_text() == (local_tables / "precision.md").read_text()
    for name in ("speed-bs4.md", "report.md"):
        assert _without_numbers((tables / name).read_text()) == _without_numbers((local_tables / name).read_text())
    for plot in ("throughput-bs4.png", "accuracy-vs-speed-bs4.svg"):
        assert (results / "plots" / plot).stat().st_size > 0


def test_the_slurm_executor_stays_out_of_the_main_environment():
    """Importable, the plugin asks SLURM for its settings at every Snakemake start: only a
    cluster run, with .venv-cluster on PYTHONPATH, may see it."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('snakemake_executor_plugin_slurm'))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert found.stdout.strip() == "None"
