"""GPU slots: on a machine with several GPUs, every GPU step on a GPU of its own.

With ``--resources gpu=N`` Snakemake runs up to N GPU jobs at once (engine builds, and the
cells on cuda: timed, latency and accuracy). Before such a step starts it takes one of the
machine's GPUs (``workflow/scripts/gpu_slot.py``, through launch.sh): one lock file per
GPU, held with flock by the step's own process, so that a step that ends in any way, killed
included, frees its GPU with it. The step sees that GPU alone (``CUDA_VISIBLE_DEVICES`` set
to its UUID) and its result's provenance names it (``gpu_slot``: index, UUID, model, the
CPUs it was pinned to, how long it waited). A timed step (speed and latency cells) also
runs on CPU cores of its own: the machine's physical cores cut into as many equal runs as
it has GPUs, GPU k's run for the timed steps on GPU k (``os.sched_setaffinity``), so that
no two timed steps share a core (hyper-threads of one core stay together).

Left alone, as before there were slots: steps that need no GPU, machines without
nvidia-smi, SLURM jobs (SLURM gives each job its GPU) and a ``CUDA_VISIBLE_DEVICES`` that
names a device nvidia-smi does not list (a MIG instance). Set when Snakemake starts,
``CUDA_VISIBLE_DEVICES`` chooses the GPUs a run may take. The lock files are the machine's
(``INFBENCH_GPU_LOCKS``, default /tmp/infbench-gpu-locks), so runs started from other
folders wait for each other's GPUs too. Standard library only: every stack's interpreter
runs it.
"""

import fcntl
import json
import os
import time

from infbench import gpu
from infbench.errors import UserError

LOCKS = "INFBENCH_GPU_LOCKS"  # the folder of the lock files, one per GPU (named by its UUID)
DEFAULT_LOCKS = "/tmp/infbench-gpu-locks"
SLOT = "INFBENCH_GPU_SLOT"  # the slot a step holds, JSON, for its provenance
POLL_S = 0.5  # how often a step that waits for a GPU tries the locks again

# The steps that hold a GPU, as the rules give them the gpu resource (workflow/rules/
# measure.smk: build_engine gpu=1, the cells cell_gpus): script -> only when on cuda
GPU_STEPS = {"build_engine.py": False, "measure_speed.py": True, "evaluate.py": True}
TIMED_STEPS = {"measure_speed.py"}  # speed and latency cells: cores of their own too


def timed_cores(cores, device, gpus, local):
    """The cores a timed cell asks Snakemake for: every core for a cell on the CPU, so that
    nothing runs beside it; for a cell on cuda, every core divided among the ``gpus`` GPU
    jobs that run at once (``--resources gpu=N``) where Snakemake runs the jobs itself
    (``local``), so that N timed cells fit side by side, each then pinned to its GPU's share
    (``core_share``). On a cluster (not ``local``) every core, as before: there each job gets
    its node's cores and GPU from the cluster."""
    if device != "cuda" or not local or not gpus or gpus <= 1:
        return cores
    return max(1, cores // gpus)


def device_of(args):
    """The value of a step's ``--device`` option, or None."""
    for i, arg in enumerate(args):
        if arg == "--device" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return None


def step_needs(script, args):
    """What a step needs of the machine: None (no GPU), "gpu", or "timed" (a GPU and CPU
    cores of its own)."""
    name = os.path.basename(script)
    if name not in GPU_STEPS or (GPU_STEPS[name] and device_of(args) != "cuda"):
        return None
    return "timed" if name in TIMED_STEPS else "gpu"


def candidates(gpus, visible):
    """The GPUs a step may take: nvidia-smi's list ``gpus``, narrowed to those that
    ``visible`` (``CUDA_VISIBLE_DEVICES``: nvidia-smi indices or UUIDs) names; None where it
    names nothing nvidia-smi lists (empty, a MIG instance, a typo): then nothing is taken."""
    if visible is None:
        return list(gpus)
    chosen = []
    for entry in (e.strip() for e in visible.split(",")):
        found = next((g for g in gpus if entry in (g["index"], g["uuid"])), None)
        if found is None:
            return None
        if found not in chosen:
            chosen.append(found)
    return chosen or None


def one_model(slots):
    """Refuse GPUs of several models: a matrix's cells (and the engines they load) are timed
    on one model of GPU, or its tables would mix them."""
    models = {}
    for g in slots:
        models.setdefault(g["name"], []).append(g["index"])
    if len(models) > 1:
        said = "; ".join(f"{', '.join(indices)}: {name}" for name, indices in models.items())
        first = ",".join(next(iter(models.values())))
        raise UserError(
            f"this machine's GPUs are of {len(models)} models ({said}), and one run's cells and engines"
            f" must run on one: start snakemake with CUDA_VISIBLE_DEVICES naming GPUs of one model"
            f" (e.g. CUDA_VISIBLE_DEVICES={first})"
        )


def physical_cores(cpus, sysfs="/sys/devices/system/cpu"):
    """``cpus`` grouped by physical core (a core's hyper-threads together), in the order of
    each core's first CPU; a CPU whose topology cannot be read is a core of its own."""
    cores = {}
    for cpu in sorted(cpus):
        try:
            with open(f"{sysfs}/cpu{cpu}/topology/physical_package_id") as f:
                package = f.read().strip()
            with open(f"{sysfs}/cpu{cpu}/topology/core_id") as f:
                core = f.read().strip()
            key = (package, core)
        except OSError:
            key = ("cpu", cpu)
        cores.setdefault(key, []).append(cpu)
    return sorted(cores.values(), key=lambda c: c[0])


def core_share(position, count, cpus, sysfs="/sys/devices/system/cpu"):
    """The CPUs of the timed steps on GPU ``position`` of the machine's ``count``: the
    position-th of ``count`` equal runs of whole physical cores of ``cpus`` (what is left
    over after ``count`` equal runs goes to no timed step)."""
    cores = physical_cores(cpus, sysfs)
    per = len(cores) // count
    if per == 0:
        raise UserError(
            f"this machine has {len(cores)} CPU cores for its {count} GPUs, so its timed cells cannot have"
            " a core of their own each; run with --resources gpu=1 on a machine with more cores per GPU"
        )
    return sorted(cpu for core in cores[position * per : (position + 1) * per] for cpu in core)


def lock_folder(environ):
    """The folder of the lock files (made, and open to every user's runs, if it is new)."""
    path = environ.get(LOCKS) or DEFAULT_LOCKS
    try:
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o1777)  # like /tmp: anyone may add a lock file, no one remove another's
    except OSError as err:
        raise UserError(
            f"cannot make the GPU lock folder {path} ({err.strerror}); set {LOCKS} to a folder that"
            " every run on this machine may write"
        ) from None
    return path


def try_lock(path):
    """The file descriptor of ``path``, locked (flock, exclusive) by this process; None
    while another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise UserError(
            f"cannot open the GPU lock file {path} ({err.strerror}); set {LOCKS} to a folder that every"
            " run on this machine may write"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        os.fchmod(fd, 0o666)  # another user's run may open it too
    except OSError:
        pass
    return fd


def holder(path):
    """What the lock file says of the step that holds it ("" if nothing)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def take(slots, folder, who, say=print, poll=POLL_S, clock=time.monotonic, sleep=time.sleep):
    """The first free GPU of ``slots``: (the GPU, its lock's file descriptor, the seconds
    waited), waiting while every one is held. ``who`` is written into the lock file."""
    started, said = clock(), False
    while True:
        for g in slots:
            path = os.path.join(folder, f"{g['uuid']}.lock")
            fd = try_lock(path)
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"{who}\n".encode())
                return g, fd, clock() - started
        if not said:
            held = "; ".join(
                f"GPU {g['index']}: {holder(os.path.join(folder, g['uuid'] + '.lock')) or '?'}" for g in slots
            )
            say(f"gpu slot: waiting for a free GPU, all {len(slots)} are held ({held})")
            said = True
        sleep(poll)


def hold_for_step(script, args, environ, say=print, cpus=None, sysfs="/sys/devices/system/cpu"):
    """Take what a step needs: ``(environment changes, CPUs to pin it to or None, the lock's
    file descriptor or None)``. The caller keeps the descriptor open for the step's life
    (gpu_slot.py hands it on by exec). ``cpus``: the CPUs this process may use (default its
    affinity)."""
    need = step_needs(script, args)
    if need is None:
        return {}, None, None
    if environ.get("SLURM_JOB_ID"):
        say(f"gpu slot: none taken, this is SLURM job {environ['SLURM_JOB_ID']}: SLURM gave it its GPU")
        return {}, None, None
    gpus = gpu.list_gpus()
    if not gpus:
        return {}, None, None  # no nvidia-smi: the runtime finds its GPU, or says there is none
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    slots = candidates(gpus, visible)
    if slots is None:
        say(f"gpu slot: none taken, CUDA_VISIBLE_DEVICES={visible} names no GPU that nvidia-smi lists")
        return {}, None, None
    one_model(slots)
    who = f"pid {os.getpid()}, {os.path.basename(script)}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    chosen, fd, waited = take(slots, lock_folder(environ), who, say)
    share = None
    if need == "timed":
        cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
        share = core_share(gpus.index(chosen), len(gpus), cpus, sysfs)
    record = {
        "index": int(chosen["index"]),
        "uuid": chosen["uuid"],
        "name": chosen["name"],
        "gpus": len(slots),  # the GPUs this run's steps share out
        "cpus": share,
        "waited_s": round(waited, 3),
        "pid": os.getpid(),  # the step's own (gpu_slot.py becomes the step), as nvidia-smi lists it
    }
    pinned = f", CPUs {compact(share)}" if share else ""
    say(f"gpu slot: GPU {chosen['index']} ({chosen['uuid']}, {chosen['name']}){pinned}, pid {os.getpid()}")
    return {"CUDA_VISIBLE_DEVICES": chosen["uuid"], SLOT: json.dumps(record)}, share, fd


def compact(cpus):
    """CPU numbers as ranges: [0, 1, 2, 3, 8] -> "0-3,8"."""
    runs = []
    for cpu in cpus:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def held_slot(environ=os.environ):
    """The GPU slot this step holds (``hold_for_step``'s record), or None."""
    raw = environ.get(SLOT)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
