"""The GPU facts the tables lean on: the clocks a speed cell reads (``infbench.gpu``) and the
dense peak rates behind "% of peak" (``workflow/data/gpu_peaks.yaml``), each against a source
outside the code."""

import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from infbench import gpu

REPO = Path(__file__).resolve().parents[1]

# --- clock_state: nvidia-smi's answer, parsed ------------------------------------------

# One reading of the H200 this project measures on, as nvidia-smi answered the clock probe's
# query there (`nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,
# clocks_throttle_reasons.active --format=csv,noheader,nounits -i 0`, driver 580.159.04,
# 2026-12-02, benchmarks/h200/run.sh start): the fields in the order asked, ", " between them.
H200_ANSWER = "1980, 3201, 31, 125.44, 0x0000000000000000"
H200_READING = dict(
    zip(
        ["clocks.sm", "clocks.mem", "temperature.gpu", "power.draw", "clocks_throttle_reasons.active"],
        H200_ANSWER.split(", "),
    )
)

NVIDIA_SMI = """#!{python}
import sys
reading = {reading!r}
args = sys.argv[1:]
assert "--format=csv,noheader,nounits" in args and args[-2:] == ["-i", "0"], args
fields = next(a for a in args if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
print(", ".join(reading[f] for f in fields))
"""


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that answers --query-gpu with the H200 reading, field by field in
    the order asked, as the real one does (a command line it does not expect fails)."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text(NVIDIA_SMI.format(python=sys.executable, reading=H200_READING))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")


def test_clock_state_reads_the_sm_and_memory_clocks_of_an_h200(nvidia_smi):
    assert gpu.clock_state() == {
        "sm_mhz": 1980.0,
        "mem_mhz": 3201.0,
        "temperature_c": 31.0,
        "power_w": 125.44,
        "throttle_reasons": "0x0000000000000000",
    }


def test_the_clock_drop_mark_compares_the_sm_clock_of_two_readings(nvidia_smi):
    """The mark's input: an H200 that kept its clocks is not marked; the same reading with
    the SM clock more than 10 % lower after the windows is. (Read with the fields swapped,
    the mark would watch the memory clock, which holds at 3,201 MHz while the SM clock falls.)"""
    before = gpu.clock_state()
    assert gpu.clock_drop(before, gpu.clock_state()) is None
    after = {**before, "sm_mhz": 1755.0, "temperature_c": 83.0}
    assert gpu.clock_drop(before, after) == "SM clock 1980 -> 1755 MHz while timed, 31 -> 83 C"


def test_without_nvidia_smi_every_reading_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.clock_state() is None and gpu.name_and_driver() == (None, None)


# --- gpu_peaks.yaml against NVIDIA's datasheets ----------------------------------------

# The figures as NVIDIA prints them (TFLOPS; TOPS for int8), whether they assume 2:4
# sparsity (the file holds dense rates: sparse figures are halved), and where they are
# printed. fp32 is the CUDA cores' rate; tf32, fp16 and int8 the tensor cores'.
DATASHEETS = {
    "NVIDIA H200": {
        "source": "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column"
        " (nvidia.com/en-us/data-center/h200); the same GH100 compute as H100 SXM",
        "printed": {"fp32": "67", "tf32": "989", "fp16": "1979", "int8": "3958"},
        "sparse": {"tf32", "fp16", "int8"},
    },
    "NVIDIA H100 80GB HBM3": {
        "source": "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column"
        " (nvidia.com/en-us/data-center/h100); Hopper whitepaper: 66.9 / 494.7 / 989.4 / 1978.9 dense",
        "printed": {"fp32": "67", "tf32": "989", "fp16": "1979", "int8": "3958"},
        "sparse": {"tf32", "fp16", "int8"},
    },
    "NVIDIA A100-SXM4-80GB": {
        "source": "NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf),"
        " A100 80GB SXM column, the figures without sparsity",
        "printed": {"fp32": "19.5", "tf32": "156", "fp16": "312", "int8": "624"},
        "sparse": set(),
    },
    "NVIDIA GeForce RTX 2080 Ti": {
        "source": "NVIDIA Turing GPU architecture whitepaper, table 1, GeForce RTX 2080 Ti Founders"
        " Edition: peak FP32, FP16 tensor with FP32 accumulate, INT8 tensor",
        "printed": {"fp32": "14.2", "fp16": "56.9", "int8": "227.7"},
        "sparse": set(),
    },
}


def _datasheet_interval(printed, sparse):
    """The dense rates that print as ``printed``: within half a unit of its last digit,
    halved where the datasheet counts 2:4 sparsity."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    half_unit = 0.5 * 10.0**-decimals
    low, high = float(printed) - half_unit, float(printed) + half_unit
    return (low / 2, high / 2) if sparse else (low, high)


def test_every_peak_is_its_datasheet_figure():
    peaks = yaml.safe_load((REPO / "workflow/data/gpu_peaks.yaml").read_text())
    assert set(peaks) == set(DATASHEETS), "a GPU in gpu_peaks.yaml without its datasheet here (or the reverse)"
    for device, sheet in DATASHEETS.items():
        rates = {k: v for k, v in peaks[device].items() if k != "source"}
        assert set(rates) == set(sheet["printed"]), device
        for precision, printed in sheet["printed"].items():
            low, high = _datasheet_interval(printed, precision in sheet["sparse"])
            value = rates[precision]
            assert low <= value < high, (
                f"{device} {precision}: {value} is not {printed} {'/ 2 ' * (precision in sheet['sparse'])}as printed"
            )
        assert peaks[device]["source"], device


def test_the_datasheet_interval_is_what_a_printed_figure_allows():
    assert _datasheet_interval("19.5", False) == (19.45, 19.55)
    low, high = _datasheet_interval("1979", True)  # H100's fp16, with sparsity
    assert math.isclose(low, 989.25) and math.isclose(high, 989.75)
