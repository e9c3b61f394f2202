"""TensorRT engines: build one from a precision's ONNX, with its sidecar (``build_engine``,
the build_engine rule's step), and the one import path for everything about engines.

The parts, each a module of this package:

- ``generations``: which of TensorRT's three Python API generations the installed version
  speaks (8.5-9.x, 10.x, 11.x) and the network and builder flags each needs;
- ``onnx_forms``: the ONNX file each precision and generation is built from, the bytes its
  parser reads (opset 17 for TensorRT 8.x), the optimisation profile;
- ``builder``: the build loop, its progress in the step's log and its one-sentence failure;
- ``timing_cache``: the timing cache shared by all builds, under a file lock;
- ``sidecar``: the engine options and their defaults, the environment an engine depends
  on, and when an engine must be rebuilt.

Callers import ``build`` and use the names below; they are re-exported here. Everything but
``build_engine``, ``build_serialized``, ``current_environment`` and ``import_tensorrt`` works
without TensorRT and a GPU. The API facts and their sources: docs/tensorrt-api-notes.md;
which generations have executed: docs/gpu.md.
"""

import hashlib
import json
import os
from datetime import datetime, timezone

from infbench import slots
from infbench.runtimes.tensorrt.builder import (
    RecordingLogger,
    build_failure,
    build_serialized,
    progress_monitor,
)
from infbench.runtimes.tensorrt.generations import (
    PRECISION_FLAGS,
    api_generation,
    import_tensorrt,
    network_creation_flags,
    precision_flags,
    tactic_source_mask,
    tactic_source_names,
)
from infbench.runtimes.tensorrt.onnx_forms import (
    INT8_FP16_FORM,
    ONNX_FOR_PRECISION,
    PARSER_MAX_OPSET,
    default_opset,
    downgrade_to_opset17,
    io_names,
    onnx_for_engine,
    onnx_for_generation,
    onnx_for_parser,
    profile_shapes,
)
from infbench.runtimes.tensorrt.sidecar import (
    BUILD_FIELDS,
    DEFAULTS,
    ENVIRONMENT_FIELDS,
    SIDECAR_FORMAT,
    build_options,
    current_environment,
    engine_settings,
    environment_fingerprint,
    installed_tensorrt_packages,
    needs_rebuild,
    nvidia_driver_version,
    options_from_config,
    read_sidecar,
    settings_of_sidecar,
    sha256_file,
    sidecar_matches,
    sidecar_path,
    tensorrt_cuda_major,
)
from infbench.runtimes.tensorrt.timing_cache import (
    atomic_write,
    default_timing_cache,
    file_lock,
    read_locked,
    update_locked,
)

__all__ = [
    "BUILD_FIELDS",
    "DEFAULTS",
    "ENVIRONMENT_FIELDS",
    "INT8_FP16_FORM",
    "ONNX_FOR_PRECISION",
    "PARSER_MAX_OPSET",
    "PRECISION_FLAGS",
    "SIDECAR_FORMAT",
    "RecordingLogger",
    "api_generation",
    "atomic_write",
    "build_engine",
    "build_failure",
    "build_options",
    "build_serialized",
    "current_environment",
    "default_opset",
    "default_timing_cache",
    "downgrade_to_opset17",
    "engine_settings",
    "environment_fingerprint",
    "file_lock",
    "import_tensorrt",
    "installed_tensorrt_packages",
    "io_names",
    "model_of_engine",
    "needs_rebuild",
    "network_creation_flags",
    "nvidia_driver_version",
    "onnx_for_engine",
    "onnx_for_generation",
    "onnx_for_parser",
    "options_from_config",
    "precision_flags",
    "profile_shapes",
    "progress_monitor",
    "read_locked",
    "read_sidecar",
    "settings_of_sidecar",
    "sha256_file",
    "sidecar_matches",
    "sidecar_path",
    "tactic_source_mask",
    "tactic_source_names",
    "tensorrt_cuda_major",
    "update_locked",
]


def model_of_engine(engine_path):
    """The model an engine belongs to, by the workflow's layout: results/engines/{model}/..."""
    return os.path.basename(os.path.dirname(os.path.abspath(engine_path)))


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
