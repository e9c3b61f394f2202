"""Your own model as an ONNX file: what is read from the file, the import, the config checks."""

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from infbench.configcheck import check
from infbench.errors import UserError
from infbench.onnxfile import import_onnx, input_spec

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())


def tiny_onnx(path, layout="NCHW", batch="N", size=64, inputs=1, dtype=None, seed=0):
    """A small real classifier (Conv, ReLU, global pool, MatMul to 1000 scores) whose image
    input is ``image`` in ``layout``, with a fixed ``batch`` or a dynamic one (a name)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.2, (16, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(16, np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.2, (16, 1000)).astype(np.float32), "fc"),
    ]
    shape = [batch, 3, size, size] if layout == "NCHW" else [batch, size, size, 3]
    nodes, source = [], "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["x"], perm=[0, 3, 1, 2]))
        source = "x"
    nodes += [
        helper.make_node("Conv", [source, "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["scores"]),
    ]
    graph_inputs = [helper.make_tensor_value_info("image", dtype or TensorProto.FLOAT, shape)]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(
        nodes, "tiny", graph_inputs, [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 1000])], weights
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_input_is_read_from_the_file(tmp_path):
    nchw, _ = tiny_onnx(tmp_path / "a.onnx")
    nhwc, _ = tiny_onnx(tmp_path / "b.onnx", layout="NHWC", batch=4, size=96)
    assert input_spec(nchw) == {"name": "image", "layout": "NCHW", "size": 64, "batch": None}
    assert input_spec(nhwc) == {"name": "image", "layout": "NHWC", "size": 96, "batch": 4}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"inputs": 2}, "has 2 inputs (image, extra)"),
        ({"dtype": 2}, "is not a float32 image batch of rank 4 (UINT8, rank 4)"),
        ({"size": "side"}, "is None x None pixels"),
    ],
)
def test_a_file_infbench_cannot_feed_is_one_sentence_naming_the_key(tmp_path, kwargs, words):
    path, _ = tiny_onnx(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(UserError) as err:
        input_spec(path, key="models.mine.checkpoint.onnx")
    assert str(err.value).startswith("config key models.mine.checkpoint.onnx: ") and words in str(err.value)
    with pytest.raises(UserError, match="does not exist; give the path of your ONNX file"):
        input_spec(tmp_path / "absent.onnx")


@pytest.mark.parametrize("layout, batch", [("NCHW", "N"), ("NHWC", 2)])
def test_the_import_gives_the_files_scores_through_an_nchw_input_named_input(tmp_path, layout, batch):
    import onnxruntime as ort

    path, digest = tiny_onnx(tmp_path / "m.onnx", layout=layout, batch=batch)
    out = tmp_path / "fp32.onnx"
    import_onnx(path, digest, out)
    imported = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (feed,) = imported.get_inputs()
    assert feed.name == "input" and feed.shape[1:] == [3, 64, 64]
    assert feed.shape[0] == (2 if batch == 2 else "batch")
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    given = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
    (expected,) = original.run(None, {"image": given})
    (got,) = imported.run(None, {"input": x})
    assert got.shape == (2, 1000) and np.array_equal(got, expected)


def test_a_file_whose_sha256_differs_is_refused_and_nothing_written(tmp_path):
    path, digest = tiny_onnx(tmp_path / "m.onnx")
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(UserError) as err:
        import_onnx(path, wrong, tmp_path / "fp32.onnx", key="models.mine.checkpoint")
    assert str(err.value).startswith(f"config key models.mine.checkpoint.sha256: {path} has sha256 {digest}, not")
    assert not (tmp_path / "fp32.onnx").exists()


def config_with(path, digest, **model):
    return {
        "dataset": {"kind": "synthetic", "images": 8},
        "models": {"mine": {"checkpoint": {"onnx": path, "sha256": digest}, **model}},
        "runtimes": {"onnxruntime": {"device": "cpu", "precisions": ["fp32", "int8"]}},
        "batch_sizes": [2],
        "calibration": {"images": 4},
    }


def test_an_onnx_models_crop_is_its_files_and_its_resize_the_crops_256_224(tmp_path):
    path, digest = tiny_onnx(tmp_path / "m.onnx", size=299)
    model = check(config_with(path, digest), SCHEMA)["models"]["mine"]
    assert (model["crop"], model["resize"], "interpolation" in model) == (299, 342, False)
    with pytest.raises(UserError, match=r"config key models\.mine\.crop is 224, but .* takes 299 x 299 images"):
        check(config_with(path, digest, crop=224), SCHEMA)


@pytest.mark.parametrize(
    "change, sentence",
    [
        (lambda c: c.update(batch_sizes=[2, 8]),
         "config key batch_sizes: models.mine's ONNX file has a fixed batch of 2, so it cannot run batch size 8;"
         " set batch_sizes to 2, or export the file with a dynamic batch axis"),
        (lambda c: c.update(latency={"batch_sizes": [1]}), "config key latency.batch_sizes: models.mine's ONNX file"),
        (lambda c: c["calibration"].update(images=5),
         "config key calibration.images (5) is not a multiple of models.mine's fixed batch of 2"),
        (lambda c: c["models"]["mine"].update(arch="resnet18"),
         "config key models.mine.arch: a model given as an ONNX file (checkpoint: {onnx: ...}) has no arch"),
        (lambda c: c["models"]["mine"]["checkpoint"].update(sha256="0676ba61"),
         "config key models.mine.checkpoint must be one of"),
    ],
)  # fmt: skip
def test_a_fixed_batch_other_batch_sizes_and_an_arch_are_refused_in_one_sentence(tmp_path, change, sentence):
    path, digest = tiny_onnx(tmp_path / "m.onnx", batch=2)
    config = config_with(path, digest)
    config["latency"] = {"batch_sizes": [2]}
    check(copy.deepcopy(config), SCHEMA)  # as it is: accepted
    change(config)
    with pytest.raises(UserError) as err:
        check(config, SCHEMA)
    assert str(err.value).startswith(sentence) and "\n" not in str(err.value)


def test_a_fixed_batch_file_is_calibrated_in_slices_of_its_batch(tmp_path):
    """int8 of a file that takes batches of 2 only: calibration feeds it 2 images at a time
    (the existing step feeds 8 to a dynamic batch), and the int8 file runs batches of 2."""
    import onnxruntime as ort

    from infbench.precision import calibrate_int8

    path, digest = tiny_onnx(tmp_path / "m.onnx", layout="NHWC", batch=2)
    fp32 = tmp_path / "fp32.onnx"
    import_onnx(path, digest, fp32)
    cache = tmp_path / "cache.npy"
    np.save(cache, np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    rows = [(f"/images/{i}.JPEG", i) for i in range(6)]
    outs = [tmp_path / name for name in ("s8s8.onnx", "u8s8.onnx", "list.tsv")]
    calibrate_int8(fp32, cache, rows, 4, "minmax", *outs)
    session = ort.InferenceSession(str(outs[1]), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((2, 3, 64, 64), np.float32)})
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
