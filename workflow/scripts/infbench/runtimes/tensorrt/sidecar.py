"""What an engine is built with and on, and when it must be rebuilt.

An engine is tied to the TensorRT version and the model of GPU that built it. Each engine
``E.plan`` has a sidecar ``E.json`` recording what produced it (TensorRT, GPU model, compute
capability, driver, ONNX hash, build options, and the GPU slot it was built on where it took
one: ``infbench.slots``); an engine whose sidecar does not match the current environment is
rebuilt by the build_engine rule, never silently used (``needs_rebuild``; the session refuses
it: on a machine of several GPUs, one built for another GPU model). The engine options and
their defaults live here too: the rules read them (``engine_settings``) without TensorRT.
Only ``current_environment`` needs cuda-python and a GPU.
"""

import json
import os
import re

from infbench import files, gpu
from infbench.errors import UserError
from infbench.runtimes.tensorrt.onnx_forms import ONNX_FOR_PRECISION

SIDECAR_FORMAT = 1


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


sha256_file = files.sha256


def sidecar_path(engine_path):
    """The sidecar of ``E.plan`` is ``E.json``, beside it."""
    return os.path.splitext(engine_path)[0] + ".json"


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
