"""The runtime registry: capabilities by name, modules loaded only when used.

The capability table is read by the Snakefile to validate the config, so this module must
stay importable without torch, onnxruntime, oneflow or tensorrt.
"""

import importlib

# runtime -> device -> precisions it can run there
CAPABILITIES = {
    "oneflow": {"cpu": ("fp32",), "cuda": ("fp32", "fp16")},
    "tensorrt": {"cuda": ("fp32", "fp16", "int8")},
    "onnxruntime": {"cpu": ("fp32", "int8"), "cuda": ("fp32", "fp16", "int8")},
    "torch": {"cpu": ("fp32",), "cuda": ("fp32", "fp16")},
}

# what each runtime loads: framework-neutral weights, an ONNX file, or a TensorRT engine
ARTIFACT = {
    "oneflow": "weights",
    "tensorrt": "engine",
    "onnxruntime": "onnx",
    "torch": "weights",
}

# how the tables name each runtime (the seed report's spelling where it has one)
LABELS = {
    "oneflow": "OneFlow",
    "tensorrt": "TensorRT",
    "onnxruntime": "ONNX Runtime",
    "torch": "PyTorch",
}


def int8_form(runtime, device):
    """The Q/DQ form of the int8 ONNX that this consumer runs fastest.

    TensorRT's explicit quantisation is symmetric (S8S8); ONNX Runtime on x86 CPUs runs
    asymmetric uint8 activations with int8 weights (U8S8) about 3x faster than S8S8.
    """
    return "u8s8" if (runtime, device) == ("onnxruntime", "cpu") else "s8s8"


def load(name):
    """The runtime module ``infbench.runtimes.<name>``; it defines ``open_session``."""
    if name not in CAPABILITIES:
        raise KeyError(name)
    return importlib.import_module(f"infbench.runtimes.{name}")
