"""Normalisation: the constants are torchvision's, and every runtime stages what
torchvision's ImageClassification preset produces from the same pixels (no ../shared)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import make_weights
from infbench import MEAN, STD, runtimes
from infbench.runtimes.base import SessionSpec, normalise_nchw

CROP = 64


def pixels(n=3, seed=0):
    """uint8 NHWC RGB batches with distinct channels (a swap of R and B would show)."""
    x = np.random.default_rng(seed).integers(0, 256, (n, CROP, CROP, 3), dtype=np.uint8)
    x[..., 0] //= 2  # red darker than blue on average
    return x


def torchvision_preset(images):
    """torchvision's ImageClassification on images already at the crop size (resize and crop are identities)."""
    from torchvision.transforms._presets import ImageClassification

    preset = ImageClassification(crop_size=CROP, resize_size=CROP)
    return np.stack([preset(torch.from_numpy(img).permute(2, 0, 1)).numpy() for img in images])


def test_constants_are_torchvisions_imagenet_ones():
    from torchvision.models import ResNet50_Weights

    transforms = ResNet50_Weights.IMAGENET1K_V1.transforms()
    assert tuple(transforms.mean) == MEAN
    assert tuple(transforms.std) == STD


def test_normalise_nchw_equals_the_torchvision_preset():
    images = pixels()
    got = normalise_nchw(images)
    assert got.shape == (3, 3, CROP, CROP) and got.dtype == np.float32
    np.testing.assert_allclose(got, torchvision_preset(images), rtol=0, atol=2e-6)
    assert normalise_nchw(images, np.float16).dtype == np.float16


def spec(runtime, artifact):
    return SessionSpec(runtime, "resnet50", "resnet50", "fp32", 3, "cpu", str(artifact), CROP, {"threads": 1})


def identity_onnx(path):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, CROP, CROP])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, CROP, CROP])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_each_runtime_stages_what_torchvision_feeds_the_model(runtime, tmp_path):
    if runtime == "torch":
        artifact = tmp_path / "w.safetensors"
        make_weights("resnet50", artifact)
    else:
        artifact = identity_onnx(tmp_path / "identity.onnx")
    session = runtimes.load(runtime).open_session(spec(runtime, artifact))
    try:
        images = pixels(seed=1)
        staged = session.stage(images)
        x = staged.x.numpy() if runtime == "torch" else staged["input"]
        np.testing.assert_allclose(x, torchvision_preset(images), rtol=0, atol=2e-6)
    finally:
        session.close()
