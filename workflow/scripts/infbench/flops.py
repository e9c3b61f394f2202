"""Multiply-accumulates per image of a model: what "% of peak" divides by.

Counted on torchvision's model on PyTorch's meta device (shapes only, no arithmetic), with
a forward hook on every Conv2d and Linear: a convolution costs (output elements) x (input
channels / groups) x (kernel height x width) MACs, a linear layer (inputs x outputs). The
rest (activations, pooling, additions, normalisation) is left out, as in the published
figures this is checked against (torchvision's model table: resnet50 4.09 GMACs at 224 px).

The workflow counts them once per model, in the weight conversion step (which builds the
model anyway), into a small JSON record that the tables step reads: making the tables
imports no PyTorch.
"""

import json

from infbench import files


def macs_per_image(arch, crop):
    """MACs of one forward pass of ``arch`` on one ``crop`` x ``crop`` image."""
    import torch

    from infbench.models import build_torch

    with torch.device("meta"):  # built there: no weights to initialise (vgg16's took seconds)
        model = build_torch(arch).eval()
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, crop, crop, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return int(total)


def write_macs(arch, crop, out):
    """Count ``arch``'s MACs per image at ``crop`` and record them in ``out`` (JSON)."""
    record = {"arch": arch, "crop": int(crop), "macs_per_image": macs_per_image(arch, crop)}
    files.atomic_write(out, json.dumps(record, sort_keys=True) + "\n")
    return record


def read_macs(paths, models):
    """{model: MACs per image} for the ``models`` (name -> config block with ``arch`` and
    ``crop``) that one of the records in ``paths`` was counted for; a record of another
    arch or crop matches no model. Returns ``(macs, problems)``: an unreadable record is a
    sentence in ``problems``, not an error, so that it costs its model's MACs only."""
    counted, problems = {}, []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            counted[(record["arch"], int(record["crop"]))] = int(record["macs_per_image"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(
                f"{path} cannot be read ({err.__class__.__name__}), so the tables leave out its"
                " model's MACs per image: delete it so that the workflow counts them again"
            )
    macs = {}
    for name, model in models.items():
        key = (model.get("arch"), model.get("crop"))
        if key in counted:
            macs[name] = counted[key]
    return macs, problems
