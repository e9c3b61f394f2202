"""TensorRT engines: build one from a precision's ONNX, and decide when one must be rebuilt.

An engine is tied to the TensorRT version and the model of GPU that built it. Each engine
``E.plan`` has a sidecar ``E.json`` recording what produced it (TensorRT, GPU model, compute
capability, driver, ONNX hash, build options, and the GPU slot it was built on where it
took one: ``infbench.slots``); an engine whose sidecar does not match the current
environment is rebuilt by the build_engine rule, never silently used (``needs_rebuild``;
the session refuses it: on a machine of several GPUs, one built for another GPU model).

The functions above ``build_engine`` need neither TensorRT nor a GPU; they are tested on
any machine. ``build_engine`` speaks three generations of TensorRT's Python API, chosen by
the installed version (``api_generation``): 8.5 to 9.x (explicit-batch networks, precision
by builder flags: FP16, or INT8 with FP16 for the Q/DQ ONNX), 10.x (strongly typed on
request) and 11.x (always strongly typed, no precision flags: precision lives in the
ONNX). TF32 is cleared for strict fp32 unless ``allow_tf32``. The API facts and their
sources: docs/tensorrt-api-notes.md.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from datetime import datetime, timezone

from infbench import files, gpu, slots
from infbench.errors import UserError
from infbench.progress import Heartbeat, Progress

log = logging.getLogger("infbench.runtimes.tensorrt.build")

SIDECAR_FORMAT = 1

# precision -> the ONNX file (results/onnx/{model}/...) its engine is built from
ONNX_FOR_PRECISION = {"fp32": "fp32.onnx", "fp16": "fp16.onnx", "int8": "int8-s8s8.onnx"}
# int8 for strongly typed networks (TensorRT 10/11): the same Q/DQ over an fp16 graph, so
# that what is not quantised runs in fp16 (8.x gets that from its FP16 builder flag)
INT8_FP16_FORM = "int8-s8s8-fp16.onnx"


def onnx_for_generation(onnx_path, precision, generation):
    """The ONNX an engine of this TensorRT generation is built from: for int8 on 10/11 the
    fp16 form beside ``onnx_path`` where it exists, else ``onnx_path`` itself."""
    if precision == "int8" and generation >= 10:
        sibling = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), INT8_FP16_FORM)
        if os.path.exists(sibling):
            return sibling
    return onnx_path


# environment fields that make an engine unusable when they change, with their words
ENVIRONMENT_FIELDS = {
    "tensorrt": "TensorRT version",
    "gpu_name": "GPU model",
    "compute_capability": "compute capability",
    "driver": "NVIDIA driver",
    "cuda_driver": "CUDA driver version",
}

# build options that change the engine, with their words
BUILD_FIELDS = {
    "precision": "precision",
    "batch_size": "batch size",
    "workspace_mib": "workspace limit (MiB)",
    "allow_tf32": "TF32 setting",
    "tactic_sources": "tactic sources",
    "builder_optimization_level": "builder optimisation level",
}

# the engine options of the config's runtimes.tensorrt block, with their defaults; None
# leaves the choice to TensorRT (its default tactic sources, optimisation level 3). Level 3
# was kept after measuring levels 0-4 for resnet50 on an H200 (docs/results/h200.md): level 2
# built in about half the time but its fp32 engines ran 7-8 % slower; level 4 doubled the fp16
# build for no gain; and None still builds on TensorRT 8.5, which has no level setting.
DEFAULTS = {
    "workspace_mib": 4096,
    "allow_tf32": False,
    "tactic_sources": None,
    "builder_optimization_level": None,
}

# the builder flags that set a cell's precision where networks are weakly typed (8.x, 9.x)
PRECISION_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}


# --- pure helpers: no TensorRT, no GPU --------------------------------------------------


sha256_file = files.sha256


def sidecar_path(engine_path):
    """The sidecar of ``E.plan`` is ``E.json``, beside it."""
    return os.path.splitext(engine_path)[0] + ".json"


def default_timing_cache(engine_path):
    """The timing cache shared by all engines: results/engines/timing.cache."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(engine_path))), "timing.cache")


def onnx_for_engine(engine_path, precision):
    """The ONNX an engine is built from, by the workflow's path convention.

    results/engines/{model}/{precision}-bs{bs}.plan <- results/onnx/{model}/<ONNX_FOR_PRECISION>
    """
    if precision not in ONNX_FOR_PRECISION:
        raise UserError(
            f"precision {precision!r} has no TensorRT engine form; use one of {', '.join(ONNX_FOR_PRECISION)}"
        )
    model_dir = os.path.dirname(os.path.abspath(engine_path))
    results = os.path.dirname(os.path.dirname(model_dir))
    return os.path.join(results, "onnx", os.path.basename(model_dir), ONNX_FOR_PRECISION[precision])


def _load_onnx(onnx_path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(onnx_path, load_external_data=False)
    except (OSError, ValueError, DecodeError) as err:
        raise UserError(
            f"{onnx_path} is not a readable ONNX file ({err.__class__.__name__});"
            " delete it so the workflow exports it again"
        ) from None


def _graph_inputs(graph):
    """Graph inputs that are real inputs (older exporters also list initializers)."""
    initializers = {init.name for init in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def io_names(onnx_path):
    """Names of the ONNX model's inputs and outputs: {"inputs": [...], "outputs": [...]}."""
    graph = _load_onnx(onnx_path).graph
    return {"inputs": [i.name for i in _graph_inputs(graph)], "outputs": [o.name for o in graph.output]}


# the newest ONNX opset TensorRT 8.x's ONNX parser knows (8.6 release notes: opset 17)
PARSER_MAX_OPSET = {8: 17}
REDUCE_OPS = {
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}


def default_opset(model):
    """The model's opset of the default ONNX domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def downgrade_to_opset17(model, where):
    """An opset-18 model rewritten as opset 17, for parsers that stop at 17 (TensorRT 8.6).

    Opset 18 changed, among the operators of CNNs, only the reductions: their ``axes`` moved
    from an attribute to an input. Those are moved back (the axes must be constant) and the
    opset import set to 17. Operators whose opset-18 features the model uses and opset 17
    lacks (Pad's axes, Split's num_outputs, Resize's antialias/axes) are refused with one
    sentence. The model is changed in place and returned. ``where`` names the file in errors.
    """
    from onnx import helper, numpy_helper

    if default_opset(model) != 18:
        raise UserError(f"{where} has opset {default_opset(model)}; TensorRT 8.x reads opset 17 or 18 files only")
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type in REDUCE_OPS:
            noop = attrs.get("noop_with_empty_axes")
            if noop is not None:
                if helper.get_attribute_value(noop):
                    raise UserError(
                        f"{where}: {node.name} reduces nothing when axes are empty, which opset 17 cannot say"
                    )
                node.attribute.remove(noop)
            if len(node.input) > 1 and node.input[1]:
                if node.input[1] not in constants:
                    raise UserError(
                        f"{where}: {node.name} takes its axes from a computed tensor; opset 17 needs constant axes"
                    )
                axes = [int(a) for a in constants[node.input[1]].reshape(-1)]
                del node.input[1:]
                node.attribute.append(helper.make_attribute("axes", axes))
        elif (
            (node.op_type == "Pad" and len(node.input) > 3)
            or (node.op_type == "Split" and "num_outputs" in attrs)
            or (node.op_type == "Resize" and attrs.keys() & {"antialias", "axes", "keep_aspect_ratio_policy"})
        ):
            raise UserError(
                f"{where}: {node.op_type} node {node.name} uses an opset-18 feature TensorRT 8.x cannot read"
            )
    used = {name for node in model.graph.node for name in node.input}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:  # the axes tensors just moved into attributes
        model.graph.initializer.remove(init)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    return model


def onnx_for_parser(onnx_path, generation):
    """The bytes the ONNX parser of this TensorRT generation reads, and what was done to them.

    The file as it is, unless its opset is newer than the parser knows (TensorRT 8.x: 17),
    then the opset-17 rewrite of ``downgrade_to_opset17``.
    """
    model = _load_onnx(onnx_path)
    limit = PARSER_MAX_OPSET.get(generation)
    opset = default_opset(model)
    if limit is None or opset is None or opset <= limit:
        with open(onnx_path, "rb") as f:
            return f.read(), None
    downgrade_to_opset17(model, onnx_path)
    return model.SerializeToString(), f"opset {opset} rewritten as opset {limit} for TensorRT's ONNX parser"


def profile_shapes(onnx_path, batch_size):
    """The optimisation profile for one batch size: {input name: (min, opt, max)}.

    min = opt = max = the input's shape with its batch axis (axis 0, dynamic in our
    exports) set to ``batch_size``: one engine per batch size, tuned for exactly it.
    """
    shapes = {}
    for tensor in _graph_inputs(_load_onnx(onnx_path).graph):
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor.type.tensor_type.shape.dim
        ]
        if not dims:
            raise UserError(f"{onnx_path}: input {tensor.name!r} has no shape; re-export it with a static NCHW shape")
        if dims[0] is not None and dims[0] != batch_size:
            raise UserError(
                f"{onnx_path}: input {tensor.name!r} has a fixed batch of {dims[0]}, not {batch_size};"
                " re-export it with a dynamic batch axis"
            )
        if any(d is None for d in dims[1:]):
            raise UserError(
                f"{onnx_path}: input {tensor.name!r} has dynamic axes besides the batch ({dims});"
                " re-export it with a fixed crop size"
            )
        shape = (int(batch_size),) + tuple(int(d) for d in dims[1:])
        shapes[tensor.name] = (shape, shape, shape)
    return shapes


def build_options(
    precision, batch_size, workspace_mib, allow_tf32, tactic_sources=None, builder_optimization_level=None
):
    """The options an engine is built with; a change to any of them needs a new engine.

    ``tactic_sources`` is a list of TacticSource member names (kept sorted) or None for
    TensorRT's default; ``builder_optimization_level`` an int 0-5 or None for its default.
    """
    if precision not in ONNX_FOR_PRECISION:
        raise UserError(
            f"precision {precision!r} has no TensorRT engine form; use one of {', '.join(ONNX_FOR_PRECISION)}"
        )
    return {
        "precision": precision,
        "batch_size": int(batch_size),
        "workspace_mib": int(workspace_mib),
        "allow_tf32": bool(allow_tf32),
        "tactic_sources": None if tactic_sources is None else sorted(set(tactic_sources)),
        "builder_optimization_level": (None if builder_optimization_level is None else int(builder_optimization_level)),
    }


def engine_settings(block):
    """The engine options of the config's runtimes.tensorrt block, defaults filled in."""
    return {**DEFAULTS, **{k: v for k, v in (block or {}).items() if k in DEFAULTS}}


def settings_of_sidecar(sidecar):
    """The engine options an existing engine was built with (its sidecar's ``build``), so that
    a tool timing that engine asks for it as built instead of having it rebuilt in place."""
    build = (sidecar or {}).get("build") or {}
    return {key: build[key] for key in DEFAULTS if key in build}


def options_from_config(block, precision, batch_size):
    """``build_options`` for one cell from the config's runtimes.tensorrt block."""
    return build_options(precision, batch_size, **engine_settings(block))


def api_generation(tensorrt_version):
    """Which TensorRT Python API this version speaks: 8 (8.5-9.x), 10 or 11 (11.x and later).

    8: weakly typed networks, EXPLICIT_BATCH flag, precision by builder flags.
    10: strongly typed networks on request (STRONGLY_TYPED flag), precision from the ONNX.
    11: every network strongly typed; the type builder flags are gone.
    Name-based I/O and execute_async_v3, which the runtime uses, arrived in 8.5.
    """
    try:
        major, minor = (int(p) for p in str(tensorrt_version).split(".")[:2])
    except ValueError:
        raise UserError(f"cannot read the TensorRT version {tensorrt_version!r}; reinstall TensorRT") from None
    if (major, minor) < (8, 5):
        raise UserError(
            f"TensorRT {tensorrt_version} is too old: infbench needs 8.5 or later (name-based I/O,"
            " execute_async_v3); run `make env-tensorrt` for TensorRT 8.6.0"
        )
    if major < 10:
        return 8
    return 10 if major == 10 else 11


def network_creation_flags(tensorrt_version, strongly_typed_bit=None, explicit_batch_bit=None):
    """The ``create_network`` flags on this TensorRT.

    8.x/9.x: ``1 << EXPLICIT_BATCH`` (the ONNX parser needs explicit-batch networks).
    10.x: ``1 << STRONGLY_TYPED``. 11.x and later: 0, since every network is strongly typed
    and the flag is deprecated and ignored. The bits are ``int(NetworkDefinitionCreationFlag.X)``,
    or None where the installed enum lacks X.
    """
    generation = api_generation(tensorrt_version)
    if generation == 11:
        return 0
    name, bit = ("STRONGLY_TYPED", strongly_typed_bit) if generation == 10 else ("EXPLICIT_BATCH", explicit_batch_bit)
    if bit is None:
        raise UserError(
            f"this TensorRT {tensorrt_version} has no NetworkDefinitionCreationFlag.{name};"
            " reinstall TensorRT (run `make env-tensorrt`)"
        )
    return 1 << int(bit)


def precision_flags(tensorrt_version, precision):
    """The BuilderFlag names that set a cell's precision: only where networks are weakly typed.

    From 10.x on the network is strongly typed and the ONNX alone says each tensor's type.
    """
    return list(PRECISION_FLAGS[precision]) if api_generation(tensorrt_version) == 8 else []


def tactic_source_mask(names, members):
    """The bit mask of TacticSource ``names``; ``members`` maps each member name to its bit."""
    unknown = sorted(set(names) - set(members))
    if unknown:
        raise UserError(
            f"config key runtimes.tensorrt.tactic_sources: this TensorRT has no tactic source"
            f" {', '.join(unknown)} (it has {', '.join(sorted(members))}); remove it"
        )
    mask = 0
    for name in names:
        mask |= 1 << int(members[name])
    return mask


def tactic_source_names(mask, members):
    """The TacticSource member names set in ``mask``, sorted."""
    return sorted(name for name, bit in members.items() if mask & (1 << int(bit)))


def environment_fingerprint(
    tensorrt, gpu_name, compute_capability, driver, cuda_driver, cuda_runtime, tensorrt_cuda=None
):
    """What an engine depends on, as recorded in and compared against its sidecar.

    ``driver`` is the NVIDIA driver version string, ``cuda_driver`` the CUDA version the
    driver supports (cudaDriverGetVersion, e.g. 13000), ``tensorrt_cuda`` the CUDA major
    version TensorRT was built for (``tensorrt_cuda_major``), ``cuda_runtime`` the CUDA
    runtime cuda-python is bound to (the last two recorded, not compared: the TensorRT
    version already fixes its CUDA, and cuda-python only moves buffers).
    """
    return {
        "tensorrt": None if tensorrt is None else str(tensorrt),
        "tensorrt_cuda": None if tensorrt_cuda is None else int(tensorrt_cuda),
        "gpu_name": gpu_name,
        "compute_capability": None if compute_capability is None else str(compute_capability),
        "driver": driver,
        "cuda_driver": None if cuda_driver is None else int(cuda_driver),
        "cuda_runtime": None if cuda_runtime is None else int(cuda_runtime),
    }


def tensorrt_cuda_major(packages):
    """The CUDA major version TensorRT was built for, from the installed packages
    (``{name: [requirement, ...]}``): the ``-cuNN`` of a TensorRT package's name
    (tensorrt-cu12, tensorrt_cu13_libs: TensorRT 10/11 from NVIDIA) or of the CUDA runtime a
    TensorRT package requires (TensorRT 8.6.0 from PyPI: nvidia-cuda-runtime-cu12); None
    when neither says."""
    names = {name.lower().replace("_", "-"): requires or [] for name, requires in packages.items()}
    trt = {name: requires for name, requires in names.items() if name.startswith("tensorrt")}
    for name in sorted(trt):
        match = re.search(r"-cu(\d+)(-|$)", name)
        if match:
            return int(match.group(1))
    for name in sorted(trt):
        for requirement in trt[name]:
            match = re.match(r"nvidia-cuda-runtime-cu(\d+)\b", requirement.lower().replace("_", "-"))
            if match:
                return int(match.group(1))
    return None


def installed_tensorrt_packages():
    """``{name: requirements}`` of the installed packages whose name starts with tensorrt."""
    import importlib.metadata

    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().startswith("tensorrt"):
            found[name] = list(dist.requires or [])
    return found


def sidecar_matches(sidecar, current_env, onnx_sha256, options):
    """Whether an engine's sidecar fits this environment, ONNX and build options.

    Returns (True, "matches") or (False, reason), the reason naming the first difference.
    ``onnx_sha256`` None skips the ONNX check (the ONNX file is not there to hash).
    """
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        return False, f"sidecar format is not {SIDECAR_FORMAT}"
    recorded_env = sidecar.get("environment", {})
    for key, words in ENVIRONMENT_FIELDS.items():
        was, now = recorded_env.get(key), current_env.get(key)
        if was != now:
            return False, f"{words} changed ({was} -> {now})"
    if onnx_sha256 is not None and sidecar.get("onnx_sha256") != onnx_sha256:
        return False, "the ONNX file changed (sha256 differs)"
    recorded_build = sidecar.get("build", {})
    for key, words in BUILD_FIELDS.items():
        was, now = recorded_build.get(key), options.get(key)
        if was != now:
            return False, f"{words} changed ({was} -> {now})"
    return True, "matches"


def read_sidecar(path):
    """The sidecar as a dict, or None if it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def needs_rebuild(engine_path, current_env, onnx_sha256, options):
    """Whether ``engine_path`` must be (re)built, and why: (bool, reason)."""
    if not os.path.exists(engine_path):
        return True, f"{engine_path} does not exist"
    sidecar = read_sidecar(sidecar_path(engine_path))
    if sidecar is None:
        return True, f"its sidecar {sidecar_path(engine_path)} is missing or unreadable"
    if sidecar.get("engine_sha256") != sha256_file(engine_path):
        return True, "the engine file does not match its sidecar (sha256 differs)"
    ok, reason = sidecar_matches(sidecar, current_env, onnx_sha256, options)
    return (not ok), reason


def atomic_write(path, data):
    """Write bytes so that readers see the old file or the new one, never a partial one."""
    files.atomic_write(path, data, fsync=True)


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive lock on ``path + '.lock'`` (flock) for the ``with`` block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_locked(path):
    """The bytes of ``path`` read under its lock, or None when it does not exist."""
    with file_lock(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


def update_locked(path, merge):
    """Read-merge-write ``path`` under its lock: ``merge(old bytes or None) -> new bytes``.

    Concurrent engine builds share one timing cache file; each merges its new entries into
    what is on disk at the time it finishes, so no build's entries are lost.
    """
    with file_lock(path):
        try:
            with open(path, "rb") as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        atomic_write(path, merge(old))


# --- the environment: needs cuda-python (and TensorRT for its version) -----------------


nvidia_driver_version = gpu.driver_version  # the one home of the driver probe (infbench.gpu)


def current_environment(tensorrt_version, device=0):
    """This machine's fingerprint for ``device`` (cuda-python reads the GPU)."""
    from infbench.runtimes.tensorrt import cudart

    info = cudart.device_info(device)
    return environment_fingerprint(
        tensorrt=tensorrt_version,
        tensorrt_cuda=tensorrt_cuda_major(installed_tensorrt_packages()),
        gpu_name=info["gpu_name"],
        compute_capability=info["compute_capability"],
        driver=nvidia_driver_version(),
        cuda_driver=info["cuda_driver"],
        cuda_runtime=info["cuda_runtime"],
    )


# --- the build: needs TensorRT ----------------------------------------------------------


def import_tensorrt():
    """The tensorrt module, or a UserError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise UserError(
            f"TensorRT is not installed in {sys.executable}: run `make env-tensorrt` (TensorRT 8.6"
            " from PyPI, needs a Python 3.10), set runtimes.tensorrt.python to an interpreter that"
            " has TensorRT, or remove tensorrt from runtimes"
        ) from None
    return tensorrt


class RecordingLogger:
    """The TensorRT logger of a build: prints what ``trt.Logger(WARNING)`` prints, and keeps
    TensorRT's error messages, so that a failed build can say in one sentence what TensorRT
    said (``BuildFailed``). ``make(trt)`` returns the ``trt.ILogger`` subclass instance that
    TensorRT calls (possibly from several threads)."""

    LETTERS = {0: "F", 1: "E", 2: "W"}  # ILogger.Severity: INTERNAL_ERROR, ERROR, WARNING

    def __init__(self, stream=None):
        self.stream = stream
        self.errors = []
        self.last_warning = None
        self.lock = threading.Lock()

    def record(self, severity, msg):
        level, text = int(severity), " ".join(str(msg).split())
        if level in self.LETTERS:
            print(f"[TRT] [{self.LETTERS[level]}] {msg}", file=self.stream or sys.stderr, flush=True)
        with self.lock:
            if level <= 1:
                self.errors.append(text)
            elif level == 2:
                self.last_warning = text

    def since(self, mark):
        """The error messages recorded after ``mark`` (an earlier ``len(self.errors)``)."""
        with self.lock:
            return list(self.errors[mark:])

    def make(self, trt):
        recorder = self

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                recorder.record(severity, msg)

        return Logger()


def build_failure(model, precision, batch_size, onnx_path, tensorrt_version, errors, seconds):
    """The one sentence of a build that returned no engine: the cell, TensorRT's first error
    message (the later ones restate that the build failed) and what to do."""
    said = errors[0] if errors else "it logged no error message"
    more = len(errors) - 1
    more = f" (and {more} more error message{'s' if more > 1 else ''} above)" if more else ""
    return UserError(
        f"TensorRT {tensorrt_version} could not build the {precision} engine of {model} at batch size"
        f" {batch_size} from {onnx_path} after {seconds:.1f} s: {said}{more}; run"
        f" benchmarks/tensorrt_bisect.py --onnx {onnx_path} --precision {precision} to find the node that"
        f" trips it, or remove {precision} from runtimes.tensorrt.precisions"
    )


def _load_timing_cache(config, timing_cache, recorder):
    """Attach a timing cache to ``config`` and say how that went (recorded in the sidecar).

    ``timing_cache`` is the shared file (its entries if TensorRT can read them, else an
    empty cache), an ``ITimingCache`` shared in this process, or None (an empty cache).
    TensorRT 8.6 does not raise when it cannot read a cache file: it logs an error ("Myelin
    error from unknown graph", then "The timing cache will not be used!") and goes on
    without it; the errors it logs while reading are what tells (docs/tensorrt-api-notes.md).
    """
    if timing_cache is None or not isinstance(timing_cache, (str, os.PathLike)):
        cache = timing_cache if timing_cache is not None else config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        return {"file": None, "loaded": timing_cache is not None}
    status = {"file": os.path.abspath(timing_cache), "bytes": 0, "loaded": False}
    data = read_locked(timing_cache)
    if data:
        status["bytes"] = len(data)
        mark = len(recorder.errors)
        try:
            attached = config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False)
        except (RuntimeError, TypeError, ValueError) as err:
            recorder.record(1, f"{err.__class__.__name__}: {err}")
            attached = False
        said = recorder.since(mark)
        if attached and not said:
            status["loaded"] = True
            return status
        status["tensorrt_said"] = said or ["set_timing_cache refused it (another TensorRT or GPU made it)"]
        log.warning(
            "timing cache %s cannot be used (%s); building from an empty one",
            timing_cache,
            "; ".join(status["tensorrt_said"]),
        )
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return status


def _save_timing_cache(config, timing_cache, status):
    """Merge this build's timing cache into the shared file, under its lock; where the file
    could not be read at the start, replace it (merging would read it again, in vain)."""
    if timing_cache is None or not isinstance(timing_cache, (str, os.PathLike)):
        return
    built = config.get_timing_cache()

    def merge(old):
        if old and status["loaded"]:
            try:
                on_disk = config.create_timing_cache(old)
                if on_disk.combine(built, ignore_mismatch=False):
                    return bytes(on_disk.serialize())
            except (RuntimeError, TypeError, ValueError):
                pass
            log.warning("timing cache %s does not fit this TensorRT or GPU; replacing it", timing_cache)
        return bytes(built.serialize())

    update_locked(timing_cache, merge)
    status["saved"] = "merged" if status["loaded"] else ("replaced" if status["bytes"] else "written")


def _parse_onnx(trt, network, logger, onnx_path, model_bytes):
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes, os.path.dirname(os.path.abspath(onnx_path))):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise UserError(
            f"TensorRT's ONNX parser rejected {onnx_path} ({errors or 'no details'});"
            " delete it so the workflow exports it again"
        )
    return parser


def _configure_tactics(trt, config, tactic_sources, builder_optimization_level):
    """Apply the tactic sources and optimisation level asked for; return what is in effect."""
    members = dict(trt.TacticSource.__members__)
    if tactic_sources is not None:
        if not config.set_tactic_sources(tactic_source_mask(tactic_sources, members)):
            raise UserError(
                f"TensorRT {trt.__version__} refused tactic sources {tactic_sources};"
                " change runtimes.tensorrt.tactic_sources"
            )
    if builder_optimization_level is not None:
        if not hasattr(config, "builder_optimization_level"):
            raise UserError(
                f"config key runtimes.tensorrt.builder_optimization_level needs TensorRT 8.6 or"
                f" later (this is {trt.__version__}); remove it"
            )
        config.builder_optimization_level = int(builder_optimization_level)
    return (
        tactic_source_names(int(config.get_tactic_sources()), members),
        getattr(config, "builder_optimization_level", None),
    )


def progress_monitor(trt, what, every=10.0, clock=time.monotonic, stream=None):
    """TensorRT 10+ (``trt.IProgressMonitor``): a monitor that turns each top-level phase of
    the build into ``infbench.progress.Progress`` lines in the step's log (steps done, rate,
    time left); None where TensorRT has no such interface (8.x). TensorRT may call it from
    several threads, hence the lock; returning True lets the build go on."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self):
            base.__init__(self)
            self.lock = threading.Lock()
            self.phases = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                with self.lock:
                    self.phases[phase_name] = Progress(
                        f"{what}: {phase_name}", num_steps, unit="steps", every=every, clock=clock, stream=stream
                    )

        def step_complete(self, phase_name, step):
            with self.lock:
                progress = self.phases.get(phase_name)
                if progress is not None:
                    progress.update(min(step + 1, progress.total))
            return True

        def phase_finish(self, phase_name):
            with self.lock:
                progress = self.phases.pop(phase_name, None)
                if progress is not None:  # finished: TensorRT may skip reporting the last steps
                    progress.done = progress.total
                    progress.finish()

    return Monitor()


def model_of_engine(engine_path):
    """The model an engine belongs to, by the workflow's layout: results/engines/{model}/..."""
    return os.path.basename(os.path.dirname(os.path.abspath(engine_path)))


def build_serialized(trt, model_bytes, onnx_path, shapes, options, timing_cache=None, recorder=None, what="build"):
    """Parse ``model_bytes`` (the ONNX as TensorRT's parser reads it) and build one engine
    with ``options`` (``build_options``); TensorRT is the module ``trt``.

    Returns a dict: ``plan`` (the serialized engine's bytes, or None when TensorRT built
    none), ``errors`` (TensorRT's error messages during the build), ``seconds`` (the build
    alone), the flags in effect and how the timing cache went (``_load_timing_cache``).
    A parser error is a UserError. The engine builds of the workflow
    (``build_engine``) and the bisection of a failing build (benchmarks/tensorrt_bisect.py)
    both come through here.
    """
    recorder = recorder or RecordingLogger()
    logger = recorder.make(trt)
    generation = api_generation(trt.__version__)
    try:
        builder = trt.Builder(logger)
    except TypeError:  # pybind11's "factory function returned nullptr": no usable GPU
        said = (recorder.errors or [recorder.last_warning or "no message"])[-1]
        raise UserError(
            f"TensorRT {trt.__version__} could not start its builder ({said}); build engines on a machine"
            " with an NVIDIA GPU and its driver, or remove tensorrt from runtimes"
        ) from None
    creation = trt.NetworkDefinitionCreationFlag
    bits = {
        name: (int(getattr(creation, name)) if hasattr(creation, name) else None)
        for name in ("STRONGLY_TYPED", "EXPLICIT_BATCH")
    }
    flags = network_creation_flags(trt.__version__, bits["STRONGLY_TYPED"], bits["EXPLICIT_BATCH"])
    network = builder.create_network(flags)
    parser = _parse_onnx(trt, network, logger, onnx_path, model_bytes)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options["workspace_mib"] << 20)
    builder_flags = precision_flags(trt.__version__, options["precision"])
    for name in builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if options["allow_tf32"]:
        config.set_flag(trt.BuilderFlag.TF32)
        builder_flags = builder_flags + ["TF32"]
    else:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default
    sources, level = _configure_tactics(trt, config, options["tactic_sources"], options["builder_optimization_level"])
    profile = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in shapes.items():
        profile.set_shape(name, smallest, optimal, largest)
    config.add_optimization_profile(profile)
    cache = _load_timing_cache(config, timing_cache, recorder)

    monitor = progress_monitor(trt, what)
    mark = len(recorder.errors)
    started = time.perf_counter()
    if monitor is not None:
        config.progress_monitor = monitor  # TensorRT 10+: its phases and steps, with time left
        plan = builder.build_serialized_network(network, config)
    else:
        with Heartbeat(what):  # TensorRT 8.x reports no progress: how long it has run, every 30 s
            plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    errors = recorder.since(mark)
    if plan is not None:
        plan = bytes(plan)
        _save_timing_cache(config, timing_cache, cache)
    del parser  # the parser owns the weights; it had to live until the build was done
    return {
        "plan": plan,
        "errors": errors,
        "seconds": seconds,
        "flags": {
            "api": generation,
            "network_creation_flags": flags,
            "strongly_typed": generation >= 10,
            "builder_flags": builder_flags,
            "tactic_sources": sources,
            "builder_optimization_level": level,
        },
        "timing_cache": cache,
    }


def build_engine(
    onnx_path,
    engine_path,
    sidecar,
    batch_size,
    precision,
    workspace_mib,
    allow_tf32,
    timing_cache,
    tactic_sources=None,
    builder_optimization_level=None,
    model=None,
):
    """Build an engine for one batch size; write it and its sidecar atomically.

    The network is strongly typed from TensorRT 10 on; on 8.x/9.x the cell's precision is
    set by builder flags (``precision_flags``). TF32 is cleared unless ``allow_tf32``.
    A build that returns no engine is a UserError naming ``model`` (default: by the
    workflow's layout), the precision, the batch size and TensorRT's own error message.
    Returns the sidecar dict, whose ``build_seconds`` is the time TensorRT took.
    """
    trt = import_tensorrt()
    options = build_options(
        precision, batch_size, workspace_mib, allow_tf32, tactic_sources, builder_optimization_level
    )
    generation = api_generation(trt.__version__)
    onnx_path = onnx_for_generation(onnx_path, precision, generation)
    shapes = profile_shapes(onnx_path, batch_size)
    onnx_sha256 = sha256_file(onnx_path)
    environment = current_environment(trt.__version__)
    model_bytes, rewritten = onnx_for_parser(onnx_path, generation)
    built = build_serialized(
        trt, model_bytes, onnx_path, shapes, options, timing_cache, what=f"build {precision} engine, batch {batch_size}"
    )
    if built["plan"] is None:
        raise build_failure(
            model or model_of_engine(engine_path),
            precision,
            batch_size,
            onnx_path,
            trt.__version__,
            built["errors"],
            built["seconds"],
        )
    plan = built["plan"]
    record = {
        "format": SIDECAR_FORMAT,
        "engine": os.path.abspath(engine_path),
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "onnx": os.path.abspath(onnx_path),
        "onnx_sha256": onnx_sha256,
        "onnx_rewrite": rewritten,
        "environment": environment,
        "gpu_slot": slots.held_slot(),  # which GPU of the machine built it (None: not a slot's)
        "build": options,
        "flags": built["flags"],
        "profile": {name: [list(s) for s in triple] for name, triple in shapes.items()},
        "timing_cache": os.path.abspath(timing_cache),
        "timing_cache_use": built["timing_cache"],
        "build_seconds": round(built["seconds"], 3),
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(engine_path, plan)
    atomic_write(sidecar, (json.dumps(record, indent=2) + "\n").encode())
    return record
