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
    archs: frozenset = None  # the archs it builds (None: every torchvision arch)


# The torchvision archs flowvision 0.2.1 builds under the same name, with torchvision's
# parameter names and shapes and, from the same weights, torchvision's logits (to 1e-6;
# the larger members of a family, efficientnet_b5 to b7, vgg, resnet101/152, wide_resnet,
# resnext101_32x8d, compared by names and shapes). Not in it: convnext, vit, swin, maxvit,
# efficientnet_v2 and resnext101_64x4d (flowvision names them otherwise, with other
# parameter names), regnet (same names, logits 5 to 10 % apart), googlenet (flowvision's
# needs scipy, which the OneFlow environment lacks).
FLOWVISION_ARCHS = frozenset({
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
    "wide_resnet50_2", "wide_resnet101_2", "inception_v3", "densenet121", "densenet161", "densenet169",
    "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0",
    "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1",
})  # fmt: skip


# The registry, in the tables' column order. Adding a runtime: an entry here, a module
# runtimes/<name>.py with open_session, and its name in the config schema (a test checks).
REGISTRY = {
    "oneflow": Runtime("OneFlow", {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, "weights",
                       stack="oneflow", venv=".venv-oneflow/bin/python", make_target="make env-oneflow",
                       archs=FLOWVISION_ARCHS),
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


# what a cell that a runtime cannot run for its model shows, instead of a figure
NOT_FOR_ARCH = "not available for this arch"
NEEDS_FRAMEWORK_MODEL = "needs a framework model"


def unavailable(runtime, model):
    """Why ``runtime`` cannot run ``model`` (its config block), as the marker its cells show
    (NOT_FOR_ARCH, NEEDS_FRAMEWORK_MODEL), or None when it can. Such cells are not planned:
    the tables show the marker, explained in a footnote."""
    if runtime not in REGISTRY:
        return None
    if "onnx" in model.get("checkpoint", {}) and REGISTRY[runtime].artifact == "weights":
        return NEEDS_FRAMEWORK_MODEL
    archs = REGISTRY[runtime].archs
    if archs is not None and model.get("arch") not in archs:
        return NOT_FOR_ARCH
    return None


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
