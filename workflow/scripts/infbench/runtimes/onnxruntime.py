"""ONNX Runtime: an InferenceSession on the precision's ONNX file, CPU or CUDA provider.

On the CPU a staged batch is the normalised float32 array and ``run`` is a plain
``session.run`` (synchronous), which is what a hand-written loop would do. On CUDA the
staged batch is an OrtValue already on the GPU, bound once with its own I/O binding so
that ``run`` copies nothing from the host; the output stays on the device until
``logits`` reads it.
"""

import os

import numpy as np
import onnxruntime as ort

from infbench.errors import UserError
from infbench.provenance import cpu_name
from infbench.runtimes.base import Session, SessionSpec, check_cell, normalise_nchw

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _providers(spec):
    """The provider list for the cell, or a UserError naming the config key."""
    check_cell(spec)
    wanted = PROVIDERS[spec.device]
    if wanted not in ort.get_available_providers():
        raise UserError(
            f"runtimes.onnxruntime.device is {spec.device!r} but this onnxruntime"
            f" {ort.__version__} has no {wanted}"
            f" (it has {', '.join(ort.get_available_providers())});"
            " install onnxruntime-gpu matching the CUDA version, or set the device to 'cpu'"
        )
    return [wanted] if spec.device == "cpu" else [wanted, "CPUExecutionProvider"]


class _Bound:
    """A staged CUDA batch: the input OrtValue on the GPU and the I/O binding that uses it."""

    __slots__ = ("value", "binding")

    def __init__(self, value, binding):
        self.value = value
        self.binding = binding


class OrtSession(Session):
    def __init__(self, spec: SessionSpec):
        super().__init__(spec)
        providers = _providers(spec)
        if not os.path.isfile(spec.artifact):
            raise UserError(f"{spec.artifact} does not exist; run the workflow's ONNX steps first")
        options = spec.options or {}
        self.threads = int(options.get("threads") or os.cpu_count() or 1)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(spec.artifact, sess_options=so, providers=providers)
        if self.session.get_providers()[0] != providers[0]:
            raise UserError(
                f"ONNX Runtime could not start {providers[0]} for {spec.artifact} (it fell back"
                f" to {self.session.get_providers()[0]}); check the CUDA and cuDNN libraries"
                " or set runtimes.onnxruntime.device to 'cpu'"
            )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.on_cuda = spec.device == "cuda"

    def stage(self, images: np.ndarray):
        x = normalise_nchw(images)
        if not self.on_cuda:
            return {self.input_name: x}
        value = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, "cuda", 0)
        return _Bound(value, binding)

    def run(self, staged):
        if self.on_cuda:
            self.session.run_with_iobinding(staged.binding)
            return staged.binding
        return self.session.run(None, staged)[0]

    def sync(self, output):
        """Nothing to wait for: both paths return after the provider's stream is synchronised."""

    def logits(self, output) -> np.ndarray:
        if self.on_cuda:
            return output.get_outputs()[0].numpy().astype(np.float32, copy=False)
        return np.asarray(output, dtype=np.float32)

    def info(self) -> dict:
        name, driver = _nvidia_smi() if self.on_cuda else (cpu_name(), None)
        return {
            "runtime": "onnxruntime",
            "onnxruntime": ort.__version__,
            "device": self.spec.device,
            "device_name": name,
            "driver": driver,
            "providers": self.session.get_providers(),
            "threads": self.threads,
            "graph_optimization": "ORT_ENABLE_ALL",
            "io": "iobinding" if self.on_cuda else "numpy",
        }

    def close(self):
        self.session = None


def _nvidia_smi():
    """GPU 0's name and driver version from nvidia-smi (ONNX Runtime reports neither)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    name, _, driver = out.stdout.strip().rpartition(", ")
    return name or None, driver or None


def open_session(spec: SessionSpec) -> Session:
    return OrtSession(spec)
