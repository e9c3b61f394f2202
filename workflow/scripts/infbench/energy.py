"""The energy a speed cell's timed windows used, from the device's own energy counter.

A counter is read just before the first timed window and just after the last, outside
them (``timing.measure``'s ``meter``); the difference is the energy of every image of the
windows, so a cell reports images per joule and mean watts (``record``). The counters:

- NVIDIA GPU: the board's total energy through NVML (``infbench.gpu.energy_counter``);
- CPU: RAPL's package counters, ``/sys/class/powercap/intel-rapl:<n>/energy_uj`` summed over
  the packages (the whole package, cores and uncore, with every process on it; not DRAM),
  each counting up to its ``max_energy_range_uj`` and starting again from 0.

Where a device has none (no NVML, a virtual machine without RAPL, a counter only root may
read) the cell's energy is ``not measured`` with the reason, never a number made up.
Standard library only: every runtime's interpreter measures speed.
"""

import glob
import os

from infbench import gpu
from infbench.errors import NotMeasured

RAPL_ROOT = "/sys/class/powercap"


class Meter:
    """One device's energy counter, possibly in several parts (RAPL: a counter per CPU
    package). ``read()`` gives a reading (a list, a count per part), or None once a read
    failed (``failure`` says why); ``joules(before, after)`` the energy between two."""

    def __init__(self, source, parts):
        self.source = source  # which counter of which device, in words
        # per part: (read() -> a count, joules per count, the count it wraps at or None)
        self.parts = parts
        self.failure = None

    def read(self):
        try:
            return [read() for read, _, _ in self.parts]
        except NotMeasured as err:
            self.failure = str(err)
            return None

    def joules(self, before, after):
        """The energy between two readings; a part whose count is lower after than before
        wrapped once (a cell's windows are far shorter than a wrap: RAPL's packages wrap
        after about 262 kJ, over 20 minutes at 200 W)."""
        total = 0.0
        for (_, unit, wraps_at), was, now in zip(self.parts, before, after):
            counted = now - was
            if counted < 0 and wraps_at:
                counted += wraps_at
            total += counted * unit
        return total


def _read_int(path):
    """A counter file's integer, or NotMeasured naming the file."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except PermissionError:
        raise NotMeasured(
            f"RAPL's {path} is readable by root only on this machine (Linux restricts it since"
            " 5.10); run as root or make the energy_uj files readable (chmod o+r)"
        ) from None
    except (OSError, ValueError) as err:
        raise NotMeasured(f"RAPL's {path} cannot be read ({err.__class__.__name__}: {err})") from None


def rapl_meter(root=None):
    """The CPU packages' RAPL counters under ``root`` (default ``RAPL_ROOT``), as one
    Meter; NotMeasured where there is none, or one cannot be read."""
    root = root or RAPL_ROOT
    zones = []
    # the packages only: not their sub-zones (intel-rapl:0:0, named core, uncore or dram)
    # nor psys (the platform, which holds the packages)
    for zone in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
        try:
            with open(os.path.join(zone, "name")) as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("package"):
            zones.append((zone, name))
    if not zones:
        raise NotMeasured(
            f"no RAPL package counter under {root} (a virtual machine, or a CPU or kernel"
            " without the intel-rapl powercap driver)"
        )
    parts = []
    for zone, _ in zones:
        counter = os.path.join(zone, "energy_uj")
        _read_int(counter)  # one that cannot be read says so now, before any timing
        parts.append((lambda path=counter: _read_int(path), 1e-6, _read_int(os.path.join(zone, "max_energy_range_uj"))))
    names = ", ".join(name for _, name in zones)
    return Meter(f"RAPL {names} (the whole CPU package: every process on it)", parts)


def meter_for(device, rapl_root=None, nvml=None):
    """The energy meter of a cell's device: ``(Meter, None)``, or ``(None, why there is
    none)``. ``nvml``: a stand-in for pynvml (tests)."""
    try:
        if device == "cuda":
            read, source = gpu.energy_counter(nvml)
            return Meter(source, [(read, 1.0, None)]), None
        return rapl_meter(rapl_root), None
    except NotMeasured as err:
        return None, str(err)


def record(meter, why_not, reading, images):
    """The ``energy`` block of a speed cell's result: ``measured`` true with the counter,
    joules, seconds, images, images per joule and mean watts; or false with the reason.

    ``reading`` is ``timing.measure``'s ``energy`` (the two readings and the seconds
    between them), ``images`` every image of the timed windows.
    """
    if meter is None:
        return {"measured": False, "reason": why_not}
    block = {"counter": meter.source}
    if reading is None or reading["before"] is None or reading["after"] is None:
        return {"measured": False, **block, "reason": meter.failure or "the counter was not read"}
    joules, seconds = meter.joules(reading["before"], reading["after"]), reading["seconds"]
    if joules <= 0:
        return {
            "measured": False,
            **block,
            "reason": f"the counter did not advance during the {seconds:.3f} s of the timed windows"
            " (it updates less often than that: more timing.timed_batches make them longer)"
            if joules == 0
            else "the counter went backwards during the timed windows (was the driver reloaded?)",
        }
    return {
        "measured": True,
        **block,
        "joules": joules,
        "seconds": seconds,
        "images": images,
        "images_per_joule": images / joules,
        "mean_watts": joules / seconds,
        "readings": [reading["before"], reading["after"]],
    }
