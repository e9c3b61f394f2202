"""Framework-neutral weights: the torchvision state dict as float32 safetensors.

Reading needs only numpy and safetensors, so the OneFlow environment (no torch) can load
the same weights as every other runtime.
"""

import os

from safetensors.numpy import load_file

from infbench import files
from infbench.errors import UserError


def read_weights(path):
    """The tensors of a .safetensors file as numpy arrays, by torchvision parameter name."""
    if not os.path.exists(path):
        raise UserError(f"weights file {path} does not exist; run the workflow's convert step")
    try:
        return load_file(path)
    except Exception as err:
        raise UserError(
            f"{path} is not readable safetensors ({err.__class__.__name__}); delete it so"
            " that the workflow converts the checkpoint again"
        ) from None


def convert_checkpoint(arch, checkpoint, out):
    """Checkpoint (.pth) -> neutral weights, checked against ``arch``; written atomically."""
    from safetensors.torch import save_file

    from infbench.models import checkpoint_state_dict

    tensors = checkpoint_state_dict(arch, checkpoint)
    with files.atomic_output(out) as tmp:
        save_file(tensors, tmp, metadata={"arch": arch, "source": os.path.basename(checkpoint)})
