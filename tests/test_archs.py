"""Any torchvision classification architecture: names, published transforms, random weights
that behave, MACs against torchvision's published figures."""

import pytest

from infbench.errors import UserError

# the new families the issue names: SiLU/SE (efficientnet), hard-swish/SE (mobilenet_v3),
# LayerNorm (vit, convnext), and a plain residual network
NEW_FAMILIES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "vit_b_32", "convnext_tiny"]


def test_an_unknown_arch_is_one_sentence_naming_the_key_and_how_to_list_the_names():
    from infbench.models import check_arch

    with pytest.raises(UserError) as err:
        check_arch("resnet51", key="models.mine.arch")
    text = str(err.value)
    assert "models.mine.arch" in text and "'resnet51'" in text
    assert "list_models(module=torchvision.models)" in text
    check_arch("efficientnet_b0")  # a torchvision name: no error
    check_arch("inception_v3")


@pytest.mark.parametrize(
    "arch, url, expected",
    [
        ("efficientnet_b0", None, {"resize": 256, "crop": 224, "interpolation": "bicubic"}),
        ("vit_b_16", None, {"resize": 256, "crop": 224, "interpolation": "bilinear"}),
        ("convnext_tiny", None, {"resize": 236, "crop": 224, "interpolation": "bilinear"}),
        # resnet50's DEFAULT (V2) weights resize to 232; the V1 file the seed config fetches, to 256
        ("resnet50", None, {"resize": 232, "crop": 224, "interpolation": "bilinear"}),
        (
            "resnet50",
            "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            {"resize": 256, "crop": 224, "interpolation": "bilinear"},
        ),
        ("inception_v3", None, {"resize": 342, "crop": 299, "interpolation": "bilinear"}),
    ],
)
def test_the_published_transform_is_that_of_the_weights_at_the_url(arch, url, expected):
    from infbench.models import published_transform

    assert published_transform(arch, url) == expected


def test_a_crop_the_arch_cannot_take_is_said_in_torchvisions_words():
    from infbench.models import crop_problem

    assert crop_problem("vit_b_32", 224) is None
    assert "Wrong image height" in crop_problem("vit_b_32", 192)
    assert crop_problem("efficientnet_b0", 64) is None
    assert crop_problem("regnet_y_400mf", 64) is None  # built on the CPU, then moved to meta


def _fp32_and_fp16_logits(model, size):
    import torch

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(123))  # not the calibration inputs
    with torch.no_grad():
        fp32 = model(x)
        fp16 = model.half()(x.half()).float()
    return fp32, fp16


@pytest.mark.parametrize("arch", NEW_FAMILIES)
def test_calibrated_random_weights_of_the_new_families_keep_fp16_finite_and_close(arch):
    """As for the seed archs (test_checkpoints): fp16 finite and pointing where fp32 does,
    and logits that are not one constant (torchvision initialises vit's head to zero) nor huge."""
    import torch

    from infbench.models import build_torch, calibrate_random, input_size

    model = calibrate_random(build_torch(arch, seed=0), arch, 0)
    fp32, fp16 = _fp32_and_fp16_logits(model, input_size(arch))
    assert torch.isfinite(fp16).all()
    assert torch.nn.functional.cosine_similarity(fp32, fp16).min() > 0.99
    assert 1e-3 < float(fp32.std(dim=1).min()) and float(fp32.abs().max()) < 1e3


@pytest.mark.parametrize(
    "arch, crop",
    [
        ("efficientnet_b0", 224),
        ("mobilenet_v3_small", 224),
        ("convnext_tiny", 224),
        ("vit_b_16", 224),  # attention's products are 0.6 of its 17.6 GMACs
        ("swin_t", 224),
        ("regnet_y_400mf", 224),
        ("efficientnet_v2_s", 384),
    ],
)
def test_macs_of_the_new_families_match_torchvisions_published_figures(arch, crop):
    """torchvision's weights give their GMACs as ``_ops`` (the field its docs call GFLOPS)."""
    import torchvision

    from infbench.flops import macs_per_image

    published = torchvision.models.get_model_weights(arch).DEFAULT.meta["_ops"]
    assert macs_per_image(arch, crop) / 1e9 == pytest.approx(published, abs=0.0015)
