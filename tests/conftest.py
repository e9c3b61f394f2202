"""Put the workflow's library (workflow/scripts) on the path; shared test locations."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
ONEFLOW_PYTHON = Path(
    os.environ.get("INFBENCH_ONEFLOW_PYTHON", REPO / ".venv-oneflow/bin/python")
)

sys.path.insert(0, str(REPO / "workflow" / "scripts"))


def make_weights(arch, path):
    """Seeded random weights, with BatchNorm statistics moved off their identity defaults.

    A freshly initialised BatchNorm (mean 0, var 1, weight 1, bias 0) is almost the identity,
    so folding it wrongly into the convolutions would go unnoticed.
    """
    import torch
    from safetensors.torch import save_file

    from infbench.models import build_torch

    model = build_torch(arch, seed=0)
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=gen)
            module.bias.data = 0.1 * torch.randn(n, generator=gen)
            module.running_mean = 0.1 * torch.randn(n, generator=gen)
            module.running_var = 0.5 + torch.rand(n, generator=gen)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
