"""A model the user brings as an ONNX file (``checkpoint: {onnx: path, sha256: ...}``).

``input_spec`` reads what the workflow needs from the file itself: the input's name, its
layout (NCHW, or NHWC with the 3 channels last), its square size (the model's crop) and its
batch dimension (dynamic, or a fixed number that every batch size must then equal).
``import_onnx`` checks the file's sha256 and writes it as the workflow's fp32 ONNX, in the
form every later step takes (the one ``precision.export_fp32`` writes for a framework
model): one float32 NCHW input named ``input``; an NHWC file gets a Transpose in front. The
file takes the normalised image, as torchvision's models do (``runtimes.base.normalise_nchw``).
"""

import hashlib
import os

from infbench import files
from infbench.errors import UserError

# the name every ONNX consumer feeds (precision's calibration reader, as export_fp32 names it)
INPUT_NAME = "input"


def _load(path, key, weights=False):
    import onnx

    if not os.path.isfile(path):
        raise UserError(f"config key {key}: {path} does not exist; give the path of your ONNX file")
    try:
        return onnx.load(str(path), load_external_data=weights)
    except Exception as err:  # not protobuf, truncated
        raise UserError(f"config key {key}: {path} is not a readable ONNX file ({err.__class__.__name__})") from None


def graph_inputs(model):
    """The graph's real inputs (not initializers listed as inputs, as older exporters did)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def input_spec(path, key="the model's checkpoint.onnx"):
    """``{name, layout, size, batch}`` of the file's input: layout ``NCHW`` or ``NHWC``,
    size the side of its square image, batch the fixed batch or None (dynamic). Anything
    else (several inputs, not float32 rank 4, no 3-channel axis, a non-square or dynamic
    image size) is one sentence naming ``key``."""
    from onnx import TensorProto

    model = _load(path, key)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserError(
            f"config key {key}: {path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)});"
            " infbench feeds one image batch, so export the model with a single input"
        )
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    if tensor.elem_type != TensorProto.FLOAT or len(dims) != 4:
        raise UserError(
            f"config key {key}: {path}'s input {inputs[0].name!r} is not a float32 image batch of rank 4"
            f" ({TensorProto.DataType.Name(tensor.elem_type)}, rank {len(dims)}); export it with a"
            " float32 [batch, 3, height, width] or [batch, height, width, 3] input"
        )
    if dims[1] == 3:
        layout, height, width = "NCHW", dims[2], dims[3]
    elif dims[3] == 3:
        layout, height, width = "NHWC", dims[1], dims[2]
    else:
        raise UserError(
            f"config key {key}: {path}'s input {inputs[0].name!r} has shape {dims} with no axis of 3"
            " channels at position 1 or 3; export it with an RGB NCHW or NHWC input"
        )
    if height is None or width is None or height != width:
        raise UserError(
            f"config key {key}: {path}'s input {inputs[0].name!r} is {height} x {width} pixels; infbench"
            " feeds square centre crops of a fixed size, so export it with a fixed square image size"
        )
    return {"name": inputs[0].name, "layout": layout, "size": height, "batch": dims[0]}


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_onnx(path, sha256, out, key="the model's checkpoint"):
    """Check ``path`` against ``sha256`` and write it to ``out`` in the workflow's form (see
    the module docstring): its input renamed ``input``, NCHW, float32; nothing else changed."""
    import onnx
    from onnx import helper

    spec = input_spec(path, f"{key}.onnx")
    actual = sha256_of(path)
    if actual != sha256.lower():
        raise UserError(
            f"config key {key}.sha256: {path} has sha256 {actual}, not {sha256}; put the file's"
            " digest in the config, or the file it names back in place"
        )
    model = _load(path, f"{key}.onnx", weights=True)
    graph = model.graph
    source = INPUT_NAME if spec["layout"] == "NCHW" else f"{INPUT_NAME}_nhwc"
    for node in graph.node:
        node.input[:] = [source if name == spec["name"] else name for name in node.input]
    for output in graph.output:
        if output.name == spec["name"]:
            raise UserError(f"config key {key}.onnx: {path}'s input is also an output; export the model alone")
    original = next(i for i in graph.input if i.name == spec["name"])
    batch = spec["batch"] if spec["batch"] is not None else "batch"
    size = spec["size"]
    graph.input.remove(original)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, [batch, 3, size, size]))
    if spec["layout"] == "NHWC":  # NCHW in, the file's NHWC behind it
        transpose = helper.make_node("Transpose", [INPUT_NAME], [source], perm=[0, 2, 3, 1], name="nchw_to_nhwc")
        graph.node.insert(0, transpose)
    onnx.checker.check_model(model)
    with files.atomic_output(out) as tmp:
        onnx.save(model, tmp)
    return spec
