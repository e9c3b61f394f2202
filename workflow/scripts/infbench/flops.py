"""Multiply-accumulates per image of a model: what "% of peak" divides by.

Counted on torchvision's model on PyTorch's meta device (shapes only, no arithmetic) by
PyTorch's own ``FlopCounterMode``, which sees every matrix product the forward pass runs:
convolutions, linear layers and attention's products (queries x keys, weights x values,
wherever a model computes them); a FLOP there is half a MAC. The rest (activations,
pooling, additions, normalisation, softmax) is left out, as in the published figures this is
checked against: torchvision's weights' ``_ops`` (resnet50 4.089, efficientnet_b0 0.386,
vit_b_16 17.564 GMACs at 224 px; tests/test_archs.py).

The workflow counts them once per model, in the weight conversion step (which builds the
model anyway), into a small JSON record that the tables step reads: making the tables
imports no PyTorch.
"""

import json

from infbench import files


def macs_per_image(arch, crop):
    """MACs of one forward pass of ``arch`` on one ``crop`` x ``crop`` image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from infbench.models import skeleton

    model = skeleton(arch).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, 3, crop, crop, device="meta"))
    return int(counter.get_total_flops()) // 2


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
