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
