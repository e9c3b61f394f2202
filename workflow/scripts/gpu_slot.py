"""Start a workflow step, on a GPU of its own where it needs one (infbench.slots).

    python workflow/scripts/gpu_slot.py PYTHON SCRIPT [ARGS...]

launch.sh starts every step through it. A step that needs no GPU is started as it is. A
GPU step first takes a free GPU (waiting while every one is held), then becomes the step:
exec, so that the step is this same process and holds the GPU's lock for exactly as long as
it runs. Its environment gets ``CUDA_VISIBLE_DEVICES`` (the GPU's UUID) and the slot for its
provenance; a timed step is pinned to its GPU's CPU cores first. ``INFBENCH_LAUNCHED`` is
set last, so that the start-up time a result records is the step's own interpreter's.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench import slots  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402


def say(text):
    print(text, flush=True)


def main():
    if len(sys.argv) < 3:
        raise UserError("usage: gpu_slot.py PYTHON SCRIPT [ARGS...]")
    python, script, *args = sys.argv[1:]
    changes, cpus, fd = slots.hold_for_step(script, args, os.environ, say)
    if fd is not None:
        os.set_inheritable(fd, True)  # the step inherits the lock
    if cpus:
        os.sched_setaffinity(0, cpus)  # threads the step starts inherit it
    env = {**os.environ, **changes, "INFBENCH_LAUNCHED": f"{time.time():.6f}"}
    os.execvpe(python, [python, script, *args], env)


if __name__ == "__main__":
    main_guard(main)
