"""Every rule of the config schema and of infbench.configcheck, one case each: the config
is refused with one sentence that names the key (checked without Snakemake)."""

import copy
from pathlib import Path

import pytest
import yaml

from infbench.configcheck import check
from infbench.errors import UserError

SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text()
)


def base():
    return {
        "dataset": {"kind": "synthetic", "images": 20, "seed": 0},
        "models": {
            "r50": {"arch": "resnet50", "resize": 256, "crop": 224, "checkpoint": {"random": 0}},
        },
        "runtimes": {
            "onnxruntime": {"device": "cpu", "precisions": ["fp32", "int8"]},
            "torch": {"device": "cuda", "precisions": ["fp32", "fp16"]},
        },
        "batch_sizes": [8, 50],
        "calibration": {"images": 10},
    }


def refused(change):
    config = base()
    change(config)
    with pytest.raises(UserError) as err:
        check(config, SCHEMA)
    return str(err.value)


def setter(path, value):
    """A change that sets config[path...] = value (None deletes the key)."""
    def change(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return change


SCHEMA_CASES = [
    # (path, value, words the sentence must hold)
    (("colour",), "red", "config key colour is not a known key"),
    (("dataset",), None, "config key (top level) is incomplete: 'dataset' is a required property"),
    (("models",), None, "'models' is a required property"),
    (("runtimes",), None, "'runtimes' is a required property"),
    (("batch_sizes",), None, "'batch_sizes' is a required property"),
    (("dataset", "kind"), "cifar", "config key dataset.kind"),
    (("dataset", "kind"), None, "config key dataset is incomplete: 'kind' is a required property"),
    (("dataset", "images"), 0, "config key dataset.images: 0 is less than the minimum of 1"),
    (("dataset", "images"), "some",
     "config key dataset.images is 'some'; it must be 'all', or a whole number >= 1 (see config/README.md)"),
    (("dataset", "images"), "some", "config key dataset.images"),
    (("dataset", "seed"), -1, "config key dataset.seed"),
    (("dataset", "path"), "/x", "config key dataset.path is not a known key"),
    (("models",), {}, "config key models"),
    (("models", "res-net"), {"arch": "resnet50", "resize": 256, "crop": 224, "checkpoint": {"random": 0}}, "config key models"),
    (("models", "r50", "colour"), "red", "config key models.r50.colour is not a known key"),
    (("models", "r50", "arch"), "resnet51",
     "config key models.r50.arch is 'resnet51', which is not a torchvision classification architecture; use one of"
     " the names `python -c 'import torchvision; print(torchvision.models.list_models(module=torchvision.models))'`"),
    (("models", "r50", "arch"), "ResNet-50", "config key models.r50.arch"),
    (("models", "r50", "interpolation"), "nearest", "config key models.r50.interpolation"),
    (("models", "r50", "arch"), None, "config key models.r50 is incomplete: 'arch' is a required property"),
    (("models", "r50", "resize"), 0, "config key models.r50.resize"),
    (("models", "r50", "crop"), 22.5, "config key models.r50.crop"),
    (("models", "r50", "checkpoint"), {"url": "ftp://x/y.pth", "sha256": "0676ba61"}, "config key models.r50.checkpoint must be one of"),
    (("models", "r50", "checkpoint"), {"url": "https://x/y.pth", "sha256": "xyz"}, "config key models.r50.checkpoint must be one of"),
    (("models", "r50", "checkpoint"), {"url": "https://x/y.pth"}, "config key models.r50.checkpoint must be one of"),
    (("models", "r50", "checkpoint"), {"random": -1}, "config key models.r50.checkpoint must be one of"),
    (("models", "r50", "checkpoint"), {"path": "a.pth", "random": 0}, "config key models.r50.checkpoint must be one of"),
    (("runtimes",), {}, "config key runtimes"),
    (("runtimes", "mxnet"), {"device": "cpu", "precisions": ["fp32"]}, "config key runtimes.mxnet is not a known key"),
    (("runtimes", "torch", "device"), "tpu", "config key runtimes.torch.device"),
    (("runtimes", "torch", "device"), None, "config key runtimes.torch is incomplete: 'device' is a required property"),
    (("runtimes", "torch", "precisions"), [], "config key runtimes.torch.precisions"),
    (("runtimes", "torch", "precisions"), ["fp32", "fp32"], "config key runtimes.torch.precisions"),
    (("runtimes", "torch", "precisions"), ["bf16"], "config key runtimes.torch.precisions[0]"),
    (("runtimes", "torch", "threads"), 0, "config key runtimes.torch.threads"),
    (("runtimes", "torch", "mode"), "jit", "config key runtimes.torch.mode"),
    (("runtimes", "torch", "cuda_graphs"), "yes", "config key runtimes.torch.cuda_graphs"),
    (("runtimes", "torch", "allow_tf32"), 1, "config key runtimes.torch.allow_tf32"),
    (("runtimes", "torch", "compile"), "fast",
     "config key runtimes.torch.compile is 'fast'; it must be true or false, or one of 'default', 'reduce-overhead',"
     " 'max-autotune', 'max-autotune-no-cudagraphs' (see config/README.md)"),
    (("runtimes", "torch", "per_run_sync"), "sometimes",
     "config key runtimes.torch.per_run_sync is 'sometimes'; it must be true or false, or 'auto' (see config/README.md)"),
    (("runtimes", "torch", "workspace_mib"), 0, "config key runtimes.torch.workspace_mib"),
    (("runtimes", "torch", "tactic_sources"), ["CUTLASS"], "config key runtimes.torch.tactic_sources[0]"),
    (("runtimes", "torch", "tactic_sources"), ["CUDNN", "CUDNN"], "config key runtimes.torch.tactic_sources"),
    (("runtimes", "torch", "builder_optimization_level"), 6, "config key runtimes.torch.builder_optimization_level"),
    (("runtimes", "torch", "python"), 3, "config key runtimes.torch.python"),
    (("batch_sizes",), [], "config key batch_sizes"),
    (("batch_sizes",), [8, 8], "config key batch_sizes"),
    (("batch_sizes",), [0], "config key batch_sizes[0]"),
    (("timing",), {"warmup": 5}, "config key timing.warmup is not a known key"),
    (("timing",), {"warmup_batches": -1}, "config key timing.warmup_batches"),
    (("timing",), {"timed_batches": 0}, "config key timing.timed_batches"),
    (("timing",), {"windows": 0}, "config key timing.windows"),
    (("timing",), {"staged_batches": 0}, "config key timing.staged_batches"),
    (("timing",), {"max_spread": 0}, "config key timing.max_spread"),
    (("accuracy",), {"reference": "torch"}, "config key accuracy.reference"),
    (("accuracy",), {"batch_size": 0}, "config key accuracy.batch_size"),
    (("accuracy",), {"keep_logits": -1}, "config key accuracy.keep_logits"),
    (("calibration", "images"), 0, "config key calibration.images"),
    (("calibration", "method"), "mse", "config key calibration.method"),
    (("calibration", "seed"), -2, "config key calibration.seed"),
    (("reference_results",), [{"label": "x", "model": "r50", "precision": "fp16", "batch_size": 8, "images_per_s": 1}],
     "config key reference_results[0] is incomplete: 'source' is a required property"),
    (("reference_results",), [{"label": "x", "model": "r50", "precision": "fp8", "batch_size": 8, "images_per_s": 1, "source": "s"}],
     "config key reference_results[0].precision"),
    (("reference_results",), [{"label": "x", "model": "r50", "precision": "fp16", "batch_size": 8, "images_per_s": 0, "source": "s"}],
     "config key reference_results[0].images_per_s"),
]


@pytest.mark.parametrize("path, value, words", SCHEMA_CASES, ids=lambda v: None)
def test_each_schema_rule_names_its_key(path, value, words):
    sentence = refused(setter(path, value))
    assert words in sentence, sentence
    assert "\n" not in sentence


COMBINATION_CASES = [
    (lambda c: c["runtimes"].update(tensorrt={"device": "cpu", "precisions": ["fp32"]}),
     "config key runtimes.tensorrt.device: tensorrt does not run on cpu; use one of cuda"),
    (lambda c: c["runtimes"]["torch"].update(device="cpu"),
     "config key runtimes.torch.precisions: torch has no fp16 on cpu (it runs fp32 there); remove fp16 or change runtimes.torch.device"),
    (lambda c: c["models"]["r50"].update(crop=300),
     "config key models.r50.crop (300) is larger than models.r50.resize (256)"),
    (lambda c: c["models"]["r50"].update(resize=31, crop=31),
     "config key models.r50.crop: resnet50 needs at least 32 px, got 31"),
    (lambda c: c["models"].update(vit={"arch": "vit_b_32", "crop": 192, "checkpoint": {"random": 0}}),
     "config key models.vit.crop: vit_b_32 cannot take 192 px inputs (torchvision's model says: Wrong image height!"),
    (lambda c: c.update(dataset={"kind": "imagenet"}),
     "config key dataset.root is missing: an imagenet data set needs its folder"),
    (lambda c: c.update(dataset={"kind": "synthetic"}),
     "config key dataset.images must be a number for a synthetic data set"),
    (lambda c: c.update(accuracy={"reference": "oneflow/fp32"}),
     "config key accuracy.reference: oneflow/fp32 is not a configured cell; choose one of onnxruntime/fp32, onnxruntime/int8, torch/fp32, torch/fp16"),
    (lambda c: c["calibration"].update(images=21),
     "config key calibration.images (21) is more than dataset.images (20)"),
    (lambda c: c.update(reference_results=[{"label": "x", "model": "vgg", "precision": "fp16", "batch_size": 8, "images_per_s": 1, "source": "s"}]),
     "config key reference_results[0].model: vgg is not in models; name a configured model"),
]


@pytest.mark.parametrize("change, sentence", COMBINATION_CASES)
def test_each_combination_rule_names_its_key(change, sentence):
    assert refused(change).startswith(sentence)


def test_defaults_that_depend_on_other_keys():
    config = check(base(), SCHEMA)
    # first cell, largest batch; keep_logits is the schema's default
    assert config["accuracy"] == {"reference": "onnxruntime/fp32", "batch_size": 50, "keep_logits": 1000}
    with_oneflow = base()
    with_oneflow["runtimes"]["oneflow"] = {"device": "cpu", "precisions": ["fp32"]}
    assert check(with_oneflow, SCHEMA)["accuracy"]["reference"] == "oneflow/fp32"
    # calibration.images is only checked against the data set when a runtime runs int8
    no_int8 = base()
    no_int8["runtimes"]["onnxruntime"]["precisions"] = ["fp32"]
    no_int8["calibration"]["images"] = 1000
    check(no_int8, SCHEMA)


def test_a_valid_config_passes_unchanged_but_for_defaults():
    config = base()
    before = copy.deepcopy(config)
    check(config, SCHEMA)

    def kept(now, was):
        for key, value in was.items():
            if isinstance(value, dict):
                kept(now[key], value)
            else:
                assert now[key] == value, key

    kept(config, before)
    # the schema's defaults are filled before the combination checks read them
    assert (config["timing"]["max_spread"], config["dataset"]["bad_images"], config["accuracy"]["keep_logits"]) == (
        0.1, "fail", 1000)


def test_a_models_resize_crop_and_interpolation_default_to_its_archs_published_transform():
    """efficientnet_b0's weights: 256 / 224 bicubic; a resnet50 with the V1 file at its url:
    256 / 224 (its DEFAULT V2 weights: 232), bilinear left unwritten; what a block sets stays."""
    config = base()
    config["models"] = {
        "eff": {"arch": "efficientnet_b0", "checkpoint": {"random": 0}},
        "v1": {"arch": "resnet50", "checkpoint": {"url": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                                                  "sha256": "0676ba61", "trust_first_download": True}},
        "v2": {"arch": "resnet50", "checkpoint": {"random": 0}},
        "mine": {"arch": "efficientnet_b0", "resize": 160, "crop": 128, "interpolation": "bilinear",
                 "checkpoint": {"random": 0}},
    }
    models = check(config, SCHEMA)["models"]
    assert {k: (m["resize"], m["crop"], m.get("interpolation")) for k, m in models.items()} == {
        "eff": (256, 224, "bicubic"), "v1": (256, 224, None), "v2": (232, 224, None), "mine": (160, 128, "bilinear"),
    }


def test_the_calibration_default_is_the_schemas():
    """calibration.images left out means the schema's 500, checked against dataset.images."""
    config = base()
    config.pop("calibration", None)
    config["dataset"]["images"] = 100
    with pytest.raises(UserError, match=r"calibration\.images \(500\) is more than dataset\.images \(100\)"):
        check(config, SCHEMA)


def test_every_registered_runtime_is_in_the_schema_and_has_its_module():
    """Adding a runtime is a registry entry, its module and its name in the schema."""
    import importlib.util

    from infbench.runtimes import CAPABILITIES, REGISTRY, STACK, int8_form

    assert list(SCHEMA["properties"]["runtimes"]["properties"]) == list(REGISTRY)
    for name, runtime in REGISTRY.items():
        assert importlib.util.find_spec(f"infbench.runtimes.{name}") is not None, name
        assert runtime.artifact in ("weights", "onnx", "engine")
        assert (runtime.venv is None) == (runtime.make_target is None) == (STACK[name] == "main")
        for device, precisions in CAPABILITIES[name].items():
            if "int8" in precisions:
                assert device in runtime.int8_forms, f"{name} runs int8 on {device} but names no Q/DQ form"
    assert (int8_form("onnxruntime", "cpu"), int8_form("onnxruntime", "cuda"), int8_form("tensorrt", "cuda")) == (
        "u8s8", "s8s8", "s8s8")
