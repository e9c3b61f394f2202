"""The one interface every runtime implements (one module per runtime; docs/architecture.md).

A runtime turns (model artifact, precision, batch size, device) into a Session. The timing
harness (infbench.timing) and the accuracy evaluator (infbench.metrics) are written once
against this class; a runtime module holds only what is specific to it.

Only numpy may be imported here: the OneFlow environment has no torch.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from infbench import MEAN, STD
from infbench.errors import UserError
from infbench.runtimes import CAPABILITIES

_MEAN = np.asarray(MEAN, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0
_STD = np.asarray(STD, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0


@dataclass
class SessionSpec:
    """Everything a runtime needs to open a session for one matrix cell."""

    runtime: str
    model: str  # the config's model name
    arch: str  # a torchvision classification architecture (infbench.models)
    precision: str  # fp32 | fp16 | int8
    batch_size: int
    device: str  # cpu | cuda
    artifact: str  # weights (.safetensors), ONNX file or TensorRT engine
    crop: int  # input height and width
    options: dict = field(default_factory=dict)  # the runtime's config block


class Session(ABC):
    """One loaded model on one device, ready to run batches of a fixed size."""

    def __init__(self, spec: SessionSpec):
        self.spec = spec

    @abstractmethod
    def stage(self, images: np.ndarray):
        """Normalise a uint8 NHWC host batch and place it on the device, once.

        Returns an opaque handle for ``run``. Not timed.
        """

    @abstractmethod
    def run(self, staged):
        """Enqueue one inference of a staged batch; may return before it finishes.

        Returns an opaque handle to the output. This is the only call in the timed loop.
        """

    @abstractmethod
    def sync(self, output):
        """Block until ``output`` and all work enqueued before it are complete."""

    @abstractmethod
    def logits(self, output) -> np.ndarray:
        """The output as float32 logits on the host, shape (batch, classes)."""

    def info(self) -> dict:
        """Provenance: library versions, device name, threads, modes. Extended by runtimes."""
        return {}

    def close(self):
        """Release device resources."""


def normalise_nchw(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 NHWC RGB -> normalised NCHW, as torchvision's ImageClassification does."""
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    return ((x - _MEAN) / _STD).astype(dtype, copy=False)


def check_cell(spec):
    """Refuse a device or precision this runtime cannot run, naming the config key."""
    devices = CAPABILITIES[spec.runtime]
    if spec.device not in devices:
        raise UserError(
            f"runtimes.{spec.runtime}.device is {spec.device!r}; {spec.runtime} runs on {' or '.join(devices)}"
        )
    if spec.precision not in devices[spec.device]:
        raise UserError(
            f"runtimes.{spec.runtime}.precisions has {spec.precision!r}, which {spec.runtime}"
            f" cannot run on {spec.device} (it can: {', '.join(devices[spec.device])});"
            f" remove it or change runtimes.{spec.runtime}.device"
        )
