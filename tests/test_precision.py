"""Precision transforms: fp32 export, fp16 conversion, one int8 calibration -> S8S8 and U8S8."""

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from infbench import precision, runtimes
from infbench.data import load_image
from infbench.errors import UserError
from infbench.runtimes.base import SessionSpec, normalise_nchw
from conftest import make_weights

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/imagenet-sample"
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "val_map.txt").is_file(), reason=f"ImageNet sample not found at {SAMPLE}"
)
CROP, RESIZE = 96, 110
CALIBRATION_IMAGES = 8
IMAGES = 24  # 8 drawn for calibration, the rest held out for the agreement checks


def run_onnx(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]


def cosines(a, b):
    """Cosine similarity of each image's logits."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def quantize_params(model):
    """{quantised activation: (scale, zero point)} of a Q/DQ model's QuantizeLinear nodes."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        n.input[0]: (init[n.input[1]], init[n.input[2]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """resnet50 fp32 ONNX at crop 96, and a real-image cache with its index rows."""
    folder = tmp_path_factory.mktemp("resnet50")
    weights, fp32 = folder / "weights.safetensors", folder / "fp32.onnx"
    make_weights("resnet50", weights)
    precision.export_fp32("resnet50", weights, CROP, fp32)
    return folder, fp32


@pytest.fixture(scope="module")
def cache(resnet):
    if not (SAMPLE / "val_map.txt").is_file():
        pytest.skip(f"ImageNet sample not found at {SAMPLE}")
    folder, _ = resnet
    pairs = [line.split() for line in (SAMPLE / "val_map.txt").read_text().splitlines()[:IMAGES]]
    rows = [(str(SAMPLE / "val" / name), int(label)) for name, label in pairs]
    images = np.stack([load_image(file, RESIZE, CROP) for file, _ in rows])
    np.save(folder / "cache.npy", images)
    return folder / "cache.npy", rows, images


@pytest.fixture(scope="module")
def int8(resnet, cache):
    """One calibration of resnet50 (minmax: entropy's threshold search takes minutes here)."""
    folder, fp32 = resnet
    cache_npy, rows, _ = cache
    out = {k: folder / f"int8-{k}.onnx" for k in ("s8s8", "u8s8")}
    summary = precision.calibrate_int8(
        fp32,
        cache_npy,
        rows,
        CALIBRATION_IMAGES,
        "minmax",
        out["s8s8"],
        out["u8s8"],
        folder / "calibration.tsv",
        seed=0,
    )
    return out, folder / "calibration.tsv", summary


def test_fp32_export_interface(resnet):
    _, fp32 = resnet
    model = onnx.load(str(fp32))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, CROP, CROP] and out_dims == ["batch", 1000]
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) == precision.OPSET
    assert all(t.data_location == TensorProto.DEFAULT for t in model.graph.initializer)  # one file
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded
    for batch in (1, 5):  # the batch axis is dynamic
        x = np.zeros((batch, 3, CROP, CROP), np.float32)
        assert run_onnx(fp32, x).shape == (batch, 1000)


INCEPTION_CROP = 80  # inception_v3's smallest input is 75x75


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    """inception_v3 (transform_input=True, as torchvision builds it for its ImageNet weights)
    exported at crop 80, with the PyTorch model it came from."""
    from infbench.models import load_torch

    folder = tmp_path_factory.mktemp("inception_v3")
    weights, fp32 = folder / "weights.safetensors", folder / "fp32.onnx"
    make_weights("inception_v3", weights)
    precision.export_fp32("inception_v3", weights, INCEPTION_CROP, fp32)
    return load_torch("inception_v3", weights), fp32


def test_inception_input_transform_is_folded_into_the_first_convolution(inception):
    _, fp32 = inception
    nodes = onnx.load(str(fp32)).graph.node
    first_conv = next(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    assert first_conv == 0 and nodes[0].input[0] == "input" and len(nodes[0].input) == 3  # reads the input, with a bias
    assert not {"Gather", "Unsqueeze", "Concat"} & {n.op_type for n in nodes[:first_conv + 1]}


def test_inception_folded_export_gives_pytorchs_logits_with_its_input_transform(inception):
    import torch

    model, fp32 = inception
    assert model.transform_input  # the reference keeps torchvision's own transform
    x = np.random.default_rng(3).standard_normal((4, 3, INCEPTION_CROP, INCEPTION_CROP)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = run_onnx(fp32, x)
    # float rounding only: 2.1e-6 of the largest logit here (with the bias left out: 0.12)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@needs_sample
def test_fp16_has_float32_io_fp16_weights_and_close_logits(resnet, cache):
    folder, fp32 = resnet
    _, _, images = cache
    fp16 = folder / "fp16.onnx"
    precision.to_fp16(fp32, fp16)
    model = onnx.load(str(fp16))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    types = {t.data_type for t in model.graph.initializer}
    assert TensorProto.FLOAT16 in types and TensorProto.FLOAT not in types
    x = normalise_nchw(images)
    ref, got = run_onnx(fp32, x), run_onnx(fp16, x)
    assert got.dtype == np.float32
    assert cosines(ref, got).min() > 0.99


@needs_sample
def test_int8_calibrates_once_and_writes_both_forms(int8, cache):
    out, listing, summary = int8
    _, rows, _ = cache
    # the calibration ran once: one pass over the images, in slices
    assert summary["images"] == CALIBRATION_IMAGES
    assert summary["calibration_batches"] == math.ceil(
        CALIBRATION_IMAGES / precision.CALIBRATION_BATCH
    )
    assert summary["tensors"] > 50
    s8, u8 = (onnx.load(str(out[k])) for k in ("s8s8", "u8s8"))
    for model in (s8, u8):
        ops = {n.op_type for n in model.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    s8_params, u8_params = quantize_params(s8), quantize_params(u8)
    assert all(zp.dtype == np.int8 and (zp == 0).all() for _, zp in s8_params.values())
    assert all(zp.dtype == np.uint8 for _, zp in u8_params.values())
    assert any((zp != 0).any() for _, zp in u8_params.values())  # some ranges are asymmetric
    # TensorRT takes no int32 bias DequantizeLinear: S8S8 keeps its biases in float
    init_types = {t.name: t.data_type for t in s8.graph.initializer}
    dq_inputs = {
        init_types.get(n.input[0]) for n in s8.graph.node if n.op_type == "DequantizeLinear"
    }
    assert TensorProto.INT32 not in dq_inputs

    # both forms come from the same ranges: S8S8's symmetric scale is U8S8's range's absmax / 127
    common = sorted(set(s8_params) & set(u8_params))
    assert len(common) > 20
    for name in common:
        u_scale, u_zp = (float(v) for v in u8_params[name])
        lo, hi = (0 - u_zp) * u_scale, (255 - u_zp) * u_scale
        expected = max(abs(lo), abs(hi)) / 127
        assert float(s8_params[name][0]) == pytest.approx(expected, rel=0.01, abs=1e-12), name

    lines = listing.read_text().splitlines()
    assert lines[0] == "index\tfile\tlabel" and len(lines) == CALIBRATION_IMAGES + 1
    for line in lines[1:]:
        index, file, label = line.split("\t")
        assert rows[int(index)] == (file, int(label))


def test_int8_logits_are_float_and_tensorrt_form_quantises_weighted_inputs_only(int8):
    """Logits come from the Gemm, not a DequantizeLinear (no rounding to 255 levels); the
    S8S8 (TensorRT) form has Q/DQ on the inputs of Conv/Gemm/MatMul only, none before a ReLU."""
    out, _, _ = int8
    for form, path in out.items():
        graph = onnx.load(str(path)).graph
        producer = {o: n for n in graph.node for o in n.output}
        assert producer[graph.output[0].name].op_type == "Gemm", form
    graph = onnx.load(str(out["s8s8"])).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dequantised = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(dequantised) > 50
    for dq in dequantised:  # each exists for a weighted layer's input (which a skip Add may share)
        assert {c.op_type for c in consumers[dq.output[0]]} & {"Conv", "Gemm", "MatMul"}, dq.name
    for node in graph.node:
        if node.op_type == "Relu":
            source = producer.get(node.input[0])
            assert source is None or source.op_type != "DequantizeLinear", node.name


@needs_sample
def test_int8_logits_agree_with_fp32_on_held_out_images(resnet, cache, int8):
    _, fp32 = resnet
    _, _, images = cache
    out, listing, _ = int8
    used = {int(line.split("\t")[0]) for line in listing.read_text().splitlines()[1:]}
    held_out = [i for i in range(IMAGES) if i not in used]
    x = normalise_nchw(images[held_out])
    ref = run_onnx(fp32, x)
    for form, path in out.items():
        cos = cosines(ref, run_onnx(path, x))
        assert cos.min() > 0.98, f"{form}: cosine {cos.min():.4f}"
    # and through the runtime module, which takes the U8S8 file on the CPU
    spec = SessionSpec(
        "onnxruntime", "resnet50", "resnet50", "int8", len(held_out), "cpu", str(out["u8s8"]), CROP
    )
    session = runtimes.load("onnxruntime").open_session(spec)
    got = session.logits(session.run(session.stage(images[held_out])))
    assert cosines(ref, got).min() > 0.98


def test_int8_fp16_form_is_int8_where_quantised_and_fp16_elsewhere(resnet, cache, int8, tmp_path):
    """TensorRT 10/11's int8 file: the S8S8 Q/DQ over an fp16 graph, float32 I/O."""
    _, fp32 = resnet
    _, _, images = cache
    out, listing, _ = int8
    form = tmp_path / "int8-s8s8-fp16.onnx"
    precision.to_fp16(out["s8s8"], form)
    model, s8s8 = onnx.load(form), onnx.load(out["s8s8"])
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [19]
    for tensor in (*model.graph.input, *model.graph.output):
        assert tensor.type.tensor_type.elem_type == TensorProto.FLOAT
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == [n.op_type for n in s8s8.graph.node].count("QuantizeLinear") > 0
    # every float initialiser (scales, biases) is fp16; the quantised weights stay int8
    kinds = {t.data_type for t in model.graph.initializer}
    assert TensorProto.FLOAT not in kinds and {TensorProto.FLOAT16, TensorProto.INT8} <= kinds
    used = {int(line.split("\t")[0]) for line in listing.read_text().splitlines()[1:]}
    x = normalise_nchw(images[[i for i in range(IMAGES) if i not in used]])
    got, ref = run_onnx(form, x), run_onnx(fp32, x)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert cosines(ref, got).min() > 0.98
    assert cosines(run_onnx(out["s8s8"], x), got).min() > 0.995  # the same int8, fp16 around it


def test_too_few_cached_images_names_the_config_key(resnet, tmp_path):
    _, fp32 = resnet
    cache_npy = tmp_path / "cache.npy"
    np.save(cache_npy, np.zeros((4, CROP, CROP, 3), np.uint8))
    rows = [(f"img{i}.JPEG", i) for i in range(4)]
    outs = [tmp_path / n for n in ("s8.onnx", "u8.onnx", "list.tsv")]
    with pytest.raises(UserError, match=r"calibration\.images is 5 .* only 4"):
        precision.calibrate_int8(fp32, cache_npy, rows, 5, "entropy", *outs)
    assert not any(p.exists() for p in outs)


def tiny_model(path, crop=16):
    """input -> Conv(3->8) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits (opset 18)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.3, (10, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, crop, crop])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_entropy_clips_the_tail_that_minmax_keeps(tmp_path):
    """With enough histogram bins, entropy picks a threshold below the maximum."""
    tiny_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "cache.npy", rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    rows = [(f"img{i}.JPEG", i % 10) for i in range(16)]
    relu_scale = {}
    for method in ("minmax", "entropy", "percentile"):
        outs = [tmp_path / f"{method}-{n}" for n in ("s8.onnx", "u8.onnx", "list.tsv")]
        summary = precision.calibrate_int8(
            tmp_path / "tiny.onnx", tmp_path / "cache.npy", rows, 16, method, *outs
        )
        assert summary["calibration_batches"] == 2
        params = quantize_params(onnx.load(str(outs[1])))
        scale, zp = params["relu"]  # U8S8 drops the Relu: the Conv writes "relu" directly
        assert zp == 0  # the Relu's range starts at 0, so uint8 spends no level on negatives
        relu_scale[method] = float(scale)
    assert relu_scale["entropy"] < 0.9 * relu_scale["minmax"]
    assert relu_scale["percentile"] < relu_scale["minmax"]


def test_fp16_keeps_global_pooling_in_float32(tmp_path):
    """The fp16 ONNX pools in float32 (as PyTorch fp16 accumulates): a ReduceMean or
    GlobalAveragePool reads a Cast to float32 and hands a Cast to fp16 on, while the Gemm
    after it runs in fp16 on fp16 weights. A feature map whose channel sums pass fp16's
    65,504 (64 positions of 2,000) pools to exactly 2,000."""
    from onnx import helper

    for pool in ("ReduceMean", "GlobalAveragePool"):
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 8, 8])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
        weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [0.5, 0.25, 1.0, 0.0, 0.0, 1.0])
        axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
        nodes = [helper.make_node("Relu", ["input"], ["features"])]  # an fp16 layer before the pool
        if pool == "ReduceMean":
            nodes.append(helper.make_node("ReduceMean", ["features", "axes"], ["pooled"], keepdims=0))
            inits = [weight, axes]
        else:
            nodes += [helper.make_node("GlobalAveragePool", ["features"], ["pooled4"]),
                      helper.make_node("Flatten", ["pooled4"], ["pooled"])]
            inits = [weight]
        nodes.append(helper.make_node("Gemm", ["pooled", "w"], ["logits"], transB=1))
        model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                  opset_imports=[helper.make_opsetid("", 18)])
        fp32, fp16 = tmp_path / f"{pool}-fp32.onnx", tmp_path / f"{pool}-fp16.onnx"
        onnx.save(model, str(fp32))
        precision.to_fp16(fp32, fp16)
        converted = onnx.load(str(fp16))
        producers = {o: n for n in converted.graph.node for o in n.output}
        node = next(n for n in converted.graph.node if n.op_type == pool)
        cast_in = producers[node.input[0]]
        assert cast_in.op_type == "Cast"
        assert helper.get_attribute_value(cast_in.attribute[0]) == TensorProto.FLOAT
        consumers = [n for n in converted.graph.node if node.output[0] in n.input]
        assert [n.op_type for n in consumers] == ["Cast"]
        assert producers[cast_in.input[0]].op_type == "Relu"  # which runs in fp16
        assert helper.get_attribute_value(consumers[0].attribute[0]) == TensorProto.FLOAT16
        assert {t.name: t.data_type for t in converted.graph.initializer}["w"] == TensorProto.FLOAT16
        got = run_onnx(fp16, np.full((1, 2, 8, 8), 2000.0, np.float32))
        np.testing.assert_array_equal(got, [[1500.0, 2000.0, 2000.0]])


def test_entropy_threshold_is_onnx_runtimes_to_the_last_bit():
    """infbench's entropy threshold (array operations) against ONNX Runtime's own
    HistogramCollector.get_entropy_threshold on the histograms calibration makes: two-sided
    with outliers, one-sided (after ReLU), sparse, and a single occupied bin; at the
    project's 2,048 bins / 128 quantised bins and at a smaller size."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(0)
    normal = np.concatenate([rng.standard_normal(20000) * 1.7, rng.standard_normal(40) * 25])
    cases = {
        "two-sided with outliers": normal,
        "one-sided": np.abs(normal),
        "sparse": rng.choice([0.0, 0.5, 3.0, -2.0], size=5000, p=[0.9, 0.05, 0.03, 0.02]),
        "one bin": np.full(100, 2.5),
    }
    for (bins, quantized) in ((precision.HISTOGRAM_BINS, precision.QUANTIZED_BINS), (512, 64)):
        collector = HistogramCollector("entropy", True, bins, quantized, 99.99, "same")
        for name, data in cases.items():
            data = data.astype(np.float32)
            bound = float(np.abs(data).max())
            hist, edges = np.histogram(data, bins, range=(-bound, bound))
            histogram = (hist, edges.astype(np.float32), data.min(), data.max())
            theirs = collector.get_entropy_threshold(histogram, quantized)
            ours = precision.entropy_threshold(histogram, quantized)
            assert [float(v) for v in ours] == [float(v) for v in theirs], (name, bins)
            assert [v.dtype for v in ours] == [v.dtype for v in theirs]
