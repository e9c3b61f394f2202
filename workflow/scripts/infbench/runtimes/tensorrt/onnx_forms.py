"""The ONNX an engine is built from: which file per precision and API generation, the
bytes TensorRT's ONNX parser of that generation can read, and the optimisation profile.

Precision lives in the ONNX files the workflow makes (``infbench.precision``): fp32, fp16
and int8 as symmetric Q/DQ on the inputs of Conv, Gemm and MatMul (``int8-s8s8.onnx``).
Where networks are strongly typed (TensorRT 10/11) nothing outside the Q/DQ pairs may fall
back to fp16 by a builder flag, so int8 there is built from the same Q/DQ over an fp16
graph (``int8-s8s8-fp16.onnx``) where it exists. TensorRT 8.6's parser knows ONNX opsets up
to 17 (its release notes, "ONNX opset 17":
https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-861/release-notes/index.html),
so an opset-18 file is rewritten as opset 17 for it (``downgrade_to_opset17``).
No TensorRT and no GPU needed here: only the ``onnx`` package.
"""

import os

from infbench.errors import UserError

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
