"""The NVIDIA GPU as the machine reports it, outside any runtime: the one home of these facts.

``driver_version`` (the kernel module's), ``name_and_driver`` (nvidia-smi, for runtimes
that report neither), ``list_gpus`` (every GPU of the machine: index, UUID, model, for the
GPU slots of ``infbench.slots``), and the clocks: a speed cell reads ``clock_state`` just before its
first timed window and just after its last, so that its result says whether the GPU kept
its clocks while it was timed (``clock_drop``). Where there is no NVIDIA driver (a CPU
machine) every reading is None. ``energy_counter``: the board's energy counter through NVML
(nvidia-ml-py, imported only there), for the cells' energy (``infbench.energy``).
Every reading is of the GPU a runtime uses: the first of ``CUDA_VISIBLE_DEVICES`` (an index
or a UUID, as a scheduler such as SLURM sets it), else GPU 0. Standard library only.
"""

import os
import re
import subprocess

from infbench.errors import NotMeasured

# nvidia-smi --query-gpu fields -> the names a result records
CLOCK_FIELDS = {
    "clocks.sm": "sm_mhz",
    "clocks.mem": "mem_mhz",
    "temperature.gpu": "temperature_c",
    "power.draw": "power_w",
    "clocks_throttle_reasons.active": "throttle_reasons",
}
DROP = 0.10  # a fall of the SM clock by more than this fraction while timed flags the cell


def driver_version(proc_file="/proc/driver/nvidia/version"):
    """The NVIDIA kernel driver version (e.g. 580.159.04), or None where it cannot be read."""
    try:
        with open(proc_file) as f:
            # "NVRM version: NVIDIA UNIX [Open] Kernel Module [for x86_64]  580.95.05  ..."
            found = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", f.readline())
        if found:
            return found.group(1)
    except OSError:
        pass
    raw = query(["driver_version"])
    return raw["driver_version"] if raw else None


def visible_gpu():
    """The GPU the runtimes use, as nvidia-smi's ``-i`` and NVML name it: the first entry of
    ``CUDA_VISIBLE_DEVICES`` (an index, or a ``GPU-``/``MIG-`` UUID), else "0"."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return first or "0"


def list_gpus():
    """Every NVIDIA GPU of this machine in nvidia-smi's order, whatever CUDA_VISIBLE_DEVICES
    says: ``[{"index": "0", "uuid": "GPU-...", "name": "NVIDIA H200"}, ...]``; [] where
    nvidia-smi cannot be read (a CPU machine)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        values = [v.strip() for v in line.split(",", 2)]  # the name last: it may hold a comma
        if len(values) == 3 and values[0].isdigit():
            gpus.append(dict(zip(("index", "uuid", "name"), values)))
    return gpus


def name_and_driver(index=None):
    """GPU ``index``'s name and the driver version from nvidia-smi, or (None, None)."""
    raw = query(["name", "driver_version"], index)
    return (raw["name"] or None, raw["driver_version"] or None) if raw else (None, None)


def query(fields, index=None):
    """{field: text} for GPU ``index`` (default ``visible_gpu()``) from nvidia-smi, or None
    where it cannot be read."""
    index = visible_gpu() if index is None else index
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    values = [v.strip() for v in out.split(",")]
    return dict(zip(fields, values)) if len(values) == len(fields) else None


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None  # "[N/A]", "[Not Supported]"


def clock_state(index=None):
    """SM and memory clocks (MHz), temperature (C), power (W) and the active throttle
    reasons (a bit mask as nvidia-smi prints it) now, or None without nvidia-smi."""
    raw = query(list(CLOCK_FIELDS), index)
    if raw is None:
        return None
    state = {name: _number(raw[field]) for field, name in CLOCK_FIELDS.items() if name != "throttle_reasons"}
    state["throttle_reasons"] = raw["clocks_throttle_reasons.active"]
    return state


def clock_drop(before, after, tolerance=DROP):
    """A short phrase if the SM clock fell by more than ``tolerance`` from ``before`` to
    ``after`` (two ``clock_state`` readings), else None."""
    if not before or not after:
        return None
    was, now = before.get("sm_mhz"), after.get("sm_mhz")
    if not was or now is None or now >= was * (1 - tolerance):
        return None
    temp = ""
    if before.get("temperature_c") is not None and after.get("temperature_c") is not None:
        temp = f", {before['temperature_c']:.0f} -> {after['temperature_c']:.0f} C"
    return f"SM clock {was:.0f} -> {now:.0f} MHz while timed{temp}"


def energy_counter(nvml=None, device=None):
    """The board's energy counter of GPU ``device`` (default ``visible_gpu()``) through NVML:
    ``(read, source)``, ``read()`` giving the joules it has used since the driver loaded
    (``nvmlDeviceGetTotalEnergyConsumption``, millijoules; 64 bits, so it never wraps) and
    ``source`` saying which counter of which GPU. ``nvml`` is the ``pynvml`` module of
    nvidia-ml-py (a stand-in in the tests). Raises NotMeasured with the reason where there
    is no counter to read: nvidia-ml-py missing, no NVIDIA driver, a GPU without the counter
    (before Volta) or an instance that does not expose it (MIG).
    """
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            raise NotMeasured(
                "nvidia-ml-py (pynvml) is not installed in this runtime's environment; install"
                " the pins of its envs/requirements-*.txt"
            ) from None
    device = device or visible_gpu()
    try:
        nvml.nvmlInit()
        if device.isdigit():
            handle = nvml.nvmlDeviceGetHandleByIndex(int(device))
        else:
            handle = nvml.nvmlDeviceGetHandleByUUID(device)
        name = nvml.nvmlDeviceGetName(handle)
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # a GPU without the counter says so now
    except nvml.NVMLError as err:
        raise NotMeasured(f"NVML cannot read the energy counter of GPU {device} ({err})") from None
    name = name.decode() if isinstance(name, bytes) else name

    def read():
        try:
            return nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
        except nvml.NVMLError as err:
            raise NotMeasured(f"NVML stopped answering for GPU {device} ({err})") from None

    return read, f"NVML total energy of GPU {device} ({name})"
