"""Config checks beyond what Snakemake's schema validation says clearly.

``check`` turns the first schema error into one sentence naming the key, then checks the
combinations a schema cannot express (a precision a runtime lacks on its device, a
reference cell that is not configured, an arch torchvision does not have, ...). It also
fills the defaults that depend on other keys: a model's resize, crop and interpolation
from its arch's published transform (``model_defaults``). Everything raises UserError.
"""

import copy

import jsonschema

from infbench.data import DEFAULT_INTERPOLATION
from infbench.errors import UserError
from infbench.runtimes import CAPABILITIES

# the smallest input each seed architecture accepts (its feature maps must not vanish); the
# others are asked (models.crop_problem)
MIN_CROP = {"alexnet": 63, "vgg16": 32, "resnet50": 32, "inception_v3": 75}


def _key(path):
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")


def schema_sentence(error):
    """One sentence for a jsonschema ValidationError, naming the config key."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = _key(path + [extra[0]]) if extra else _key(path)
        known = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config key {where} is not a known key (known here: {known}); see config/README.md"
    if "checkpoint" in path:
        return (
            f"config key {_key(path[: path.index('checkpoint') + 1])} must be one of"
            " {url: <https://...>, sha256: <the full 64-digit hex digest>} (a published prefix of"
            " 8+ digits only with trust_first_download: true; optionally retries: <whole number"
            " >= 0>, timeout_s, deadline_s: <seconds > 0>, max_mib: <MiB > 0>), {path: ...}, {random: <seed>}"
            " or {onnx: <your .onnx file>, sha256: <its full 64-digit hex digest>}"
        )
    if error.validator == "not" and path and path[0] == "models":
        return (
            f"config key {_key(path + ['arch'])}: a model given as an ONNX file (checkpoint: {{onnx: ...}})"
            " has no arch; remove it (the file is the model)"
        )
    if error.validator == "required":
        return f"config key {_key(path) or '(top level)'} is incomplete: {error.message}"
    if error.validator == "oneOf":
        allowed = [_alternative(sub) for sub in error.validator_value]
        if all(allowed):
            return (
                f"config key {_key(path) or '(top level)'} is {error.instance!r}; it must be"
                f" {', or '.join(allowed)} (see config/README.md)"
            )
    return f"config key {_key(path) or '(top level)'}: {error.message}"


def _alternative(sub):
    """Words for one scalar alternative of a oneOf ({type: boolean}, an enum, a const, a
    whole number with a minimum), or None."""
    if "$ref" in sub:
        sub = POSITIVE_INT if sub["$ref"] == "#/$defs/positive_int" else {}
    if sub.get("type") == "boolean":
        return "true or false"
    if "enum" in sub:
        return "one of " + ", ".join(repr(v) for v in sub["enum"])
    if "const" in sub:
        return repr(sub["const"])
    if sub.get("type") == "integer" and "minimum" in sub:
        return f"a whole number >= {sub['minimum']}"
    return None


POSITIVE_INT = {"type": "integer", "minimum": 1}


def fill_defaults(instance, schema):
    """Set every absent key that ``schema`` gives a default, in nested objects too (an
    absent object with a default of {} gets its own keys' defaults)."""
    for key, sub in (schema.get("properties") or {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and "properties" in sub:
            fill_defaults(instance[key], sub)


def check(config, schema):
    """Validate ``config`` against ``schema``, fill the schema's defaults, then check the
    combinations the schema cannot express (the one place a config is validated)."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise UserError(schema_sentence(error))
    fill_defaults(config, schema)

    for name, rt in config["runtimes"].items():
        supported = CAPABILITIES[name].get(rt["device"])
        if supported is None:
            raise UserError(
                f"config key runtimes.{name}.device: {name} does not run on {rt['device']};"
                f" use one of {', '.join(CAPABILITIES[name])}"
            )
        for precision in rt["precisions"]:
            if precision not in supported:
                raise UserError(
                    f"config key runtimes.{name}.precisions: {name} has no {precision} on"
                    f" {rt['device']} (it runs {', '.join(supported)} there); remove"
                    f" {precision} or change runtimes.{name}.device"
                )

    for name, model in config["models"].items():
        model_defaults(name, model)
        if model["crop"] > model["resize"]:
            raise UserError(
                f"config key models.{name}.crop ({model['crop']}) is larger than"
                f" models.{name}.resize ({model['resize']}); the crop is cut from the resized image"
            )
        _check_crop(name, model)

    dataset = config["dataset"]
    if dataset["kind"] == "imagenet" and "root" not in dataset:
        raise UserError("config key dataset.root is missing: an imagenet data set needs its folder")
    if dataset["kind"] == "synthetic" and dataset["images"] == "all":
        raise UserError("config key dataset.images must be a number for a synthetic data set")

    cells = [f"{r}/{p}" for r, rt in config["runtimes"].items() for p in rt["precisions"]]
    accuracy = config.setdefault("accuracy", {})
    if "reference" not in accuracy:
        accuracy["reference"] = "oneflow/fp32" if "oneflow/fp32" in cells else cells[0]
    if accuracy["reference"] not in cells:
        raise UserError(
            f"config key accuracy.reference: {accuracy['reference']} is not a configured cell;"
            f" choose one of {', '.join(cells)}"
        )
    accuracy.setdefault("batch_size", max(config["batch_sizes"]))
    _check_fixed_batches(config)

    if any("int8" in rt["precisions"] for rt in config["runtimes"].values()):
        images = dataset["images"]
        wanted = config["calibration"]["images"]
        if images != "all" and wanted > images:
            raise UserError(
                f"config key calibration.images ({wanted}) is more than dataset.images"
                f" ({images}); lower calibration.images or use more images"
            )

    for i, ref in enumerate(config.get("reference_results", [])):
        if ref["model"] not in config["models"]:
            raise UserError(
                f"config key reference_results[{i}].model: {ref['model']} is not in models; name a configured model"
            )
    return config


def model_defaults(name, model):
    """Fill what a model's block leaves out from its arch's published transform
    (``models.published_transform``: of the weights at its checkpoint's url, else the
    arch's DEFAULT weights): ``resize``, ``crop``, and ``interpolation`` where that is not
    bilinear (absent means bilinear, so a seed model's block is recorded as written). A
    seed arch whose block sets resize and crop imports no torchvision."""
    from infbench.models import ARCHS

    if "onnx" in model["checkpoint"]:
        _onnx_defaults(name, model)
        return
    arch = model["arch"]
    if arch in ARCHS and "resize" in model and "crop" in model:
        return
    from infbench.models import check_arch, published_transform

    check_arch(arch, key=f"models.{name}.arch")
    published = published_transform(arch, model["checkpoint"].get("url"))
    model.setdefault("resize", published["resize"])
    model.setdefault("crop", published["crop"])
    if "interpolation" not in model and published["interpolation"] != DEFAULT_INTERPOLATION:
        model["interpolation"] = published["interpolation"]


def _onnx_defaults(name, model):
    """An ONNX-file model's crop is its input's size (a crop that differs is refused), its
    resize by default the crop's 256/224 (torchvision's ImageNet presets), its interpolation
    bilinear."""
    from infbench.onnxfile import input_spec

    spec = input_spec(model["checkpoint"]["onnx"], key=f"models.{name}.checkpoint.onnx")
    if model.setdefault("crop", spec["size"]) != spec["size"]:
        raise UserError(
            f"config key models.{name}.crop is {model['crop']}, but {model['checkpoint']['onnx']} takes"
            f" {spec['size']} x {spec['size']} images; remove the crop or set it to {spec['size']}"
        )
    model.setdefault("resize", int(spec["size"] * 256 / 224 + 0.5))


def onnx_fixed_batches(config):
    """{model name: the fixed batch of its ONNX file} for the ONNX-file models that have one."""
    from infbench.onnxfile import input_spec

    fixed = {}
    for name, model in config["models"].items():
        if "onnx" in model["checkpoint"]:
            batch = input_spec(model["checkpoint"]["onnx"], key=f"models.{name}.checkpoint.onnx")["batch"]
            if batch is not None:
                fixed[name] = batch
    return fixed


def _check_fixed_batches(config):
    """Every batch size a model runs at is its ONNX file's fixed batch, where it has one
    (speed, latency, accuracy; int8's calibration goes in slices of it)."""
    for name, batch in onnx_fixed_batches(config).items():
        used = {
            "batch_sizes": config["batch_sizes"],
            "latency.batch_sizes": config["latency"]["batch_sizes"],
            "accuracy.batch_size": [config["accuracy"]["batch_size"]],
        }
        for key, sizes in used.items():
            other = [bs for bs in sizes if bs != batch]
            if other:
                raise UserError(
                    f"config key {key}: models.{name}'s ONNX file has a fixed batch of {batch}, so it cannot"
                    f" run batch size {other[0]}; set {key} to {batch}, or export the file with a dynamic batch axis"
                )
        wanted = config["calibration"]["images"]
        if any("int8" in rt["precisions"] for rt in config["runtimes"].values()) and wanted % batch:
            raise UserError(
                f"config key calibration.images ({wanted}) is not a multiple of models.{name}'s fixed batch"
                f" of {batch}, which its calibration goes in; use a multiple of {batch}"
            )


def _check_crop(name, model):
    """The crop an arch can take: a seed arch's MIN_CROP, else what the model says of it
    (an ONNX-file model's is its input's, checked in ``_onnx_defaults``)."""
    if "onnx" in model["checkpoint"]:
        return
    arch, crop = model["arch"], model["crop"]
    if arch in MIN_CROP:
        if crop < MIN_CROP[arch]:
            raise UserError(f"config key models.{name}.crop: {arch} needs at least {MIN_CROP[arch]} px, got {crop}")
        return
    from infbench.models import crop_problem

    problem = crop_problem(arch, crop)
    if problem:
        raise UserError(
            f"config key models.{name}.crop: {arch} cannot take {crop} px inputs (torchvision's"
            f" model says: {problem}); change the crop or leave it out for the arch's published one"
        )
