"""Errors a user can cause, and the wrapper that turns them into one sentence."""

import contextlib
import signal
import sys


class UserError(Exception):
    """A mistake the user can fix (config, data, missing runtime, bad checksum).

    The message is one sentence that names the file or config key and the fix.
    """


class NotMeasured(Exception):
    """Why a quantity cannot be measured on this machine (no energy counter, say): not a
    mistake, and not a failure of the cell; its message is the cell's ``not measured`` reason."""


# the signal that interrupted this step, once one came
INTERRUPTED = []


def _interrupted(signum, frame):
    """SIGTERM (a scheduler's time limit, `kill`, Snakemake stopping its jobs) and SIGINT
    (Ctrl-C) end the step as an exception would, so that its temporary files are removed on
    the way out. The signal is also remembered: Python swallows what a handler raises inside
    an at-fork callback (a worker pool starting), and ``check_interrupted`` raises it again
    before an output is put in place."""
    INTERRUPTED.append(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)


def check_interrupted():
    """Raise again a SIGINT or SIGTERM that came to this process, even one swallowed."""
    if INTERRUPTED:
        raise KeyboardInterrupt if INTERRUPTED[0] == signal.SIGINT else SystemExit(128 + INTERRUPTED[0])


def main_guard(main):
    """Run ``main()``; a UserError ends the process with its sentence, no traceback."""
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        return main()
    except UserError as err:
        print(f"infbench: {err}", file=sys.stderr)
        sys.exit(2)


# how the libraries say that an allocation failed: PyTorch (CPU and CUDA), ONNX Runtime's
# arena and CUDA provider, the CUDA runtime (cuda-python, TensorRT), cuBLAS and cuDNN
OUT_OF_MEMORY_WORDS = (
    "out of memory",
    "outofmemory",
    "can't allocate memory",
    "failed to allocate memory",
    "bad_alloc",
    "cudaerrormemoryallocation",
    "alloc_failed",
)


def out_of_memory(err, device):
    """Whether an exception says that memory ran out, and which: "host memory" (a
    MemoryError, or a failed allocation on the CPU), "GPU memory" (a failed allocation of a
    cell on cuda that names no CPU allocator) or None."""
    if isinstance(err, MemoryError):
        return "host memory"
    text = f"{type(err).__name__}: {err}".lower()
    if not any(word in text for word in OUT_OF_MEMORY_WORDS):
        return None
    return "GPU memory" if device == "cuda" and "cpu" not in text else "host memory"


@contextlib.contextmanager
def out_of_memory_names(spec):
    """Inside the block, running out of memory becomes one sentence naming the cell
    (``spec``: a runtimes.base.SessionSpec), its batch size and the memory that ran out."""
    try:
        yield
    except Exception as err:
        what = out_of_memory(err, spec.device)
        if what is None:
            raise
        said = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(
            f"cell {spec.runtime} {spec.model} {spec.precision} at batch size {spec.batch_size} ran out"
            f" of {what} ({said}); set smaller batch_sizes (or accuracy.batch_size) for this model, or use"
            " a device with more memory"
        ) from None
