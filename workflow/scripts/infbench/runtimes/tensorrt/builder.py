"""The build loop: parse an ONNX, configure the builder for the installed API generation,
build one serialized engine, and say how far it is and why it failed.

``build_serialized`` is shared by the workflow's engine builds (``build.build_engine``) and
the bisection of a failing build (benchmarks/tensorrt_bisect.py). Progress: TensorRT 10+
reports its build phases through ``trt.IProgressMonitor`` (``progress_monitor`` turns them
into steps done, rate and time left in the step's log); TensorRT 8.x reports none, so its
builds say every 30 s how long they have run (``infbench.progress.Heartbeat``). A failed
build is one sentence with TensorRT's first error message (``RecordingLogger``,
``build_failure``). The calls used (IBuilderConfig.set_memory_pool_limit, set_flag /
clear_flag, add_optimization_profile, build_serialized_network, OnnxParser.parse) and
their sources: docs/tensorrt-api-notes.md, "Engine builds".
"""

import os
import sys
import threading
import time

from infbench.errors import UserError
from infbench.progress import Heartbeat, Progress
from infbench.runtimes.tensorrt.generations import (
    api_generation,
    network_creation_flags,
    precision_flags,
    tactic_source_mask,
    tactic_source_names,
)
from infbench.runtimes.tensorrt.timing_cache import load_timing_cache, save_timing_cache


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


def build_serialized(trt, model_bytes, onnx_path, shapes, options, timing_cache=None, recorder=None, what="build"):
    """Parse ``model_bytes`` (the ONNX as TensorRT's parser reads it) and build one engine
    with ``options`` (``build_options``); TensorRT is the module ``trt``.

    Returns a dict: ``plan`` (the serialized engine's bytes, or None when TensorRT built
    none), ``errors`` (TensorRT's error messages during the build), ``seconds`` (the build
    alone), the flags in effect and how the timing cache went (``timing_cache.load_timing_cache``).
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
    cache = load_timing_cache(config, timing_cache, recorder)

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
        save_timing_cache(config, timing_cache, cache)
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
