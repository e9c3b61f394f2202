"""PyTorch runtime: the torchvision model with the neutral weights, eager, on CPU or CUDA.

On CUDA the staged batches are normalised on the device in channels-last layout, fp16
is ``model.half()``, and by default each live staged batch has its own CUDA graph
(captured in ``stage`` after a warm-up on a side stream, replayed by ``run``; all graphs
share one memory pool, per the PyTorch CUDA-graph docs), so nothing is copied in the timed
loop. TF32 is off unless the runtime's options say ``allow_tf32: true`` (``cuda_settings``).
What a result records is read back from PyTorch (``settings_in_force``): the TF32 flags as
set, and the CUDA graphs the session captured.
"""

import os
import weakref

import numpy as np
import torch

from infbench import MEAN, STD, gpu
from infbench.errors import UserError
from infbench.models import load_torch
from infbench.provenance import cpu_name
from infbench.runtimes.base import Session, SessionSpec, check_cell

# eager runs before a graph is captured: cuDNN picks its algorithms outside the capture
CAPTURE_WARMUP = 3


def cuda_settings(options):
    """What a CUDA session sets in PyTorch for the runtime's ``options``: TF32 off unless
    ``allow_tf32: true`` (strict fp32), cuDNN's benchmark mode on (fixed shapes: the fastest
    kernels are picked once)."""
    return {"allow_tf32": bool(options.get("allow_tf32", False)), "cudnn_benchmark": True}


def apply_cuda_settings(settings):
    """Set PyTorch's process-wide flags as ``cuda_settings`` says."""
    torch.backends.cuda.matmul.allow_tf32 = settings["allow_tf32"]
    torch.backends.cudnn.allow_tf32 = settings["allow_tf32"]
    torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]


def settings_in_force():
    """PyTorch's TF32 and cuDNN flags as they are now: ``tf32`` is true if either matrix
    products or convolutions may use TF32 (then fp32 is not strict)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    return {
        "tf32": bool(matmul or cudnn),
        "tf32_matmul": bool(matmul),
        "tf32_cudnn": bool(cudnn),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }


class _Slot:
    """A static input buffer on the GPU, the CUDA graph captured on it, and its output."""

    __slots__ = ("x", "graph", "out", "user")

    def __init__(self, x, graph, out):
        self.x, self.graph, self.out = x, graph, out
        self.user = lambda: None  # weak reference to the staged batch that holds the slot


class _Staged:
    """One staged batch: its device tensor, and its graph slot when CUDA graphs are on."""

    __slots__ = ("x", "slot", "__weakref__")

    def __init__(self, x, slot=None):
        self.x, self.slot = x, slot


class TorchSession(Session):
    def __init__(self, spec: SessionSpec):
        super().__init__(spec)
        check_cell(spec)
        options = spec.options or {}
        self.device = torch.device(spec.device)
        self.dtype = torch.float16 if spec.precision == "fp16" else torch.float32
        on_cuda = self.device.type == "cuda"
        if on_cuda and not torch.cuda.is_available():
            raise UserError(
                "runtimes.torch.device is 'cuda' but PyTorch sees no CUDA device;"
                " set it to 'cpu' or run on a machine with an NVIDIA GPU"
            )
        self.threads = int(options.get("threads") or os.cpu_count() or 1)
        if not on_cuda:
            torch.set_num_threads(self.threads)
        self.cuda_graphs = bool(options.get("cuda_graphs", True)) and on_cuda
        if on_cuda:
            apply_cuda_settings(cuda_settings(options))

        model = load_torch(spec.arch, spec.artifact)
        self.memory_format = torch.channels_last if on_cuda else torch.contiguous_format
        self.model = model.to(self.device, dtype=self.dtype, memory_format=self.memory_format)
        # torch.compile: true means reduce-overhead on cuda (it captures CUDA graphs itself,
        # so the session's own graphs are off) and default on the cpu; a string is the mode.
        # It compiles on the first batch, so its cost lands in the warm-up, which is recorded.
        compile_mode = options.get("compile", False)
        if compile_mode is True:
            compile_mode = "reduce-overhead" if on_cuda else "default"
        self.compile_mode = compile_mode or None
        if self.compile_mode:
            self.cuda_graphs = False
            self.model = torch.compile(self.model, mode=self.compile_mode, dynamic=False)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255.0
        # Graphs share one memory pool. The session keeps every graph (and so the pool)
        # until close(): a pool whose graphs were all freed cannot be captured into again.
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self.slots = []

    def stage(self, images: np.ndarray):
        """uint8 NHWC host batch -> normalised NCHW tensor on the device.

        With CUDA graphs the tensor lives in a graph slot: a free slot (one whose staged
        batch and output are gone) is refilled, otherwise a new one is captured. So the
        timing harness gets one graph per staged batch, and the accuracy loop, which stages
        every batch anew, reuses two slots instead of capturing a graph per batch.
        """
        host = torch.from_numpy(np.array(images))  # a writable copy: the cache is a read-only memmap
        x = host.to(self.device).permute(0, 3, 1, 2).float()
        x = ((x - self.mean) / self.std).to(self.dtype).contiguous(memory_format=self.memory_format)
        if not self.cuda_graphs:
            return _Staged(x)
        slot = next((s for s in self.slots if s.user() is None), None)
        if slot is None:
            slot = self._capture(x)
            self.slots.append(slot)
        else:
            slot.x.copy_(x)
        staged = _Staged(slot.x, slot)
        slot.user = weakref.ref(staged)
        return staged

    def _capture(self, x):
        """Warm up on a side stream, then capture a replayable graph reading ``x``."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP):
                self.model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self.pool):
            out = self.model(x)
        return _Slot(x, graph, out)

    def run(self, staged):
        """Replay the batch's graph (the returned handle keeps its slot busy), or run eagerly."""
        if staged.slot is not None:
            staged.slot.graph.replay()
            return staged
        with torch.inference_mode():
            return self.model(staged.x)

    def sync(self, output):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def logits(self, output) -> np.ndarray:
        tensor = output.slot.out if isinstance(output, _Staged) else output
        return tensor.float().cpu().numpy()

    def info(self) -> dict:
        on_cuda = self.device.type == "cuda"
        return {
            "runtime": "torch",
            "torch": torch.__version__,
            "device": self.spec.device,
            "device_name": torch.cuda.get_device_name(self.device) if on_cuda else cpu_name(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if on_cuda else None,
            "driver": gpu.driver_version() if on_cuda else None,
            "threads": self.threads if not on_cuda else None,
            "mode": f"torch.compile {self.compile_mode}"
            if self.compile_mode
            else "cuda_graphs"
            if self.cuda_graphs
            else "eager",
            "cuda_graphs": self.cuda_graphs,
            # graphs captured so far, one per staged batch that held a slot
            "cuda_graphs_captured": len(self.slots) if self.cuda_graphs else None,
            # as set in PyTorch now (process-wide flags), not as the config asked
            **(settings_in_force() if on_cuda else {"tf32": None, "cudnn_benchmark": None}),
            "memory_format": "channels_last" if on_cuda else "contiguous",
        }

    def close(self):
        self.model = None
        self.slots = []
        self.pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def open_session(spec: SessionSpec) -> Session:
    return TorchSession(spec)
