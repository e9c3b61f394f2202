"""The environments `make env` builds: what a user checks before trusting a OneFlow column."""

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
