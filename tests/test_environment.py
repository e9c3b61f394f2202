"""The environments `make env` builds: what a user checks before trusting a OneFlow column."""

import os
import subprocess

import pytest

from conftest import ONEFLOW_PYTHON, REPO


def test_make_without_python310_says_what_to_install_and_carries_on():
    proc = subprocess.run(
        ["make", "--no-print-directory", "env-oneflow", "PYTHON310="],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr  # the rest of the workflow still runs
    assert proc.stdout.strip() == (
        "infbench: no Python 3.10 found, so the OneFlow environment was not built:"
        " install python3.10 or run make PYTHON310=/path/to/python3.10"
    )


def test_make_builds_the_oneflow_env_with_the_named_interpreter():
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", "-B", ".venv-oneflow/.installed",
         "PYTHON310=/opt/py/bin/python3.10"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "/opt/py/bin/python3.10 -m venv .venv-oneflow" in proc.stdout
    assert "pip install --quiet -r envs/requirements-oneflow.txt" in proc.stdout


@pytest.mark.skipif(not ONEFLOW_PYTHON.exists(), reason=f"no OneFlow environment at {ONEFLOW_PYTHON}: run `make env-oneflow`")
def test_the_oneflow_env_runs_oneflow_090_on_python310_without_torch():
    probe = (
        "import sys, importlib.util, numpy, oneflow, flowvision, safetensors;"
        "print(sys.version_info[:2], oneflow.__version__, flowvision.__version__,"
        " numpy.__version__.split('.')[0], importlib.util.find_spec('torch') is None)"
    )
    proc = subprocess.run(
        [str(ONEFLOW_PYTHON), "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "(3, 10) 0.9.0 0.2.1 1 True"


LINUX_TAGS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
              "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def test_the_tensorrt_pins_resolve_for_python310_from_pypi_alone(tmp_path):
    """`pip install --dry-run` of envs/requirements-tensorrt.txt, dependencies included, for
    CPython 3.10 on x86-64 Linux: what `make env-tensorrt` installs, without NVIDIA's index
    and without downloading the 2 GB (pip reads the wheels' metadata only)."""
    import json
    import sys

    report = tmp_path / "report.json"
    platforms = [arg for tag in LINUX_TAGS for arg in ("--platform", tag)]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--no-cache-dir",
         "--report", str(report), "--python-version", "3.10", "--only-binary=:all:", *platforms,
         "--target", str(tmp_path / "target"), "-r", str(REPO / "envs" / "requirements-tensorrt.txt")],
        capture_output=True, text=True, timeout=600,
    )
    if "No matching distribution found for tensorrt" in proc.stderr or "Network is unreachable" in proc.stderr:
        pytest.skip("no package index reachable from here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert (got["tensorrt"], got["nvidia-cudnn-cu12"], got["nvidia-cublas-cu12"]) == ("8.6.0", "8.9.7.29", "12.1.3.1")
    # cuda-python matches TensorRT 8.6's CUDA major (12): 13.x would need a CUDA 13 driver
    assert got["cuda-python"].startswith("12.") and got["cuda-bindings"].startswith("12.")
    assert not any(name.endswith("-cu13") or name.endswith("-cu11") for name in got)


@pytest.mark.parametrize("major", ["12", "13"])
def test_the_nvidia_index_variants_pin_cuda_python_of_tensorrts_cuda_major(tmp_path, major):
    """envs/requirements-tensorrt-nvidia-cuNN.txt: tensorrt-cuNN with the cuda-python of the
    same CUDA major. TensorRT's own -libs are on NVIDIA's index only, which no machine here
    reaches; the rest of each file resolves from PyPI alone (`pip install --dry-run`), and
    pip's choice of cuda-python and cuda-bindings is of major NN."""
    import json
    import sys

    lines = (REPO / "envs" / f"requirements-tensorrt-nvidia-cu{major}.txt").read_text().splitlines()
    reqs = [line for line in lines if line and not line.startswith(("#", "--"))]
    assert [r for r in reqs if r.startswith("tensorrt")] == [next(r for r in reqs if r.startswith(f"tensorrt-cu{major}>="))]
    assert "--extra-index-url https://pypi.nvidia.com" in lines
    rest = tmp_path / "rest.txt"
    rest.write_text("\n".join(r for r in reqs if not r.startswith("tensorrt")) + "\n")
    report = tmp_path / "report.json"
    platforms = [arg for tag in LINUX_TAGS for arg in ("--platform", tag)]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--no-cache-dir",
         "--report", str(report), "--python-version", "3.12", "--only-binary=:all:", *platforms,
         "--target", str(tmp_path / "target"), "-r", str(rest)],
        capture_output=True, text=True, timeout=600,
    )
    if "No matching distribution found for cuda-python" in proc.stderr or "Network is unreachable" in proc.stderr:
        pytest.skip("no package index reachable from here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert got["cuda-python"].split(".")[0] == major and got["cuda-bindings"].split(".")[0] == major, got


def test_an_air_gapped_node_installs_from_the_wheelhouse_and_plans_the_gpu_run(tmp_path):
    """`make wheelhouse` on a connected machine, then envs/offline-gpu.sh with no index:
    the node's venv gets Snakemake, ONNX Runtime's CUDA build and the rest from the wheels
    alone, and plans config/gpu.yaml (a dry-run: `-n`). The `workflow` stack leaves PyTorch
    to the node; the test's node has none, which the dry-run does not need."""
    import shutil
    import sys

    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    base = os.path.join(sys.base_prefix, "bin", "python3")
    made = subprocess.run(
        ["make", "--no-print-directory", "wheelhouse", f"WHEEL_PYTHON={base}", "WHEELHOUSE_STACK=workflow"],
        cwd=clone, capture_output=True, text=True, timeout=600,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    wheels = sorted(p.name for p in (clone / "wheelhouse").glob("*.whl"))
    assert any(w.startswith("onnxruntime_gpu-1.31.1-") for w in wheels)
    assert any(w.startswith("snakemake-9.27.1-") for w in wheels)
    assert not any(w.startswith(("torch-", "torchvision-", "onnxruntime-1")) for w in wheels)
    pulp = next((clone / "wheelhouse").glob("pulp-*.whl"))
    import zipfile

    assert not [n for n in zipfile.ZipFile(pulp).namelist() if n.startswith("pulp/solverdir/")]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    # no .pyc compiled at install (a node's pip does it): installs the same files, 61 s -> 40 s here
    env.update(PYTHON=base, PIP_NO_INDEX="1", PIP_NO_COMPILE="1", PIP_CONFIG_FILE=os.devnull)
    proc = subprocess.run(
        ["bash", "envs/offline-gpu.sh", "wheelhouse", "-n"],
        cwd=clone, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.splitlines()[0] == "9.27.1"
    assert "results/speed/onnxruntime/inception_v3/int8-bs50.json" in proc.stdout
    version = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
        capture_output=True, text=True, timeout=60,
    )
    assert version.stdout.strip() == "1.31.1", version.stderr[-1000:]


def test_offline_gpu_passes_its_extra_arguments_to_snakemake_as_targets(tmp_path):
    """envs/offline-gpu.sh WHEELHOUSE TARGET -n, where TARGET is a table a previous run wrote:
    Snakemake plans TARGET (nothing to do) instead of reading it as a second config file. The
    clone's .venv/bin/snakemake is the project's Snakemake (the wheelhouse is empty: nothing
    to install), so only the script's own command line is under test."""
    import sys

    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes((REPO / name).read_bytes())
    (clone / "wheelhouse").mkdir()
    (clone / "wheelhouse" / "requirements.txt").write_text("# nothing: Snakemake is the project's\n")
    (clone / ".venv" / "bin").mkdir(parents=True)
    snakemake = clone / ".venv" / "bin" / "snakemake"
    snakemake.write_text(f'#!/bin/sh\nexec {sys.prefix}/bin/snakemake "$@"\n')
    snakemake.chmod(0o755)
    table = clone / "results" / "tables" / "speed-bs8.md"
    table.parent.mkdir(parents=True)
    table.write_text(  # a speed table as the tables step writes one (not YAML)
        "| model | PyTorch(fp32) | ONNX Runtime(fp32) |\n|:--|--:|--:|\n| alexnet | 296 | 1323* |\n\n"
        "`*`: timing spread ((max - min) / median of the windows) above timing.max_spread = 10 %\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(PYTHON=os.path.join(sys.base_prefix, "bin", "python3"), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    proc = subprocess.run(
        ["bash", "envs/offline-gpu.sh", "wheelhouse", "results/tables/speed-bs8.md", "-n"],
        cwd=clone, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Nothing to be done (all requested files are present and up to date)." in proc.stdout + proc.stderr


def test_offline_install_without_a_wheelhouse_says_how_to_make_one(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "envs/offline-gpu.sh"), str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"infbench: {tmp_path / 'none'}/requirements.txt does not exist: run"
        f" `make wheelhouse WHEEL_PYTHON=...` on a connected machine and copy {tmp_path / 'none'}/ here"
    )
