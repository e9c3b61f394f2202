"""Entropy calibration's threshold search: ONNX Runtime's own against infbench's, same data.

Collects ONNX Runtime's histograms once (its HistogramCollector, 2,048 bins, 128 quantised
bins, as the workflow's calibration does), then times ``compute_collection_result`` with
ONNX Runtime's ``get_entropy_threshold`` and with ``infbench.precision.entropy_threshold``
on copies of the same histograms, and says whether every tensor's thresholds are equal.

    PYTHONPATH=workflow/scripts .venv/bin/python benchmarks/entropy_speed.py \\
        results/onnx/inception_v3/fp32.onnx results/cache/synthetic/342-299.npy --images 16
"""

import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench import precision  # noqa: E402
from infbench.runtimes.base import normalise_nchw  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", help="an fp32 ONNX of the workflow")
    parser.add_argument("cache", help="its uint8 NHWC tensor cache (.npy)")
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    cache = np.load(args.cache, mmap_mode="r")
    with tempfile.TemporaryDirectory() as work:
        calibrator = create_calibrator(
            Path(args.onnx),
            precision._quantisable_op_types(),
            augmented_model_path=os.path.join(work, "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            providers=["CPUExecutionProvider"],
            extra_options={"num_bins": precision.HISTOGRAM_BINS, "num_quantized_bins": precision.QUANTIZED_BINS},
        )
        started = time.perf_counter()
        for start in range(0, args.images, precision.CALIBRATION_BATCH):
            batch = np.asarray(cache[start : min(start + precision.CALIBRATION_BATCH, args.images)])
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator.collect_data(precision._Slice(normalise_nchw(batch)))
        collector = calibrator.collector
        print(f"histograms of {len(collector.histogram_dict)} tensors over {args.images} images:"
              f" {time.perf_counter() - started:.1f} s")  # fmt: skip
        histograms = copy.deepcopy(collector.histogram_dict)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = collector.compute_collection_result()
        print(f"ONNX Runtime's threshold search: {time.perf_counter() - started:.1f} s")
        collector.histogram_dict = histograms
        collector.get_entropy_threshold = precision.entropy_threshold
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            ours = collector.compute_collection_result()
        print(f"infbench's threshold search: {time.perf_counter() - started:.1f} s")
    same = sum(theirs[k][0] == ours[k][0] and theirs[k][1] == ours[k][1] for k in theirs)
    print(f"equal thresholds: {same} of {len(theirs)} tensors")


if __name__ == "__main__":
    main()
