"""What produced a number: host, interpreter, time, file hashes (numpy-only, Python 3.10+)."""

import datetime
import os
import platform
import socket
import sys

import numpy as np

from infbench import __version__, files, slots


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host():
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "numpy": np.__version__,
    }


sha256 = files.sha256

# what says a step ran as a SLURM job: key in the result -> SLURM's environment variable
SLURM_VARIABLES = {
    "job_id": "SLURM_JOB_ID",
    "partition": "SLURM_JOB_PARTITION",
    "node": "SLURMD_NODENAME",
    "cluster": "SLURM_CLUSTER_NAME",
}


def slurm_job(environ=os.environ):
    """The SLURM job this process runs in (job id, partition, node, cluster: those set), or
    None outside SLURM."""
    if not environ.get("SLURM_JOB_ID"):
        return None
    return {key: environ[name] for key, name in SLURM_VARIABLES.items() if environ.get(name)}


def result_block(info, started, finished, artifact, phases, **extra):
    """The provenance of one cell's result, the same for every step that writes one: the
    workflow's release, the session's own ``info`` (runtime, versions, device, modes), the
    host, when, the artifact and its sha256, the command line, where the process's time
    went (``phases``, a ``Phases``), the SLURM job it ran as (``slurm``, only under SLURM),
    the GPU slot it held (``gpu_slot``, only where it took one: ``infbench.slots``) and what
    the step adds (``extra``: config, GPU clocks, ...)."""
    job = slurm_job()
    slot = slots.held_slot()
    return {
        "workflow": {"name": "infbench", "version": __version__},
        "runtime": info,
        "host": host(),
        "started": started,
        "finished": finished,
        "artifact": artifact,
        "artifact_sha256": sha256(artifact),
        "command": sys.argv,
        "phases": phases.record(),
        **({"slurm": job} if job else {}),
        **({"gpu_slot": slot} if slot else {}),
        **extra,
    }


LAUNCHED = "INFBENCH_LAUNCHED"  # set by gpu_slot.py (launch.sh): when the step's process was started


class Phases:
    """Where a step's process spent its time, phase by phase (seconds, wall clock).

    ``start`` is when the script's first line ran; the interpreter's own start-up before it
    is counted from the launcher's time stamp (the environment variable ``INFBENCH_LAUNCHED``,
    seconds since the epoch) where there is one.
    """

    def __init__(self, start, clock=None):
        import time

        self.clock = clock or time.time
        self.start = self.last = start
        self.seconds = {}
        launched = os.environ.get(LAUNCHED)
        try:
            self.seconds["start_up"] = max(0.0, start - float(launched)) if launched else None
        except ValueError:
            self.seconds["start_up"] = None

    def mark(self, name):
        """The phase ``name`` ended now."""
        now = self.clock()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    def split(self, name, parts):
        """Replace phase ``name`` by its ``parts`` ({part: seconds}, timed inside it); what
        the parts leave of it stays as ``name``."""
        whole = self.seconds.pop(name)
        self.seconds.update(parts)
        self.seconds[name] = whole - sum(parts.values())

    def record(self):
        """The phases and their total, for a result's provenance."""
        return {**self.seconds, "total_in_script": self.last - self.start}

    def next(self):
        """A fresh record from now, for the next result of the same process (so that
        phases summed over results count the shared start-up and imports once)."""
        following = Phases(self.last, self.clock)
        following.seconds = {}
        return following
