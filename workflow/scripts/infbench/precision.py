"""Precision as an ONNX transform, shared by every ONNX consumer (docs/architecture.md).

- ``export_fp32``: the torchvision model with the neutral weights -> fp32 ONNX (input
  "input" [batch, 3, crop, crop] float32, already normalised; output "logits").
- ``to_fp16``: fp16 weights and arithmetic inside, float32 input and output.
- ``calibrate_int8``: one calibration with ONNX Runtime's calibrators on images drawn
  from the uint8 cache, then two Q/DQ files from the same tensor ranges: S8S8 (symmetric
  int8 activations, what TensorRT's explicit quantisation takes) and U8S8 (asymmetric
  uint8 activations, int8 weights, what ONNX Runtime runs fastest on x86 CPUs).

Every output is written to a temporary file beside it and renamed into place, so an
interrupted step never leaves a half-written model under the final name.
"""

import contextlib
import csv
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from infbench import files
from infbench.errors import UserError
from infbench.progress import Progress
from infbench.runtimes.base import normalise_nchw

# ONNX opset of the exported model. The torch.export-based exporter of torch 2.14 writes
# opset 18 (it has no implementations below 18); ONNX Runtime 1.32 and TensorRT 10 both
# parse it.
OPSET = 18

# the weighted layers, whose inputs TensorRT's int8 form quantises (and nothing else)
WEIGHTED_OPS = ["Conv", "Gemm", "MatMul"]

# Calibration feeds this many images per inference: ONNX Runtime's calibrators keep every
# intermediate tensor of a call in memory, so the set is fed in slices and the ranges
# (or histograms) are merged between slices.
CALIBRATION_BATCH = 8

# Histogram bins for the entropy and percentile calibrators. ONNX Runtime's entropy
# default (128 bins, 128 quantised bins) leaves a single candidate threshold, the
# absolute maximum, so entropy would silently equal max calibration; 2048 bins are what
# the KL-divergence method was published with (TensorRT, GTC 2017).
HISTOGRAM_BINS = 2048
QUANTIZED_BINS = 128

METHODS = ("entropy", "minmax", "percentile")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    with files.atomic_output(path) as tmp:
        yield tmp


def _require_file(path, what):
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; {what}")


# the fp32 export's version: raise it with any change to what export_fp32 writes, so that the
# workflow exports every model again (a param of rule export_onnx); 2: inception_v3's input
# transform folded into its first convolution
EXPORT_VERSION = 2


def export_fp32(arch, weights, crop, out, fold_transform=True):
    """Export the eval-mode torchvision model as a single-file fp32 ONNX with a dynamic batch.

    Uses the torch.export-based exporter (the default since torch 2.9; the TorchScript
    exporter still exists but is deprecated). BatchNorm is folded into the convolutions and
    the weights are embedded (the largest model, vgg16, is 0.55 GB, under ONNX's 2 GB).
    inception_v3's input transform is folded into its first convolution
    (``models.fold_input_transform``), so every ONNX consumer gets a graph whose first node
    is that convolution; the logits are PyTorch's to float rounding. ``fold_transform``
    False exports the transform as torchvision writes it (for diagnosis only:
    benchmarks/h200/run.sh's BISECT).
    """
    import torch

    from infbench.models import fold_input_transform, load_torch

    _require_file(weights, "run the workflow's weights step first or fix the path")
    model = load_torch(arch, weights)  # eval(): inception_v3 returns logits only
    if fold_transform:
        fold_input_transform(model)
    example = torch.zeros(2, 3, crop, crop)  # batch 2, so the batch axis is not specialised
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
        verbose=False,
    )
    with atomic_output(out) as tmp:
        program.save(tmp, external_data=False)


# Reductions over many activations stay float32 in the fp16 ONNX, as PyTorch accumulates
# them in float32 in fp16: summed in fp16 they overflow at 65,504. The global average pool
# of inception_v3 with random weights sums up to 181,000 per channel on config/gpu.yaml's
# synthetic images, and ONNX Runtime's CUDA provider returned non-finite logits for 19 of
# 500 images from an fp16 ONNX that pooled in fp16 (docs/results/h200.md).
FP32_REDUCTIONS = ("ReduceMean", "ReduceSum", "GlobalAveragePool")
# the fp16 form's version: raise it with any change to what to_fp16 writes, so that the
# workflow converts every model again (a param of rules convert_fp16 and int8_fp16_form)
FP16_VERSION = 2


def to_fp16(fp32_onnx, out):
    """Convert weights and arithmetic to fp16, keeping float32 input and output, and the
    reductions of FP32_REDUCTIONS in float32 (with casts around them).

    Given a Q/DQ model (int8-s8s8.onnx), the result is int8 where quantised and fp16
    elsewhere: the scales become fp16 too, which QuantizeLinear/DequantizeLinear accept from
    opset 19, so the model is marked opset 19 (nothing else it uses changed meaning).
    """
    import onnx
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    _require_file(fp32_onnx, "run the workflow's ONNX export step first or fix the path")
    model = onnx.load(str(fp32_onnx))
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < 19:
                opset.version = 19
    with warnings.catch_warnings():
        # one warning per weight below fp16's range that is clamped to 1e-7
        warnings.simplefilter("ignore", UserWarning)
        model16 = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_REDUCTIONS)
        )
    with atomic_output(out) as tmp:
        onnx.save(model16, tmp)


def choose_calibration_images(count, images, seed):
    """A seeded sample of ``images`` cache positions out of ``count``, in ascending order."""
    if images > count:
        raise UserError(
            f"calibration.images is {images} but the dataset has only {count} images;"
            f" set calibration.images to at most {count}"
        )
    if images < 1:
        raise UserError(f"calibration.images is {images}; set it to at least 1")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=images, replace=False))


class _Slice:
    """A calibration data reader that yields one normalised batch, then stops."""

    def __init__(self, batch):
        self._items = [{"input": batch}]

    def get_next(self):
        return self._items.pop() if self._items else None


def _quantisable_op_types():
    """The op types quantize_static quantises by default: only their tensors need ranges."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def entropy_threshold(histogram, num_quantized_bins):
    """ONNX Runtime's entropy threshold of one tensor's histogram, computed as its
    ``HistogramCollector.get_entropy_threshold`` does, with the same result, but with the
    per-bin Python loops of each candidate threshold written as array operations.

    ONNX Runtime's own takes about 1.4 ms per candidate (960 candidates per tensor at 2,048
    bins): inception_v3's 233 tensors took 315 s of a 349 s calibration on the H200's host.
    The KL divergence of each candidate still comes from ONNX Runtime's ``entropy`` and
    ``smooth_distribution``, so that the choice is the same to the last bit
    (tests/test_precision.py compares the two).
    """
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist, hist_edges = histogram[0], histogram[1]
    num_bins = hist.size
    zero_bin_index = num_bins // 2
    num_half_quantized_bin = num_quantized_bins // 2
    dtype = hist_edges.dtype
    # outliers left of index k: the sum of hist[:k], summed in order as Python's sum() does
    before = np.concatenate([np.zeros(1, dtype=hist.dtype), np.cumsum(hist)])
    total = before[-1]
    candidates = range(num_half_quantized_bin, zero_bin_index + 1)
    kl_divergence = np.zeros(len(candidates))
    thresholds = []
    for i in candidates:
        start_index = zero_bin_index - i
        end_index = min(zero_bin_index + i + 1, num_bins)
        thresholds.append((hist_edges[start_index], hist_edges[end_index]))
        sliced = hist[start_index:end_index]
        p = sliced.copy()
        p[0] += before[start_index]
        p[-1] += total - before[end_index]
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // num_quantized_bins
        body = num_quantized_bins * merged
        quantized_bins = sliced[:body].reshape(num_quantized_bins, merged).sum(axis=1).astype(np.int64)
        quantized_bins[-1] += sliced[body:].sum()
        norm = nonzeros[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        spread = np.zeros(num_quantized_bins, dtype=np.int64)
        filled = norm != 0
        spread[filled] = quantized_bins[filled] / norm[filled]  # truncated, as ONNX Runtime's
        q[:body] = np.repeat(spread, merged)
        p, q = smooth_distribution(p), smooth_distribution(q)
        if p is None or q is None:
            div = np.array(np.inf, dtype=dtype)
        else:
            div = np.array(entropy(p, q), dtype=dtype)
        kl_divergence[i - num_half_quantized_bin] = div
    optimal_threshold = thresholds[int(np.argmin(kl_divergence))]
    min_value, max_value = histogram[2], histogram[3]
    if optimal_threshold[0] < min_value:
        optimal_threshold = (min_value, optimal_threshold[1])
    if optimal_threshold[1] > max_value:
        optimal_threshold = (optimal_threshold[0], max_value)
    return optimal_threshold


def _calibrate(model_path, cache, picks, method, workdir):
    """Run ONNX Runtime's calibrator once over the picked cache images; return its ranges."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrate_method, options = {
        "entropy": (
            CalibrationMethod.Entropy,
            {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": QUANTIZED_BINS},
        ),
        "minmax": (CalibrationMethod.MinMax, {}),
        "percentile": (CalibrationMethod.Percentile, {"num_bins": HISTOGRAM_BINS}),
    }[method]
    calibrator = create_calibrator(
        Path(model_path),
        _quantisable_op_types(),
        augmented_model_path=str(Path(workdir) / "augmented.onnx"),
        calibrate_method=calibrate_method,
        providers=["CPUExecutionProvider"],
        extra_options=options,
    )
    batches, progress = 0, Progress(f"calibrate ({method})", len(picks))
    # an ONNX file with a fixed batch takes slices of that size only (the config's
    # calibration.images is a multiple of it: configcheck)
    step = _input_batch(model_path) or CALIBRATION_BATCH
    for start in range(0, len(picks), step):
        rows = picks[start : start + step]
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints, once per slice
            calibrator.collect_data(_Slice(normalise_nchw(cache[rows])))
        batches += 1
        progress.update(start + len(rows))
    progress.finish()
    if method == "entropy":  # the same thresholds, found about ten times faster
        calibrator.collector.get_entropy_threshold = entropy_threshold
    with contextlib.redirect_stdout(io.StringIO()):
        ranges = calibrator.compute_data()
    return calibrate_method, ranges, batches


def _drop_unused_domains(model_path):
    """Remove opset imports no node uses (ONNX Runtime's optimiser lists all of its own)."""
    import onnx

    model = onnx.load(str(model_path))
    used = {node.domain for node in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save(model, str(model_path))


def _input_batch(model_path):
    """The ONNX model's fixed batch, or None where its batch axis is dynamic."""
    import onnx

    first = onnx.load(str(model_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return first.dim_value if first.HasField("dim_value") and first.dim_value > 0 else None


def _input_crop(model_path):
    """The (height, width) of the ONNX model's input."""
    import onnx

    dims = onnx.load(str(model_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims[2:])


def calibrate_int8(fp32_onnx, cache_npy, rows, images, method, out_s8s8, out_u8s8, out_list, seed=0):
    """Calibrate once, then write the S8S8 and U8S8 Q/DQ models and the calibration list.

    ``cache_npy`` is the uint8 NHWC cache in dataset-index order and ``rows`` the index's
    (file, label) pairs, one per cached image. ``images`` images are drawn with ``seed``.
    The ranges are computed once and saved as ONNX Runtime's calibration cache; both
    ``quantize_static`` calls read that cache (they get no data reader, so they cannot
    calibrate again). Each call derives its own scales from the same ranges: symmetric
    [-absmax, absmax] for S8S8, asymmetric [min(lo, 0), max(hi, 0)] for U8S8.

    Returns a summary: images, method, calibration batches, calibrated tensors, seconds.
    """
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
        save_tensors_data,
    )

    if method not in METHODS:
        raise UserError(f"calibration.method is {method!r}; choose one of {', '.join(METHODS)}")
    _require_file(fp32_onnx, "run the workflow's ONNX export step first or fix the path")
    _require_file(cache_npy, "run the workflow's preprocessing step first or fix the path")
    cache = np.load(cache_npy, mmap_mode="r")
    if len(rows) != len(cache):
        raise UserError(
            f"{cache_npy} holds {len(cache)} images but the dataset index has {len(rows)} rows;"
            " delete the cache so that it is rebuilt from the index"
        )
    crop = _input_crop(fp32_onnx)
    if cache.ndim != 4 or tuple(cache.shape[1:3]) != crop or cache.shape[3] != 3:
        raise UserError(
            f"{cache_npy} holds images of shape {cache.shape[1:]} but {fp32_onnx} takes"
            f" {crop[0]}x{crop[1]} RGB; calibrate with the cache of the model's crop"
        )
    picks = choose_calibration_images(len(cache), images, seed)

    started = time.perf_counter()
    Path(out_s8s8).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out_s8s8).parent, prefix=".calibrate.") as work:
        work = Path(work)
        prepared = work / "prepared.onnx"
        # ONNX's own shape inference gives every tensor's shape in these CNNs (only the batch
        # is symbolic); ONNX Runtime's symbolic one, for graphs whose shapes are computed, took
        # half of this preparation (alexnet 13.4 s -> 7.1 s, resnet50 5.2 -> 1.7) and changes
        # no node or initializer of the Q/DQ models that come out
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        _drop_unused_domains(prepared)
        calibrate_method, ranges, batches = _calibrate(prepared, cache, picks, method, work)
        ranges_json = work / "ranges.json"
        save_tensors_data(ranges, ranges_json)

        common = dict(
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
            calibration_cache_path=ranges_json,
        )
        forms = (
            # TensorRT: symmetric int8 on the inputs of the weighted layers only (Conv,
            # Gemm, MatMul: activations and weights), their outputs left in float, as
            # NVIDIA's Q/DQ placement guidance asks: TensorRT then fuses Conv+bias+ReLU and
            # chooses where to requantise, and the final Gemm returns float logits. Biases
            # stay float (its ONNX parser rejects a DequantizeLinear of an int32 bias).
            (
                out_s8s8,
                QuantType.QInt8,
                WEIGHTED_OPS,
                {
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,
                    "OpTypesToExcludeOutputQuantization": WEIGHTED_OPS,
                },
            ),
            # ONNX Runtime CPU: uint8 activations, int8 weights, int32 biases, every op
            # ONNX Runtime quantises (its QLinear kernels chain int8 from op to op), except
            # that Gemm and MatMul outputs stay float: the logits are not rounded to 255 levels.
            (
                out_u8s8,
                QuantType.QUInt8,
                None,
                {
                    "ActivationSymmetric": False,
                    "WeightSymmetric": True,
                    "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
                },
            ),
        )
        for out, activation_type, op_types, extra in forms:
            with atomic_output(out) as tmp:
                quantize_static(
                    str(prepared),
                    tmp,
                    activation_type=activation_type,
                    op_types_to_quantize=op_types,
                    extra_options=extra,
                    **common,
                )

    with atomic_output(out_list) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "file", "label"])
        for i in picks:
            writer.writerow([int(i), *rows[i]])

    return {
        "images": int(len(picks)),
        "method": method,
        "calibration_batches": batches,
        "tensors": len(ranges.data),
        "seconds": time.perf_counter() - started,
    }
