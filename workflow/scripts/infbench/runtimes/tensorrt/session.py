"""TensorRT runtime: run an engine built from the precision's ONNX (``build``).

spec.artifact is the engine ``E.plan``; its sidecar ``E.json`` says what built it. Before
deserialising, the session checks the sidecar against this machine (TensorRT version,
GPU, compute capability, driver), the ONNX and the build options, and refuses a stale
engine in one sentence naming what differs: the build_engine rule alone writes engines.

Each staged batch gets its own device input buffer and its own output buffer, uploaded
once; rotating batches means switching tensor addresses (set before every enqueue). With
``cuda_graphs`` (default true) the enqueue of each staged batch is captured once into a
CUDA graph and replayed by ``run``; ``sync`` is cudaStreamSynchronize on the session's
stream, so the harness's one sync per window waits for every enqueued batch.

Runtime options (the config's ``runtimes.tensorrt`` block, spec.options): the engine
options of ``build.DEFAULTS`` (``workspace_mib``, ``allow_tf32``,
``tactic_sources``, ``builder_optimization_level``), which must be those the engine was
built with, and ``cuda_graphs`` (default true).

Every call used here exists from TensorRT 8.5 on (sources: docs/tensorrt-api-notes.md).
"""

import logging
import os
import sys
import weakref

import numpy as np

from infbench.runtimes.tensorrt import build as engines
from infbench.errors import UserError
from infbench.runtimes.base import Session, normalise_nchw

log = logging.getLogger("infbench.runtimes.tensorrt")


def _import_cudart():
    try:
        from infbench.runtimes.tensorrt import cudart
    except ImportError:
        raise UserError(
            f"cuda-python is not installed in {sys.executable}: install cuda-python"
            " (pip install cuda-python) or remove tensorrt from runtimes"
        ) from None
    return cudart


def engine_options(spec):
    """The build options this cell asks for (a changed option means a rebuilt engine)."""
    return engines.options_from_config(spec.options, spec.precision, spec.batch_size)


def _onnx_of(engine_path, precision, sidecar):
    """The ONNX to check the engine against: the sidecar's, else by convention."""
    recorded = (sidecar or {}).get("onnx")
    if recorded and os.path.exists(recorded):
        return recorded
    return engines.onnx_for_engine(engine_path, precision)


def ensure_engine(spec, tensorrt_version):
    """Check spec.artifact against this machine, its ONNX and the cell's build options.

    A stale engine is refused in one sentence, never rebuilt here: the engine is the
    build_engine rule's output, and a session that rewrote it would leave Snakemake's record
    and the file disagreeing. Returns (sidecar dict, None).
    """
    plan = spec.artifact
    options = engine_options(spec)
    onnx = _onnx_of(plan, spec.precision, engines.read_sidecar(engines.sidecar_path(plan)))
    onnx_sha256 = engines.sha256_file(onnx) if os.path.exists(onnx) else None
    if onnx_sha256 is None:
        log.warning("TensorRT engine %s: its ONNX %s is missing, so it is not checked against it", plan, onnx)
    environment = engines.current_environment(tensorrt_version)
    rebuild, reason = engines.needs_rebuild(plan, environment, onnx_sha256, options)
    if not rebuild:
        return engines.read_sidecar(engines.sidecar_path(plan)), None
    raise UserError(
        f"TensorRT engine {plan} does not fit this cell ({reason}); delete it and run the"
        " workflow again, which rebuilds it (or: snakemake --forcerun build_engine)"
    )


def open_session(spec):
    """A TensorRT session for one cell; the engine is checked first (a stale one is refused)."""
    if spec.device != "cuda":
        raise UserError(
            f"runtimes.tensorrt.device is {spec.device!r}, but TensorRT runs only on NVIDIA GPUs;"
            " set runtimes.tensorrt.device to cuda or remove tensorrt from runtimes"
        )
    trt = engines.import_tensorrt()
    engines.api_generation(trt.__version__)  # refuses TensorRT older than 8.5
    cudart = _import_cudart()
    if cudart.device_count() == 0:
        raise UserError(
            f"runtimes.tensorrt.device is cuda, but {sys.executable} sees no CUDA GPU;"
            " run on a machine with an NVIDIA GPU or remove tensorrt from runtimes"
        )
    sidecar, rebuilt = ensure_engine(spec, trt.__version__)
    return TensorRTSession(spec, trt, cudart, sidecar, rebuilt)


class _Slot:
    """A device input and output buffer, and the CUDA graph of an enqueue on them (or None).
    ``user`` is a weak reference to the staged batch that holds the slot."""

    __slots__ = ("input", "output", "graph", "user")

    def __init__(self, inputs, outputs):
        self.input, self.output, self.graph = inputs, outputs, None
        self.user = lambda: None


class _Staged:
    """One staged batch: the slot it was uploaded into (its buffers and graph)."""

    __slots__ = ("slot", "__weakref__")

    def __init__(self, slot):
        self.slot = slot

    @property
    def input(self):
        return self.slot.input

    @property
    def output(self):
        return self.slot.output

    @property
    def graph(self):
        return self.slot.graph


class TensorRTSession(Session):
    """One deserialised engine, its execution context and stream, at one fixed batch size."""

    def __init__(self, spec, trt, cudart, sidecar, rebuilt):
        super().__init__(spec)
        self.trt = trt
        self.cudart = cudart
        self.sidecar = sidecar
        self.rebuilt = rebuilt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(spec.artifact, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {spec.artifact}; see the TensorRT log above")

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(
                f"{spec.artifact} has inputs {inputs} and outputs {outputs}, not one image input and"
                " one logits output; delete it and its ONNX so the workflow exports and builds them again"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_shape = (spec.batch_size, 3, spec.crop, spec.crop)
        engine_shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if engine_shape[1:] != self.input_shape[1:]:
            raise UserError(
                f"{spec.artifact} takes inputs of shape {engine_shape}, but the model's crop is {spec.crop};"
                " make the model's crop match its ONNX export or delete the engine and its ONNX"
            )

        self.context = self.engine.create_execution_context()
        if not self.context.set_input_shape(self.input_name, self.input_shape):
            raise RuntimeError(f"{spec.artifact} rejects input shape {self.input_shape}")
        self.output_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.output_nbytes = int(np.prod(self.output_shape)) * self.output_dtype.itemsize

        self.stream = cudart.Stream()
        self.use_graphs = bool(spec.options.get("cuda_graphs", True))
        # device buffers (and graphs) per staged batch, kept until close(): a slot whose
        # staged batch is gone is refilled, so the accuracy loop, which stages every batch
        # anew, uses two slots instead of allocating and capturing per batch
        self.slots = []

    def _bind(self, staged):
        """Point the context's input and output at one staged batch's buffers."""
        if not (
            self.context.set_tensor_address(self.input_name, staged.input.ptr)
            and self.context.set_tensor_address(self.output_name, staged.output.ptr)
        ):
            raise RuntimeError("TensorRT rejected a tensor address")

    def _enqueue(self):
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT failed to enqueue {self.spec.artifact}; see the TensorRT log above")

    def _capture(self, staged):
        """A CUDA graph of one staged batch's enqueue; None (and no graphs at all) if capture fails."""
        self._bind(staged)
        self._enqueue()  # once outside capture, as NVIDIA's trtexec does
        self.stream.synchronize()
        try:
            return self.cudart.Graph(self.stream, lambda: self.context.execute_async_v3(self.stream.handle))
        except self.cudart.CudaError as err:
            log.warning("CUDA graph capture of %s failed (%s); running without CUDA graphs", self.spec.artifact, err)
            self.use_graphs = False
            for slot in self.slots:
                if slot.graph is not None:
                    slot.graph.destroy()
                    slot.graph = None
            return None

    def stage(self, images):
        """Upload a batch into a free slot (one whose staged batch is gone), or a new one
        whose enqueue is captured as a CUDA graph; the graph reads the slot's fixed buffers,
        so a refilled slot replays it as it is."""
        x = normalise_nchw(images, self.input_dtype)
        if x.shape != self.input_shape:
            raise ValueError(f"batch of shape {x.shape} does not fit the engine's input {self.input_shape}")
        slot = next((s for s in self.slots if s.user() is None), None)
        fresh = slot is None
        if fresh:
            slot = _Slot(self.cudart.DeviceBuffer(x.nbytes), self.cudart.DeviceBuffer(self.output_nbytes))
            self.slots.append(slot)
        self.cudart.memcpy_htod_async(slot.input, x, self.stream)
        self.stream.synchronize()
        staged = _Staged(slot)
        if fresh and self.use_graphs:
            slot.graph = self._capture(staged)
        slot.user = weakref.ref(staged)
        return staged

    def run(self, staged):
        if staged.graph is not None:
            staged.graph.launch(self.stream)
        else:
            self._bind(staged)
            self._enqueue()
        return staged

    def sync(self, output):
        self.stream.synchronize()

    def logits(self, output):
        host = np.empty(self.output_shape, dtype=self.output_dtype)
        self.cudart.memcpy_dtoh_async(host, output.output, self.stream)
        self.stream.synchronize()
        return host.astype(np.float32, copy=False)

    def info(self):
        environment = (self.sidecar or {}).get("environment", {})
        flags = (self.sidecar or {}).get("flags", {})
        return {
            "tensorrt": self.trt.__version__,
            "tensorrt_cuda": environment.get("tensorrt_cuda"),  # the CUDA major TensorRT was built for
            "device": "cuda",
            "device_name": environment.get("gpu_name"),
            "compute_capability": environment.get("compute_capability"),
            "driver": environment.get("driver"),
            "cuda_driver": environment.get("cuda_driver"),
            "cuda_runtime": environment.get("cuda_runtime"),
            "tf32": (self.sidecar or {}).get("build", {}).get("allow_tf32"),
            "api": flags.get("api"),
            "builder_flags": flags.get("builder_flags"),
            "tactic_sources": flags.get("tactic_sources"),
            "builder_optimization_level": flags.get("builder_optimization_level"),
            "build_seconds": (self.sidecar or {}).get("build_seconds"),
            "cuda_graphs": self.use_graphs,
            "mode": "cuda-graph" if self.use_graphs else "enqueue",
            "engine_rebuilt": self.rebuilt,
            "sidecar": self.sidecar,
        }

    def close(self):
        if self.stream.raw is not None:
            self.stream.synchronize()
        for slot in self.slots:
            if slot.graph is not None:
                slot.graph.destroy()
            slot.input.free()
            slot.output.free()
        self.slots = []
        self.stream.destroy()
        self.context = None
        self.engine = None
        self.runtime = None
