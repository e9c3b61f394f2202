"""The three generations of TensorRT's Python API that engine builds speak, chosen by the
installed version (``api_generation``), and what each needs of a build.

- 8 (TensorRT 8.5 to 9.x): weakly typed networks created with the EXPLICIT_BATCH flag (the
  ONNX parser needs explicit-batch networks); a cell's precision is set by builder flags:
  FP16 for the fp16 ONNX, INT8 with FP16 for the Q/DQ ONNX (so that layers outside the Q/DQ
  pairs may run in half precision, as NVIDIA's int8 recipe does). Name-based I/O and
  execute_async_v3, which the session uses, arrived in 8.5.
  https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-861/api/python_api/infer/Core/BuilderConfig.html
  https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-861/developer-guide/index.html#work-with-qat-networks
- 10 (TensorRT 10.x): strongly typed networks on request (the STRONGLY_TYPED flag); the ONNX
  alone says each tensor's type, so no precision flag is set.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
- 11 (TensorRT 11.x and later): every network strongly typed; STRONGLY_TYPED is "retained
  for API compatibility but is ignored", and BuilderFlag.FP16/INT8 (with the other type
  flags and the int8 calibrator) are removed. BuilderFlag.TF32 is not: strict fp32 still
  clears it.
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html

Only generation 8 has executed (TensorRT 8.6.0 on an NVIDIA H200); 10 and 11 follow the
pages above and are tested without TensorRT for the choices they make. Everything here but
``import_tensorrt`` is pure: no TensorRT, no GPU. More facts and sources:
docs/tensorrt-api-notes.md.
"""

import sys

from infbench.errors import UserError

# the builder flags that set a cell's precision where networks are weakly typed (8.x, 9.x)
PRECISION_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}


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
