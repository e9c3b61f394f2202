"""The runtime registry: one entry per runtime, modules loaded only when used.

The capability table is read by the Snakefile to validate the config, so this module must
stay importable without torch, onnxruntime, oneflow or tensorrt.
"""

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Runtime:
    """Everything the workflow knows about one runtime; its module holds the session."""

    label: str  # how the tables name it (the seed report's spelling where it has one)
    devices: dict  # device -> the precisions it runs there
    artifact: str  # what it loads: "weights" (framework-neutral), "onnx" or "engine"
    stack: str = "main"  # its software stack: envs/<stack>.yaml, or the main environment
    venv: str = None  # the interpreter the Makefile builds for its stack (None: the main one)
    make_target: str = None  # the make target that builds that interpreter
    int8_forms: dict = field(default_factory=dict)  # device -> the Q/DQ form of its int8 ONNX


# The registry, in the tables' column order. Adding a runtime: an entry here, a module
# runtimes/<name>.py with open_session, and its name in the config schema (a test checks).
REGISTRY = {
    "oneflow": Runtime("OneFlow", {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, "weights",
                       stack="oneflow", venv=".venv-oneflow/bin/python", make_target="make env-oneflow"),
    "tensorrt": Runtime("TensorRT", {"cuda": ("fp32", "fp16", "int8")}, "engine",
                        stack="tensorrt", venv=".venv-tensorrt/bin/python", make_target="make env-tensorrt",
                        int8_forms={"cuda": "s8s8"}),
    # ONNX Runtime on x86 CPUs runs U8S8 (uint8 activations) about 3x faster than S8S8
    "onnxruntime": Runtime("ONNX Runtime", {"cpu": ("fp32", "int8"), "cuda": ("fp32", "fp16", "int8")}, "onnx",
                           int8_forms={"cpu": "u8s8", "cuda": "s8s8"}),
    "torch": Runtime("PyTorch", {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, "weights"),
}  # fmt: skip

# views of the registry, by the names the rest of the code reads
CAPABILITIES = {name: rt.devices for name, rt in REGISTRY.items()}
ARTIFACT = {name: rt.artifact for name, rt in REGISTRY.items()}
LABELS = {name: rt.label for name, rt in REGISTRY.items()}
ORDER = tuple(REGISTRY)
STACK = {name: rt.stack for name, rt in REGISTRY.items()}
VENV = {name: rt.venv for name, rt in REGISTRY.items() if rt.venv}
MAKE_ENV = {name: rt.make_target for name, rt in REGISTRY.items() if rt.make_target}


def int8_form(runtime, device):
    """The Q/DQ form of the int8 ONNX that this consumer runs fastest (its registry entry).

    TensorRT's explicit quantisation is symmetric (S8S8); ONNX Runtime on x86 CPUs runs
    asymmetric uint8 activations with int8 weights (U8S8) about 3x faster than S8S8.
    """
    return REGISTRY[runtime].int8_forms.get(device, "s8s8") if runtime in REGISTRY else "s8s8"


def load(name):
    """The runtime module ``infbench.runtimes.<name>``; it defines ``open_session``."""
    if name not in CAPABILITIES:
        raise KeyError(name)
    return importlib.import_module(f"infbench.runtimes.{name}")
