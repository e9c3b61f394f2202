"""Architectures on the PyTorch side: build, load, check a checkpoint.

An arch is any classification model torchvision builds by name (``torchvision_archs``:
``resnet18``, ``efficientnet_b0``, ``vit_b_16``, ...), built by
``torchvision.models.get_model`` as torchvision builds it for its published weights: with
its defaults, except where its builder changes flags when it loads them (``ARCHS``).
inception_v3 and googlenet are built with ``transform_input=True`` (they re-normalise
inside the model) and ``aux_logits=True`` (the aux heads exist in the checkpoint and are
unused in eval). Every runtime must use the same flags or the logits differ
(tests/test_archs.py compares each with torchvision's builder given weights).
"""

from infbench.errors import UserError

# the seed architectures, and the builder flags an arch's published weights need (the
# others: torchvision's defaults)
ARCHS = {
    "alexnet": {},
    "vgg16": {},
    "resnet50": {},
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
    # as inception_v3: its published weights re-normalise inside and hold the aux heads
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
}


# the command that lists every name an arch may take (said by the sentence of an unknown one)
LIST_ARCHS = "python -c 'import torchvision; print(torchvision.models.list_models(module=torchvision.models))'"


def torchvision_archs():
    """Every classification architecture torchvision builds by name (not its detection,
    segmentation, video or quantized models)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def check_arch(arch, key="the model's arch"):
    """Raise the one sentence for an ``arch`` torchvision has no classification model of;
    ``key`` is the config key that names it."""
    if arch in ARCHS or arch in torchvision_archs():
        return
    raise UserError(
        f"config key {key} is {arch!r}, which is not a torchvision classification architecture;"
        f" use one of the names `{LIST_ARCHS}` prints (resnet18, efficientnet_b0, vit_b_16, ...)"
    )


def build_torch(arch, seed=None):
    """A torchvision model with freshly initialised weights (seeded when ``seed`` is given)."""
    import torch
    import torchvision

    check_arch(arch)
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = dict(ARCHS.get(arch, {}))
    if arch in ("inception_v3", "googlenet") and seed is not None:
        kwargs["init_weights"] = True
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def skeleton(arch):
    """``arch`` with parameters on PyTorch's meta device: names and shapes, no arithmetic.

    Built there directly (no weights to initialise: vgg16's took seconds), except where the
    builder computes with tensors (regnet's widths), which the meta device cannot give back:
    those are built on the CPU and moved."""
    import torch

    try:
        with torch.device("meta"):
            return build_torch(arch)
    except NotImplementedError:
        return build_torch(arch).to("meta")


# the input size each seed architecture is built for (inception_v3: 299; the others: 224)
INPUT_SIZE = {"alexnet": 224, "vgg16": 224, "resnet50": 224, "inception_v3": 299}


def published_transform(arch, url=None):
    """``{resize, crop, interpolation}`` of torchvision's preset for ``arch``'s published
    weights: those at ``url`` where it is one of them (resnet50's V1 and V2 weights differ),
    else the arch's DEFAULT weights'. An arch without published weights: 256, 224, bilinear
    (the preset's defaults)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch)
    except ValueError:
        return {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    chosen = next((w for w in weights if w.url == url), weights.DEFAULT)
    preset = chosen.transforms()
    return {
        "resize": int(preset.resize_size[0]),
        "crop": int(preset.crop_size[0]),
        "interpolation": preset.interpolation.value,
    }


def input_size(arch):
    """The side of the square input ``arch`` is built for: the seed archs' INPUT_SIZE, else
    the crop of its published weights."""
    return INPUT_SIZE.get(arch) or published_transform(arch)["crop"]


def crop_problem(arch, crop):
    """Why ``arch`` cannot take a ``crop`` x ``crop`` input (what torchvision's model says
    when run on it, shapes only), or None when it can."""
    import torch

    model = skeleton(arch).eval()
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, crop, crop, device="meta"))
    except Exception as err:  # the model's own check (vit: "Wrong image height!") or a vanished feature map
        return str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
    return None


class _Enough(Exception):
    """Stops a forward pass once the layer being measured has produced its output."""


def calibrate_random(model, arch, seed, images=4):
    """Give freshly initialised weights the activation scale of trained ones, in place.

    Untrained BatchNorm layers hold mean 0 and variance 1, so in eval mode activations grow
    layer after layer (inception_v3's logits reach about 1e11, beyond fp16's 65,504, so its
    fp16 cells are NaN); networks without BatchNorm shrink instead (alexnet's logits about
    0.01). So: with BatchNorm, its statistics are re-estimated on ``images`` seeded
    standard-normal inputs (what normalised images look like to the first layer); without
    it (alexnet, vgg16, and the LayerNorm families: vit, convnext, swin), each Conv2d and
    Linear layer in turn is scaled so that its output has unit standard deviation on those
    inputs (a data-driven unit-variance initialisation). The inputs are noise rather than
    the data set so that a model's weights depend on its seed only.
    Returns the model in eval mode.
    """
    import torch

    size = input_size(arch)
    x = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(int(seed)))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if norms:
            _estimate_batchnorm(model, norms, x)
        else:
            _unit_variance(model, x, seed)
    return model.eval()


def _estimate_batchnorm(model, norms, x):
    """BatchNorm's running statistics: those of one training-mode pass over ``x``, with
    dropout and stochastic depth (efficientnet's, convnext's) off, so that every residual
    branch is seen as eval mode runs it."""
    import torch

    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: the statistics of these inputs
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) or type(module).__name__ == "StochasticDepth":
            module.eval()
    model(x)
    for bn in norms:
        bn.momentum = 0.1  # torch's default, as torchvision builds them


def _unit_variance(model, x, seed):
    """Scale each Conv2d and Linear layer, in forward order, to unit output deviation on ``x``.

    A layer torchvision initialises to zero (vit's classifier head) is first given seeded
    normal weights of deviation 1/sqrt(fan-in): scaled, zero stays zero. A layer whose
    module the forward pass never calls (nn.MultiheadAttention's projections, which it
    reads as tensors) keeps torchvision's initialisation, already of unit scale."""
    import torch

    model.eval()
    generator = torch.Generator().manual_seed(int(seed))
    for layer in [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]:
        if not layer.weight.any():
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / fan_in**0.5)
        seen = {}

        def measure(module, inputs, output, seen=seen):
            seen["std"] = float(output.std())
            raise _Enough

        handle = layer.register_forward_hook(measure)
        try:
            model(x)
        except _Enough:
            pass
        finally:
            handle.remove()
        if "std" in seen:
            layer.weight.div_(seen["std"])
            if layer.bias is not None:
                layer.bias.div_(seen["std"])


def fold_input_transform(model):
    """inception_v3's ``transform_input`` folded into its first convolution, in place.

    torchvision's inception_v3 re-normalises each input channel c as ``x_c * s_c + t_c``
    before ``Conv2d_1a_3x3`` (as Gather, Unsqueeze, Mul, Add and Concat nodes in an ONNX
    export: TensorRT 8.6 fails to build that graph in int8, docs/results/h200.md). That
    convolution has no padding, so every output sees a whole 3x3 window and the affine map
    folds in exactly (up to float rounding): weights ``W[o, c] * s_c`` and a bias
    ``sum over c, kh, kw of W[o, c, kh, kw] * t_c``. ``s`` and ``t`` are read from the
    model's own ``_transform_input``, so they are torchvision's whatever they are. A model
    without the transform is returned as it is.
    """
    import torch

    if not getattr(model, "transform_input", False) or not hasattr(model, "Conv2d_1a_3x3"):
        return model  # (googlenet's first convolution is padded: its transform stays as it is)
    conv = model.Conv2d_1a_3x3.conv
    if any(conv.padding) or conv.groups != 1:
        raise ValueError(f"{conv}: only an unpadded, ungrouped convolution takes the input transform exactly")
    with torch.no_grad():
        probe = torch.stack([torch.zeros(3), torch.ones(3)]).reshape(2, 3, 1, 1)
        mapped = model._transform_input(probe).double().reshape(2, 3)
        shift, scale = mapped[0], mapped[1] - mapped[0]
        weight = conv.weight.double()
        bias = (weight * shift.reshape(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        if conv.bias is not None:
            bias += conv.bias.double()
        conv.weight.copy_((weight * scale.reshape(1, 3, 1, 1)).to(conv.weight.dtype))
        conv.bias = torch.nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    model.transform_input = False
    return model


def load_torch(arch, weights_path):
    """The model in eval mode with the framework-neutral weights loaded, strictly."""
    from safetensors.torch import load_file

    model = skeleton(arch)  # no initialisation of weights about to be replaced (vgg16: 2 s)
    model.load_state_dict(_versioned(load_file(weights_path), model), strict=True, assign=True)
    if any(t.is_meta for t in model.buffers()):  # a buffer outside the state dict: built anew
        model = build_torch(arch)
        model.load_state_dict(_versioned(load_file(weights_path), model), strict=True)
    return model.eval()


def _versioned(tensors, model):
    """``tensors`` with ``model``'s own state-dict metadata: the module versions that some
    of torchvision's models read when loading (mnasnet refuses weights without one), which
    a safetensors file does not keep. The names and shapes were checked against this
    version of the model (``checkpoint_state_dict``)."""
    from collections import OrderedDict

    state = OrderedDict(tensors)
    state._metadata = model.state_dict()._metadata
    return state


# Parameter names of older torchvision versions that its published files still hold, and
# the names its models load them under (torchvision renames them as it loads: densenet's
# builder, vit's MLPBlock._load_from_state_dict): _DenseLayer's "norm.1" is now "norm1"
# (likewise relu, conv and 2), vit's MLP "linear_1"/"linear_2" are now "0"/"3".
LEGACY_NAMES = [
    (r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$", r"\1\2"),
    (r"^(.*\.mlp\.)linear_1\.(weight|bias)$", r"\g<1>0.\2"),
    (r"^(.*\.mlp\.)linear_2\.(weight|bias)$", r"\g<1>3.\2"),
]


def current_names(state):
    """``state`` with the parameter names of LEGACY_NAMES renamed as torchvision does."""
    import re

    renamed = {}
    for name, tensor in state.items():
        for pattern, replacement in LEGACY_NAMES:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed


def checkpoint_state_dict(arch, checkpoint_path):
    """Read a .pth checkpoint and check it fits ``arch``; return its tensors (float32).

    Accepts a plain state dict or a dict holding one under ``state_dict``/``model``.
    """
    import torch

    try:
        obj = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise UserError(
            f"{checkpoint_path} is not a readable PyTorch checkpoint ({err.__class__.__name__});"
            " delete it so that it is fetched again, or fix the model's checkpoint entry"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    obj = current_names(obj)
    expected = skeleton(arch).state_dict()  # names and shapes only
    for name in set(expected) - set(obj):  # a file older than the counter: BatchNorm loads 0
        if name.endswith(".num_batches_tracked") and name.replace("num_batches_tracked", "running_mean") in obj:
            obj[name] = torch.tensor(0, dtype=torch.long)
    missing = sorted(set(expected) - set(obj))
    unexpected = sorted(set(obj) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{checkpoint_path} does not hold {arch} weights ({len(missing)} missing keys"
            f" such as {missing[:1]}, {len(unexpected)} unexpected such as {unexpected[:1]});"
            f" point the model's checkpoint at {arch} weights or change its arch"
        )
    for name, tensor in obj.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{checkpoint_path}: tensor {name} has shape {tuple(tensor.shape)}, {arch}"
                f" needs {tuple(expected[name].shape)}; fix the model's arch or checkpoint"
            )
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in obj.items()}
