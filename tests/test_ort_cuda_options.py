"""benchmarks/ort_cuda_options.py end to end on the CPU provider, with a tiny real model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]


def tiny_cnn(path):
    """A real convolutional classifier, small: conv 3->4 (3x3), ReLU, global average pool,
    a 4->10 dense layer; input "input" (batch, 3, 16, 16), output "logits"."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_the_sweep_runs_on_the_cpu_and_says_the_cuda_options_are_absent(tmp_path):
    model = tmp_path / "tiny" / "fp32.onnx"
    model.parent.mkdir()
    tiny_cnn(str(model))
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/ort_cuda_options.py"), "--device", "cpu", "--onnx", str(model),
         "--batch-size", "2", "4", "--warmup", "1", "--timed", "3", "--windows", "2", "--rounds", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith("On the CPU: prefer_nhwc and cudnn_conv_algo_search are CUDA provider options, absent")
    speed = out[out.index("| file | batch | CPU provider |") + 2 :][:2]
    assert [row.split(" | ")[1] for row in speed] == ["2", "4"]
    assert all(float(row.split(" | ")[2].rstrip(" |*").replace(",", "")) > 0 for row in speed)
    # the settings as the sessions reported them: one thread, no CUDA options
    assert any(
        '"threads": 1' in line and '"prefer_nhwc": null' in line for line in out if line.startswith("- CPU provider:")
    )
    # two rounds of two batch sizes: four timed sessions
    assert proc.stderr.count("CPU provider:") == 4


def test_a_missing_file_is_one_sentence(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/ort_cuda_options.py"), "--device", "cpu", "--onnx", str(tmp_path / "no.onnx")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"infbench: {tmp_path / 'no.onnx'} does not exist; give the workflow's ONNX files"
        " (results/onnx/<model>/fp16.onnx, ...)"
    )


def test_on_cuda_every_combination_of_the_two_options_is_timed():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from ort_cuda_options import column, combinations

    assert [column(c) for c in combinations("cuda")] == [
        "NCHW EXHAUSTIVE", "NCHW HEURISTIC", "NCHW DEFAULT", "NHWC EXHAUSTIVE", "NHWC HEURISTIC", "NHWC DEFAULT",
    ]  # fmt: skip
    assert combinations("cpu") == [{}]
