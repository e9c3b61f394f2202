"""Which CUDA math libraries TensorRT opens on this machine, and whether it builds with them.

    LD_DEBUG=files $TRTPY benchmarks/h200/libcheck.py 2>ld.log; grep 'opening file=' ld.log

Builds a small network (convolution, ReLU, global average pool, fully connected; fp32 and
fp16, batch 8) through infbench's own build (``build.build_serialized``) with TensorRT's
default tactic sources (what the run uses) and with only the external ones (CUBLAS,
CUBLAS_LT, CUDNN), so that cuBLAS, cuBLASLt and cuDNN are called for certain; with
--tactic-sources, with those only (the stand-ins' run: TensorRT's own kernels).
Prints one line per build: built or not, seconds, the sources in effect, TensorRT's first
error. With the pack's pruned cuDNN (benchmarks/h200/pack.sh) a sub-library it lacks would
show here, in seconds, instead of in the middle of the run. Needs TensorRT and a GPU.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "workflow", "scripts"))

from infbench.errors import main_guard  # noqa: E402
from infbench.runtimes.tensorrt import build as engine  # noqa: E402

EXTERNAL = ["CUBLAS", "CUBLAS_LT", "CUDNN"]


def small_network(path):
    """A float32 ONNX (opset 17): input [batch, 3, 32, 32] -> Conv 3x3 (16) -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm (10) -> logits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "libcheck",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tactic-sources", help="comma-separated TacticSource names: build with these only (stand-ins: their run's)"
    )
    args = parser.parse_args()
    source_sets = [None, EXTERNAL] if args.tactic_sources is None else [args.tactic_sources.split(",")]
    trt = engine.import_tensorrt()
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        path = small_network(os.path.join(work, "small.onnx"))
        with open(path, "rb") as f:
            data = f.read()
        shapes = engine.profile_shapes(path, 8)
        for precision in ("fp32", "fp16"):
            for sources in source_sets:
                options = engine.build_options(precision, 8, 1024, False, sources, None)
                built = engine.build_serialized(trt, data, path, shapes, options, what="libcheck")
                ok = built["plan"] is not None
                failed += not ok
                print(
                    f"libcheck {precision} tactic sources {sources or 'default'}"
                    f" ({', '.join(built['flags']['tactic_sources'])}): {'built' if ok else 'FAILED'}"
                    f" in {built['seconds']:.1f} s{': ' + built['errors'][0] if built['errors'] else ''}",
                    flush=True,
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
