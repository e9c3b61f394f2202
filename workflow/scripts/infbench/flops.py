"""Multiply-accumulates per image of a model: what "% of peak" divides by.

Counted on torchvision's model on PyTorch's meta device (shapes only, no arithmetic), with
a forward hook on every Conv2d and Linear: a convolution costs (output elements) x (input
channels / groups) x (kernel height x width) MACs, a linear layer (inputs x outputs). The
rest (activations, pooling, additions, normalisation) is left out, as in the published
figures this is checked against (torchvision's model table: resnet50 4.09 GMACs at 224 px).
"""


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
