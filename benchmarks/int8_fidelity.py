"""int8 fidelity and ONNX Runtime CPU int8 speed, before and after the inputs-only Q/DQ placement.

For each model: seeded random weights with calibrated activation scale (the workflow's
``checkpoint: {random: 0}``), the fp32 ONNX, a cache of real images (default: the 500
ImageNet images of ../shared/data/imagenet-sample), and one calibration (entropy by
default), from whose ranges four int8 files are written:

    before s8s8: symmetric Q/DQ around every op ONNX Runtime quantises, outputs too (so the
                 logits were rounded to 255 levels); the TensorRT form until issue #7
    after s8s8:  Q/DQ on the inputs of Conv, Gemm and MatMul only; float logits (today's)
    before u8s8: uint8 activations through every op it quantises, Gemm output quantised too
    after u8s8:  the same, Gemm and MatMul outputs float (today's ONNX Runtime CPU form)

Each is evaluated on ONNX Runtime's CPU provider over every image and compared with fp32
(mismatches of top-1, mean logit cosine, relative error of the logits, as the precision
table computes them); the U8S8 files are also timed (the workflow's harness, batch 8).

    PYTHONPATH=workflow/scripts .venv/bin/python benchmarks/int8_fidelity.py --models resnet50
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench import metrics, precision, runtimes, timing  # noqa: E402
from infbench.checkpoints import random_checkpoint  # noqa: E402
from infbench.data import index_imagenet, preprocess  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402
from infbench.weights import convert_checkpoint  # noqa: E402

SIZES = {"alexnet": (256, 224), "vgg16": (256, 224), "resnet50": (256, 224), "inception_v3": (342, 299)}
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def forms():
    from onnxruntime.quantization import QuantType

    weighted = precision.WEIGHTED_OPS
    return {
        "before s8s8": (
            QuantType.QInt8,
            None,
            {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        ),
        "after s8s8": (
            QuantType.QInt8,
            weighted,
            {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "OpTypesToExcludeOutputQuantization": weighted,
            },
        ),
        "before u8s8": (QuantType.QUInt8, None, {"ActivationSymmetric": False, "WeightSymmetric": True}),
        "after u8s8": (
            QuantType.QUInt8,
            None,
            {
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
            },
        ),
    }


def quantise(fp32, cache, picks, method, work):
    """One calibration; the four forms written from its ranges: {form: path}."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static, save_tensors_data

    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    precision._drop_unused_domains(prepared)
    calibrate_method, ranges, _ = precision._calibrate(prepared, cache, picks, method, work)
    ranges_json = work / "ranges.json"
    save_tensors_data(ranges, ranges_json)
    out = {}
    for name, (activation, op_types, extra) in forms().items():
        out[name] = work / f"{name.replace(' ', '-')}.onnx"
        quantize_static(
            str(prepared),
            str(out[name]),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            activation_type=activation,
            op_types_to_quantize=op_types,
            extra_options=extra,
            calibrate_method=calibrate_method,
            calibration_cache_path=ranges_json,
        )
    return out


def session(onnx, arch, precision_name, batch_size, crop):
    spec = SessionSpec("onnxruntime", arch, arch, precision_name, batch_size, "cpu", str(onnx), crop, {})
    return runtimes.load("onnxruntime").open_session(spec)


def speed_only(args, rounds=4):
    """The U8S8 forms of each model in --work, before and after, timed in alternation."""
    print("| model | ORT CPU int8 img/s, before u8s8 | after u8s8 | after / before |")
    print("|---|---|---|---|")
    for arch in args.models:
        work = Path(args.work) / arch
        crop = SIZES[arch][1]
        cache = np.load(work / "cache.npy", mmap_mode="r")
        batches = [np.asarray(cache[i * 8 : (i + 1) * 8]) for i in range(4)]
        sessions = {name: session(work / f"{name}-u8s8.onnx", arch, "int8", 8, crop) for name in ("before", "after")}
        rates = {name: [] for name in sessions}
        for r in range(rounds):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                rates[name].append(timing.measure(sessions[name], batches, 3, 10, 3)["images_per_s"])
        before, after = (float(np.median(rates[n])) for n in ("before", "after"))
        print(f"| {arch} | {before:.1f} | {after:.1f} | {after / before:.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SIZES))
    parser.add_argument("--root", default=str(SAMPLE / "val"))
    parser.add_argument("--labels", default=str(SAMPLE / "val_map.txt"))
    parser.add_argument("--calibration", type=int, default=100, help="calibration images")
    parser.add_argument("--method", default="entropy", choices=sorted(precision.METHODS))
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--work", default=None, help="keep the files here (default: a temporary folder)")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="time the before/after U8S8 files already in --work, alternating, on a quiet machine",
    )
    args = parser.parse_args()
    if args.speed_only:
        return speed_only(args)
    rows = index_imagenet(args.root, labels=args.labels)
    print(f"{len(rows)} images of {args.root}; calibration {args.method} on {args.calibration}")
    print("| model | form | mismatches vs fp32 | cosine | rel. error | ORT CPU img/s (bs 8) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.work or scratch)
        for arch in args.models:
            work = root / arch
            work.mkdir(parents=True, exist_ok=True)
            resize, crop = SIZES[arch]
            random_checkpoint(arch, 0, work / "random.pth")
            convert_checkpoint(arch, str(work / "random.pth"), str(work / "weights.safetensors"))
            fp32 = work / "fp32.onnx"
            precision.export_fp32(arch, str(work / "weights.safetensors"), crop, str(fp32))
            cache_npy = work / "cache.npy"
            preprocess(rows, resize, crop, cache_npy, workers=os.cpu_count())
            cache = np.load(cache_npy, mmap_mode="r")
            picks = precision.choose_calibration_images(len(cache), args.calibration, 0)
            started = time.perf_counter()
            files = quantise(fp32, cache, picks, args.method, work)
            print(f"<!-- {arch}: calibration and four forms in {time.perf_counter() - started:.0f} s -->", flush=True)
            ref_top5, ref_logits, _ = metrics.evaluate(
                session(fp32, arch, "fp32", args.batch_size, crop), cache, args.batch_size, len(cache)
            )
            for name, path in files.items():
                top5, logits, nonfinite = metrics.evaluate(
                    session(path, arch, "int8", args.batch_size, crop), cache, args.batch_size, len(cache)
                )
                got = metrics.score(top5, np.zeros(len(cache), int), logits, (ref_top5, ref_logits), nonfinite)
                speed = ""
                if "u8s8" in name:
                    batches = [np.asarray(cache[i * 8 : (i + 1) * 8]) for i in range(4)]
                    timed = timing.measure(session(path, arch, "int8", 8, crop), batches, 3, 10, 3)
                    speed = f"{timed['images_per_s']:.1f} (spread {timed['spread']:.1%})"
                print(
                    f"| {arch} | {name} | {got['mismatches']} of {got['images']} | {got['cosine']:.5f} |"
                    f" {got['rel_error']:.3f} | {speed} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
