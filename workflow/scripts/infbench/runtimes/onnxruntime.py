"""ONNX Runtime: an InferenceSession on the precision's ONNX file, CPU or CUDA provider.

On the CPU a staged batch is the normalised float32 array and ``run`` is a plain
``session.run`` (synchronous), which is what a hand-written loop would do. On CUDA the
staged batch is an OrtValue already on the GPU, bound once with its own I/O binding, in
one of two forms. Asynchronous (``per_run_sync: false``): a preallocated output on the
GPU and run options that turn off ONNX Runtime's host synchronisation after every run, so
that ``sync`` waits for the outputs once per timed window. ONNX Runtime's documented loop
(``per_run_sync: true``): its default run options, which wait for the GPU after every
run, and an output that ONNX Runtime allocates on the GPU. Neither is always the faster,
and mixing them is slower still. On an H200, resnet50 fp16 at batch 8 ran 4,222 img/s in
the documented loop, 3,581 without its per-run sync and 3,880 with a preallocated output
(bimodal); alexnet fp16 at batch 8 without the sync ran at 1.03 of the documented loop with
a preallocated output and at 0.89 with ONNX Runtime's. So by default (``per_run_sync:
auto``) the session binds the first staged batch both ways, times both outside the timed
windows (``choose_per_run_sync``) and keeps the faster; the result records the choice and
both times.

TF32 is off unless the runtime's options say ``allow_tf32: true`` (the CUDA provider's
``use_tf32``, on by default in ONNX Runtime). With ``cuda_graphs: true`` (CUDA only, off by
default) the provider captures a CUDA graph per staged batch (``enable_cuda_graph`` and a
``gpu_graph_id`` per binding, whose input and preallocated output keep their addresses;
``per_run_sync`` then only decides whether a replay waits); the graphs are captured while
staging, outside the timed windows, and the accuracy loop refills free slots in place
instead of capturing anew.
int8 on CUDA runs the Q/DQ graph in float: the CUDA provider has no int8 convolutions, so
the cell is emulated int8 and its provenance says so.

Two more CUDA provider options, at the fastest that was measured unless the config says:
``prefer_nhwc`` (the provider's ``prefer_nhwc``, in the default builds since 1.20: NHWC
convolutions, the layout tensor cores work in, with transposes added where needed): true,
false, or ``fp16`` (the default: the fp16 cells only; the change that brought these kernels,
microsoft/onnxruntime#19470, says their cuDNN-frontend convolutions use TF32 whatever
``use_tf32`` says, so an fp32 cell with them is not known strict, and it was slower) and
``cudnn_conv_algo_search`` (``HEURISTIC``, the default: cuDNN's heuristics pick each
convolution's algorithm; ``EXHAUSTIVE``, ONNX Runtime's own default: cuDNN times every
algorithm on the first run; ``DEFAULT``: implicit precomputed GEMM, no search).
``benchmarks/ort_cuda_options.py`` times every combination; on the H200 (docs/results/h200.md,
session 6) HEURISTIC with NHWC ran vgg16 fp16 at 8,194 / 9,874 img/s (batch 8 / 50) against
2,166 / 2,823 with ONNX Runtime's defaults, resnet50 fp16 at 6,108 / 9,832 against 3,199 /
8,111, and fp32 was as fast with HEURISTIC and slower with NHWC.

What a result records (``info``) is read back from ONNX Runtime, not from the config: the
threads from the session's own options, TF32, CUDA graphs, NHWC and the algorithm search from
the provider options the session runs with (``get_provider_options``), the per-run sync from
the run options the timed runs used.
"""

import os
import statistics
import time
import weakref

import numpy as np
import onnxruntime as ort

from infbench import gpu
from infbench.errors import UserError
from infbench.provenance import cpu_name
from infbench.runtimes.base import Session, SessionSpec, check_cell, normalise_nchw

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


INT8_ON_CUDA = "emulated: the CUDA provider runs the Q/DQ graph in float (it has no int8 convolutions)"


# runs of a new graph slot while staging: ONNX Runtime runs a graph id normally first and
# captures it on a later run; the rest replay it
CAPTURE_RUNS = 3

# per_run_sync: auto: seconds per block of runs, and rounds of (with, without) blocks
AUTO_BLOCK_S = 0.1
AUTO_ROUNDS = 3


# the runtime's CUDA options and their defaults (the schema's, config/README.md's)
DEFAULTS = {
    "allow_tf32": False,
    "cuda_graphs": False,
    "prefer_nhwc": "fp16",
    "cudnn_conv_algo_search": "HEURISTIC",
}
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


def provider_options(spec):
    """(providers, their options) for the cell: on CUDA, TF32, CUDA graphs, NHWC and cuDNN's
    algorithm search as the config says (the CUDA provider's option names and values)."""
    if spec.device == "cpu":
        return [PROVIDERS["cpu"]], [{}]
    options = {**DEFAULTS, **(spec.options or {})}
    search = options["cudnn_conv_algo_search"]
    if search not in CONV_ALGO_SEARCH:
        raise UserError(
            f"config key runtimes.onnxruntime.cudnn_conv_algo_search is {search!r};"
            f" it must be one of {', '.join(CONV_ALGO_SEARCH)}"
        )
    cuda = {
        "device_id": "0",
        "use_tf32": "1" if options["allow_tf32"] else "0",
        "prefer_nhwc": "1" if nhwc(options["prefer_nhwc"], spec.precision) else "0",
        "cudnn_conv_algo_search": search,
    }
    if options["cuda_graphs"]:
        cuda["enable_cuda_graph"] = "1"
    return [PROVIDERS["cuda"], PROVIDERS["cpu"]], [cuda, {}]


def nhwc(prefer_nhwc, precision):
    """Whether a cell's convolutions run in NHWC: ``prefer_nhwc`` true or false, or ``fp16``
    for the fp16 cells only."""
    if prefer_nhwc == "fp16":
        return precision == "fp16"
    if not isinstance(prefer_nhwc, bool):
        raise UserError(
            f"config key runtimes.onnxruntime.prefer_nhwc is {prefer_nhwc!r}; it must be true, false or fp16"
        )
    return prefer_nhwc


def settings_in_force(session, run_options=None):
    """The settings ``session`` (an InferenceSession) runs with, as ONNX Runtime reports them:
    its threads and graph optimisation from its session options; on CUDA, TF32, CUDA graphs,
    NHWC and cuDNN's algorithm search from the provider options it was created with, and the
    per-run sync from ``run_options`` (the timed runs'; None: not known yet)."""
    so = session.get_session_options()
    settings = {
        "threads": so.intra_op_num_threads,  # intra-op: the threads one operator runs on
        "inter_op_threads": so.inter_op_num_threads,
        "graph_optimization": so.graph_optimization_level.name,
    }
    cuda = session.get_provider_options().get(PROVIDERS["cuda"])
    if cuda is None:
        empty = {"tf32": None, "cuda_graphs": False, "prefer_nhwc": None, "cudnn_conv_algo_search": None}
        return {**settings, **empty, "per_run_sync": None}
    return {
        **settings,
        "tf32": cuda.get("use_tf32") == "1",
        "cuda_graphs": cuda.get("enable_cuda_graph") == "1",
        "prefer_nhwc": cuda.get("prefer_nhwc") == "1",
        "cudnn_conv_algo_search": cuda.get("cudnn_conv_algo_search"),
        "per_run_sync": None if run_options is None else syncs_after_each_run(run_options),
    }


def syncs_after_each_run(options):
    """Whether runs with these RunOptions wait for the GPU (ONNX Runtime's default), read back."""
    try:
        return options.get_run_config_entry("disable_synchronize_execution_providers") != "1"
    except RuntimeError:  # "does not have configuration": the default
        return True


def run_options(spec, graph_id=None, per_run_sync=False):
    """RunOptions: on CUDA, no host synchronisation after each run unless ``per_run_sync``
    (``sync`` waits instead), and the CUDA graph the run captures or replays (``graph_id``,
    from 1)."""
    options = ort.RunOptions()
    if spec.device == "cuda" and not per_run_sync:
        options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    if graph_id is not None:
        options.add_run_config_entry("gpu_graph_id", str(graph_id))
    return options


def choose_per_run_sync(seconds_per_run, block_s=AUTO_BLOCK_S, rounds=AUTO_ROUNDS):
    """per_run_sync: auto. ``seconds_per_run(per_run_sync, runs)`` runs one staged batch
    ``runs`` times that way and returns the seconds per run. Both ways are warmed up, then
    timed in alternating blocks of about ``block_s`` seconds (3 to 100 runs); the way with
    the lower median wins (ties: no per-run sync). Returns (per_run_sync, ms per run of each)."""
    seconds_per_run(True, 2)
    seconds_per_run(False, 2)
    runs = max(3, min(100, int(block_s / max(seconds_per_run(True, 3), 1e-9))))
    times = {True: [], False: []}
    for _ in range(rounds):
        for way in (True, False):
            times[way].append(seconds_per_run(way, runs))
    median = {way: statistics.median(t) for way, t in times.items()}
    ms = {"with": round(1000 * median[True], 4), "without": round(1000 * median[False], 4), "runs": runs}
    return median[True] < median[False], ms


def _providers(spec):
    """(providers, options) for the cell, or a UserError naming the config key."""
    check_cell(spec)
    wanted = PROVIDERS[spec.device]
    if wanted not in ort.get_available_providers():
        raise UserError(
            f"runtimes.onnxruntime.device is {spec.device!r} but this onnxruntime"
            f" {ort.__version__} has no {wanted}"
            f" (it has {', '.join(ort.get_available_providers())});"
            " install onnxruntime-gpu matching the CUDA version, or set the device to 'cpu'"
        )
    return provider_options(spec)


class _Bound:
    """A staged CUDA batch: the input OrtValue on the GPU and the I/O binding that uses it,
    the id of its CUDA graph (None without graphs) and the run options ``run`` passes (set
    once the session knows its per-run sync)."""

    __slots__ = ("value", "binding", "graph_id", "run_options", "__weakref__")

    def __init__(self, value, binding, graph_id=None):
        self.value = value
        self.binding = binding
        self.graph_id = graph_id
        self.run_options = None


class _Slot:
    """A CUDA graph's fixed input and output on the GPU, its binding and graph id."""

    __slots__ = ("values", "binding", "graph_id", "user")

    def __init__(self, values, binding, graph_id):
        self.values, self.binding, self.graph_id = values, binding, graph_id
        self.user = lambda: None  # weak reference to the staged batch that holds the slot


class OrtSession(Session):
    def __init__(self, spec: SessionSpec):
        super().__init__(spec)
        providers, options_of_providers = _providers(spec)
        if not os.path.isfile(spec.artifact):
            raise UserError(f"{spec.artifact} does not exist; run the workflow's ONNX steps first")
        options = spec.options or {}
        self.threads = int(options.get("threads") or os.cpu_count() or 1)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            spec.artifact, sess_options=so, providers=providers, provider_options=options_of_providers
        )
        # per-run sync on CUDA: True, False, or None until auto has chosen (first staged batch)
        per_run_sync = options.get("per_run_sync", "auto")
        self.per_run_sync = None if per_run_sync == "auto" else bool(per_run_sync)
        self.per_run_sync_ms = None  # auto: ms per run with and without, as timed
        self.run_options = run_options(spec)
        if self.session.get_providers()[0] != providers[0]:
            raise UserError(
                f"ONNX Runtime could not start {providers[0]} for {spec.artifact} (it fell back"
                f" to {self.session.get_providers()[0]}); check the CUDA and cuDNN libraries"
                " or set runtimes.onnxruntime.device to 'cpu'"
            )
        self.input_name = self.session.get_inputs()[0].name
        output = self.session.get_outputs()[0]
        self.output_name = output.name
        self.output_dtype = np.float16 if output.type == "tensor(float16)" else np.float32
        self.output_shape = [spec.batch_size] + [d if isinstance(d, int) else 1 for d in output.shape[1:]]
        self.on_cuda = spec.device == "cuda"
        # as the session runs, not as asked: read back from ONNX Runtime
        self.cuda_graphs = settings_in_force(self.session)["cuda_graphs"]
        self.timed_run_options = None  # the run options of the latest staged batch (CUDA)
        self.slots = []

    def _choose_per_run_sync(self, forms):
        """per_run_sync: auto: time the first staged batch in both forms, ``forms[True]``
        (ONNX Runtime's per-run sync) and ``forms[False]`` (none), outside any timed window,
        and keep the faster; returns the staged batch of that form."""

        def seconds_per_run(per_run_sync, runs):
            staged = forms[per_run_sync]
            options = run_options(self.spec, staged.graph_id, per_run_sync)
            t0 = time.perf_counter()
            for _ in range(runs):
                self.session.run_with_iobinding(staged.binding, options)
            staged.binding.synchronize_outputs()
            return (time.perf_counter() - t0) / runs

        self.per_run_sync, self.per_run_sync_ms = choose_per_run_sync(seconds_per_run)
        return forms[self.per_run_sync]

    def _preallocated(self, per_run_sync):
        """A CUDA graph needs its output at a fixed address, and so does the asynchronous form;
        with ONNX Runtime's per-run sync the output is ONNX Runtime's, as in its documented loop."""
        return self.cuda_graphs or not per_run_sync

    def _bind(self, x, preallocated=True):
        """The batch on the GPU and its I/O binding, with a preallocated output on the GPU or
        one that ONNX Runtime allocates there on each run."""
        value = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        out = None
        if preallocated:
            out = ort.OrtValue.ortvalue_from_shape_and_type(self.output_shape, self.output_dtype, "cuda", 0)
            binding.bind_ortvalue_output(self.output_name, out)
        else:
            binding.bind_output(self.output_name, "cuda")
        binding.synchronize_inputs()
        return (value, out), binding

    def stage(self, images: np.ndarray):
        """uint8 NHWC host batch -> its input on the device (CUDA) or the float32 array.

        With CUDA graphs each staged batch holds a slot: a free one (whose staged batch is
        gone) is refilled in place, otherwise a new one is bound and its graph captured.
        """
        x = normalise_nchw(images)
        if not self.on_cuda:
            return {self.input_name: x}
        if not self.cuda_graphs:
            if self.per_run_sync is None:  # auto: the first batch, bound both ways
                staged = self._choose_per_run_sync(
                    {sync: _Bound(*self._bind(x, self._preallocated(sync))) for sync in (True, False)}
                )
            else:
                staged = _Bound(*self._bind(x, self._preallocated(self.per_run_sync)))
        else:
            staged = self._stage_in_slot(x)
            if self.per_run_sync is None:  # auto: the first graph, replayed both ways
                self._choose_per_run_sync({True: staged, False: staged})
        staged.run_options = self.timed_run_options = run_options(self.spec, staged.graph_id, self.per_run_sync)
        return staged

    def _stage_in_slot(self, x):
        """CUDA graphs: a free slot refilled in place, else a new one bound and captured."""
        slot = next((s for s in self.slots if s.user() is None), None)
        if slot is None:
            graph_id = len(self.slots) + 1
            values, binding = self._bind(x)
            slot = _Slot(values, binding, graph_id)
            capture = run_options(self.spec, graph_id)
            for _ in range(CAPTURE_RUNS):
                self.session.run_with_iobinding(binding, capture)
            binding.synchronize_outputs()
            self.slots.append(slot)
        else:
            slot.values[0].update_inplace(x)
        staged = _Bound(slot.values, slot.binding, slot.graph_id)
        slot.user = weakref.ref(staged)
        return staged

    def run(self, staged):
        if self.on_cuda:
            self.session.run_with_iobinding(staged.binding, staged.run_options)
            return staged.binding
        return self.session.run(None, staged, self.run_options)[0]

    def sync(self, output):
        """CUDA: wait for the bound outputs (runs do not synchronise); the CPU path is synchronous."""
        if self.on_cuda:
            output.synchronize_outputs()

    def logits(self, output) -> np.ndarray:
        if self.on_cuda:
            return output.get_outputs()[0].numpy().astype(np.float32, copy=False)
        return np.asarray(output, dtype=np.float32)

    def info(self) -> dict:
        """Versions, and the settings read back from ONNX Runtime (``settings_in_force``)."""
        name, driver = gpu.name_and_driver() if self.on_cuda else (cpu_name(), None)
        return {
            "runtime": "onnxruntime",
            "onnxruntime": ort.__version__,
            "device": self.spec.device,
            "device_name": name,
            "driver": driver,
            "providers": self.session.get_providers(),
            # threads, graph optimisation; on CUDA TF32, CUDA graphs, NHWC, the cuDNN algorithm
            # search and ONNX Runtime's host sync after each run
            **settings_in_force(self.session, self.timed_run_options),
            "io": (
                "iobinding, output "
                + ("preallocated" if self._preallocated(self.per_run_sync) else "allocated by onnxruntime")
                + " on the gpu"
            )
            if self.on_cuda
            else "numpy",
            # per_run_sync auto: ms per run with and without, as timed while staging
            "per_run_sync_auto_ms": self.per_run_sync_ms,
            "int8": INT8_ON_CUDA if self.on_cuda and self.spec.precision == "int8" else None,
        }

    def close(self):
        self.slots = []
        self.session = None


def open_session(spec: SessionSpec) -> Session:
    return OrtSession(spec)
