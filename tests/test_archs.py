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


def test_cells_a_runtime_cannot_run_show_why_in_every_table(tmp_path):
    """OneFlow cells of an arch flowvision lacks, and PyTorch/OneFlow cells of an ONNX-file
    model, show the marker (not `not run`), explained once under each table."""
    from infbench.runtimes import FLOWVISION_ARCHS, unavailable
    from infbench.tables import write_tables

    assert {"resnet18", "mobilenet_v3_small", "efficientnet_b0"} <= FLOWVISION_ARCHS
    assert not {"vit_b_32", "convnext_tiny", "regnet_y_400mf"} & FLOWVISION_ARCHS
    config = {
        "dataset": {"kind": "synthetic", "images": 4},
        "models": {
            "r18": {"arch": "resnet18", "resize": 72, "crop": 64, "checkpoint": {"random": 0}},
            "vit": {"arch": "vit_b_32", "resize": 256, "crop": 224, "checkpoint": {"random": 0}},
            "mine": {"resize": 72, "crop": 64, "checkpoint": {"onnx": "mine.onnx", "sha256": "0" * 64}},
        },
        "runtimes": {
            "oneflow": {"device": "cpu", "precisions": ["fp32"]},
            "onnxruntime": {"device": "cpu", "precisions": ["fp32"]},
        },
        "batch_sizes": [2],
        "latency": {"batch_sizes": [1]},
        "accuracy": {"reference": "onnxruntime/fp32"},
    }
    assert unavailable("oneflow", config["models"]["vit"]) == "not available for this arch"
    assert unavailable("oneflow", config["models"]["mine"]) == "needs a framework model"
    assert unavailable("torch", config["models"]["mine"]) == "needs a framework model"
    assert unavailable("onnxruntime", config["models"]["mine"]) is None
    assert unavailable("oneflow", config["models"]["r18"]) is None
    write_tables(config, [], [], tmp_path)
    for name in ("speed-bs2.md", "energy-bs2.md", "latency-bs1.md", "precision.md"):
        text = (tmp_path / name).read_text()
        rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
        assert "| not available for this arch " in rows["vit"], name
        assert "| needs a framework model " in rows["mine"], name
        assert "not available for this arch" not in rows["r18"] and "| not run " in rows["r18"], name
        notes = [line for line in text.splitlines() if line.startswith("- `not available") or line.startswith("- `needs")]
        assert len(notes) == 2 and notes[0].endswith(": vit.") and notes[1].endswith(": mine."), name


@pytest.mark.parametrize(
    "arch, size",
    [("googlenet", 224), ("inception_v3", 299), ("resnet18", 64), ("efficientnet_b0", 64), ("mnasnet0_5", 64),
     ("mobilenet_v3_small", 64), ("convnext_tiny", 64), ("swin_t", 64), ("vit_b_32", 224)],
)  # fmt: skip
def test_an_arch_is_built_as_torchvision_builds_it_for_its_published_weights(arch, size, monkeypatch):
    """torchvision's own builder given the arch's DEFAULT weights (their file replaced by our
    seeded, calibrated state dict: nothing is downloaded) gives the logits our model gives:
    the same flags (googlenet's and inception_v3's transform_input) and the same layers."""
    import torch
    import torchvision
    from torchvision.models._api import WeightsEnum

    from infbench.models import build_torch, calibrate_random

    ours = calibrate_random(build_torch(arch, seed=0), arch, 0)
    state = ours.state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *args, **kwargs: state)
    theirs = torchvision.models.get_model(arch, weights="DEFAULT").eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert float(expected.std()) > 1e-3  # logits that depend on the image
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("arch", ["mnasnet0_5", "regnet_y_400mf", "swin_t", "vit_b_32"])
def test_random_weights_go_through_the_neutral_file_into_the_same_model(arch, tmp_path):
    """The chain of the workflow's steps for PyTorch: seeded checkpoint, safetensors, the
    model loaded back (mnasnet reads a version from the state dict's metadata, which a
    safetensors file does not keep; regnet is built off the meta device)."""
    import torch

    from infbench.checkpoints import random_checkpoint
    from infbench.models import build_torch, calibrate_random, load_torch
    from infbench.weights import convert_checkpoint

    checkpoint = random_checkpoint(arch, 3, tmp_path / f"{arch}.pth")
    convert_checkpoint(arch, checkpoint, tmp_path / f"{arch}.safetensors")
    loaded = load_torch(arch, tmp_path / f"{arch}.safetensors")
    expected = calibrate_random(build_torch(arch, seed=3), arch, 3)
    size = 224 if arch == "vit_b_32" else 64
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))


@pytest.mark.parametrize(
    "arch, legacy, current",
    [
        ("densenet121", "features.denseblock1.denselayer1.norm.1.weight", "features.denseblock1.denselayer1.norm1.weight"),
        ("densenet121", "features.denseblock4.denselayer16.conv.2.weight", "features.denseblock4.denselayer16.conv2.weight"),
        ("vit_b_32", "encoder.layers.encoder_layer_0.mlp.linear_1.bias", "encoder.layers.encoder_layer_0.mlp.0.bias"),
        ("vit_b_32", "encoder.layers.encoder_layer_11.mlp.linear_2.weight", "encoder.layers.encoder_layer_11.mlp.3.weight"),
    ],
)  # fmt: skip
def test_a_published_file_with_older_parameter_names_is_read_as_torchvision_reads_it(arch, legacy, current, tmp_path):
    """torchvision's densenet and vit files name some parameters as its older versions did;
    it renames them as it loads them, and so does the conversion step."""
    import torch

    from infbench.models import build_torch, checkpoint_state_dict

    state = build_torch(arch, seed=0).state_dict()
    renamed = {}
    for name, tensor in state.items():  # every parameter of the kind named as the old version did
        for new, old in [
            (".norm1.", ".norm.1."), (".norm2.", ".norm.2."), (".conv1.", ".conv.1."), (".conv2.", ".conv.2."),
            (".mlp.0.", ".mlp.linear_1."), (".mlp.3.", ".mlp.linear_2."),
        ]:  # fmt: skip
            if "denselayer" in name or ".mlp." in name:
                name = name.replace(new, old)
        if not name.endswith("num_batches_tracked"):  # files older than the counter lack it
            renamed[name] = tensor
    assert legacy in renamed and current not in renamed
    torch.save(renamed, tmp_path / "old.pth")
    read = checkpoint_state_dict(arch, tmp_path / "old.pth")
    assert sorted(read) == sorted(state) and torch.equal(read[current], state[current])
    assert all(int(read[k]) == 0 for k in read if k.endswith("num_batches_tracked"))
