"""The NVIDIA GPU as the machine reports it, outside any runtime: the one home of these facts.

``driver_version`` (the kernel module's), ``name_and_driver`` (nvidia-smi, for runtimes
that report neither), and the clocks: a speed cell reads ``clock_state`` just before its
first timed window and just after its last, so that its result says whether the GPU kept
its clocks while it was timed (``clock_drop``). Where there is no NVIDIA driver (a CPU
machine) every reading is None. Standard library only.
"""

import re
import subprocess

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


def name_and_driver(index=0):
    """GPU ``index``'s name and the driver version from nvidia-smi, or (None, None)."""
    raw = query(["name", "driver_version"], index)
    return (raw["name"] or None, raw["driver_version"] or None) if raw else (None, None)


def query(fields, index=0):
    """{field: text} for GPU ``index`` from nvidia-smi, or None where it cannot be read."""
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


def clock_state(index=0):
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
