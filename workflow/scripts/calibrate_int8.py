"""Calibrate an fp32 ONNX once on cached images; write the S8S8 and U8S8 Q/DQ models.

S8S8 (symmetric int8 activations and weights) is the form TensorRT takes; U8S8 (uint8
asymmetric activations, int8 weights) is the form ONNX Runtime runs fastest on x86 CPUs.
Both come from the same tensor ranges. The calibration images are listed in --out-list.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infbench.data import read_index  # noqa: E402
from infbench.errors import main_guard  # noqa: E402
from infbench.precision import METHODS, calibrate_int8  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True, help="the fp32 .onnx")
    parser.add_argument("--cache", required=True, help="uint8 NHWC .npy cache at the model's crop")
    parser.add_argument("--index", required=True, help="the dataset's index.tsv (cache order)")
    parser.add_argument("--images", required=True, type=int, help="how many images to calibrate on")
    parser.add_argument("--method", default="entropy", choices=METHODS)
    parser.add_argument("--out-s8s8", required=True, help="symmetric int8 Q/DQ .onnx (TensorRT)")
    parser.add_argument("--out-u8s8", required=True, help="uint8/int8 Q/DQ .onnx (ONNX Runtime CPU)")
    parser.add_argument("--out-list", required=True, help="TSV of the calibration images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    args = parser.parse_args()
    summary = calibrate_int8(
        args.onnx,
        args.cache,
        read_index(args.index),
        args.images,
        args.method,
        args.out_s8s8,
        args.out_u8s8,
        args.out_list,
        seed=args.seed,
    )
    print(
        f"calibrated {summary['tensors']} tensors on {summary['images']} images"
        f" ({summary['method']}, {summary['calibration_batches']} batches) in"
        f" {summary['seconds']:.1f} s; wrote {args.out_s8s8} and {args.out_u8s8}"
    )


if __name__ == "__main__":
    main_guard(main)
