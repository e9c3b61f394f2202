"""TensorRT engine build decisions, the cuda-python layer and the TensorRT runtime.

Everything that needs neither TensorRT nor a GPU runs everywhere: profile shapes and I/O
names read from a real torchvision ONNX export, sidecar matching and rebuild decisions for
each field, the shared timing-cache file under concurrent writers, and the error
sentences. Tests that need cuda-python and a GPU, or TensorRT, skip with a reason.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(os.path.dirname(HERE), "workflow", "scripts")
sys.path.insert(0, SCRIPTS)

from infbench.runtimes.tensorrt import build as engine  # noqa: E402
from infbench.errors import UserError  # noqa: E402
from infbench.runtimes import load  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_TENSORRT = "TensorRT is not installed in this interpreter (it lives in .venv-tensorrt, Python 3.10: make env-tensorrt)"


def _cudart():
    try:
        from infbench.runtimes.tensorrt import cudart
    except ImportError:
        return None
    return cudart


CUDART = _cudart()
HAVE_GPU = CUDART is not None and CUDART.device_count() > 0
needs_cuda_python = pytest.mark.skipif(CUDART is None, reason="cuda-python is not installed here")
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU (or no cuda-python) on this machine")
_skip_without_tensorrt = pytest.mark.skipif(not (HAVE_TENSORRT and HAVE_GPU), reason=NO_TENSORRT + ", or no GPU")


def needs_tensorrt_gpu(test):
    """Marked ``tensorrt`` (see pytest.ini) and skipped unless TensorRT and a GPU are here."""
    return pytest.mark.tensorrt(_skip_without_tensorrt(test))

CROP = 64


# --- ONNX fixtures ----------------------------------------------------------------------


def export_resnet50(path, crop):
    """resnet50 with seeded random weights, exported as infbench.precision.export_fp32 does.

    (torch.export-based exporter, input "input" / output "logits", dynamic batch axis.)
    Kept here rather than calling export_fp32, which needs a weights file and is another
    helper's code; the ONNX reader under test only looks at names and shapes.
    """
    import torch

    from infbench.models import build_torch
    from infbench.precision import OPSET

    model = build_torch("resnet50", seed=0).eval()
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, crop, crop),),
        path,
        opset_version=OPSET,
        external_data=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        dynamo=True,
        verbose=False,
    )


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """results/onnx/r50/fp32.onnx exported from torchvision, and the engines folder beside it."""
    root = tmp_path_factory.mktemp("results")
    onnx_dir = root / "onnx" / "r50"
    onnx_dir.mkdir(parents=True)
    (root / "engines" / "r50").mkdir(parents=True)
    export_resnet50(str(onnx_dir / "fp32.onnx"), CROP)
    return root


@pytest.fixture(scope="module")
def onnx_path(layout):
    return str(layout / "onnx" / "r50" / "fp32.onnx")


def tiny_onnx(path, input_dims):
    """A one-node ONNX (Identity) whose input has the given dims (ints or names)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, input_dims)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, input_dims)
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), path)
    return path


# --- I/O names and the optimisation profile ------------------------------------------


def test_io_names_match_the_onnx_file(onnx_path):
    import onnxruntime

    names = engine.io_names(onnx_path)
    assert names == {"inputs": ["input"], "outputs": ["logits"]}
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert names["inputs"] == [i.name for i in session.get_inputs()]
    assert names["outputs"] == [o.name for o in session.get_outputs()]


@pytest.mark.parametrize("batch_size", [8, 50])
def test_profile_shapes_pin_the_batch_of_a_torchvision_export(onnx_path, batch_size):
    shape = (batch_size, 3, CROP, CROP)
    assert engine.profile_shapes(onnx_path, batch_size) == {"input": (shape, shape, shape)}


def test_profile_shapes_accept_a_matching_fixed_batch(tmp_path):
    path = tiny_onnx(str(tmp_path / "m.onnx"), [4, 3, 32, 32])
    assert engine.profile_shapes(path, 4) == {"input": ((4, 3, 32, 32),) * 3}


def test_profile_shapes_reject_another_fixed_batch(tmp_path):
    path = tiny_onnx(str(tmp_path / "m.onnx"), [4, 3, 32, 32])
    with pytest.raises(UserError, match="fixed batch of 4, not 8; re-export it with a dynamic batch axis") as err:
        engine.profile_shapes(path, 8)
    assert path in str(err.value)


def test_profile_shapes_reject_a_dynamic_crop(tmp_path):
    path = tiny_onnx(str(tmp_path / "m.onnx"), ["batch", 3, "h", "w"])
    with pytest.raises(UserError, match="dynamic axes besides the batch"):
        engine.profile_shapes(path, 8)


def test_a_broken_onnx_file_is_a_user_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07not a protobuf model at all")
    with pytest.raises(UserError, match="not a readable ONNX file"):
        engine.io_names(str(path))


def test_onnx_for_engine_follows_the_workflow_layout(tmp_path):
    plan = tmp_path / "results" / "engines" / "resnet50" / "int8-bs50.plan"
    expected = tmp_path / "results" / "onnx" / "resnet50" / "int8-s8s8.onnx"
    assert engine.onnx_for_engine(str(plan), "int8") == str(expected)
    assert engine.onnx_for_engine(str(plan).replace("int8", "fp16"), "fp16").endswith("/onnx/resnet50/fp16.onnx")
    assert engine.default_timing_cache(str(plan)) == str(tmp_path / "results" / "engines" / "timing.cache")
    assert engine.sidecar_path(str(plan)) == str(plan)[: -len(".plan")] + ".json"
    with pytest.raises(UserError, match="bf16"):
        engine.onnx_for_engine(str(plan), "bf16")


# --- the API generation: network flags, precision flags, tactic sources ----------------

# TensorRT 8.6.0's enums as its wheel defines them (read from `import tensorrt` here)
TRT86_TACTIC_SOURCES = {"CUBLAS": 0, "CUBLAS_LT": 1, "CUDNN": 2, "EDGE_MASK_CONVOLUTIONS": 3, "JIT_CONVOLUTIONS": 4}
TRT11_TACTIC_SOURCES = {"EDGE_MASK_CONVOLUTIONS": 0, "JIT_CONVOLUTIONS": 1}


@pytest.mark.parametrize("version, generation", [
    ("8.5.3.1", 8), ("8.6.0", 8), ("9.3.0.1", 8), ("10.0.1", 10), ("10.13.3.9", 10), ("11.4.0.106", 11),
])
def test_each_version_speaks_its_api_generation(version, generation):
    assert engine.api_generation(version) == generation


@pytest.mark.parametrize("version", ["8.4.3.1", "7.2.3"])
def test_tensorrt_before_8_5_is_refused(version):
    with pytest.raises(UserError, match=f"TensorRT {version} is too old: infbench needs 8.5 or later"):
        engine.api_generation(version)


def test_tensorrt_8_asks_for_an_explicit_batch_network():
    # 8.6's NetworkDefinitionCreationFlag: EXPLICIT_BATCH = 0, EXPLICIT_PRECISION = 1
    assert engine.network_creation_flags("8.6.0", strongly_typed_bit=None, explicit_batch_bit=0) == 1


def test_tensorrt_10_asks_for_a_strongly_typed_network():
    assert engine.network_creation_flags("10.13.3.9", 1, 0) == 1 << 1


@pytest.mark.parametrize("strongly_typed_bit", [0, 1, None])
def test_tensorrt_11_passes_no_flag(strongly_typed_bit):
    assert engine.network_creation_flags("11.4.0.106", strongly_typed_bit) == 0


@pytest.mark.parametrize("version, bits, missing", [
    ("8.6.0", (1, None), "EXPLICIT_BATCH"), ("10.0.0", (None, 0), "STRONGLY_TYPED"),
])
def test_a_missing_creation_flag_is_named(version, bits, missing):
    with pytest.raises(UserError, match=f"TensorRT {version} has no NetworkDefinitionCreationFlag.{missing}"):
        engine.network_creation_flags(version, *bits)


@pytest.mark.parametrize("precision, flags", [("fp32", []), ("fp16", ["FP16"]), ("int8", ["INT8", "FP16"])])
def test_tensorrt_8_sets_the_precision_by_builder_flags(precision, flags):
    assert engine.precision_flags("8.6.0", precision) == flags


@pytest.mark.parametrize("version", ["10.13.3.9", "11.4.0.106"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_strongly_typed_networks_take_their_precision_from_the_onnx(version, precision):
    assert engine.precision_flags(version, precision) == []


def test_tactic_sources_become_a_bit_mask_and_back():
    names = ["JIT_CONVOLUTIONS", "EDGE_MASK_CONVOLUTIONS"]
    assert engine.tactic_source_mask(names, TRT86_TACTIC_SOURCES) == 0b11000
    assert engine.tactic_source_mask(names, TRT11_TACTIC_SOURCES) == 0b11
    assert engine.tactic_source_names(0b11000, TRT86_TACTIC_SOURCES) == sorted(names)
    assert engine.tactic_source_names(0b00101, TRT86_TACTIC_SOURCES) == ["CUBLAS", "CUDNN"]


def test_a_tactic_source_this_tensorrt_lacks_is_a_config_error():
    with pytest.raises(UserError) as err:
        engine.tactic_source_mask(["CUDNN", "JIT_CONVOLUTIONS"], TRT11_TACTIC_SOURCES)
    assert str(err.value) == (
        "config key runtimes.tensorrt.tactic_sources: this TensorRT has no tactic source CUDNN"
        " (it has EDGE_MASK_CONVOLUTIONS, JIT_CONVOLUTIONS); remove it"
    )


def test_int8_engines_of_strongly_typed_tensorrt_use_the_fp16_form(tmp_path):
    s8s8 = tmp_path / "int8-s8s8.onnx"
    s8s8.write_bytes(b"")
    assert engine.onnx_for_generation(str(s8s8), "int8", 10) == str(s8s8)  # no fp16 form made
    (tmp_path / "int8-s8s8-fp16.onnx").write_bytes(b"")
    for generation, expected in ((8, s8s8), (10, tmp_path / "int8-s8s8-fp16.onnx"), (11, tmp_path / "int8-s8s8-fp16.onnx")):
        assert engine.onnx_for_generation(str(s8s8), "int8", generation) == str(expected)
    fp16 = tmp_path / "fp16.onnx"
    assert engine.onnx_for_generation(str(fp16), "fp16", 11) == str(fp16)


def test_engine_options_come_from_the_config_block_with_defaults():
    block = {"device": "cuda", "precisions": ["fp16"], "cuda_graphs": True, "python": "x",
             "tactic_sources": ["JIT_CONVOLUTIONS", "EDGE_MASK_CONVOLUTIONS"]}
    assert engine.options_from_config(block, "fp16", 8) == {
        "precision": "fp16", "batch_size": 8, "workspace_mib": 4096, "allow_tf32": False,
        "tactic_sources": ["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"], "builder_optimization_level": None,
    }
    assert engine.options_from_config({"builder_optimization_level": 2}, "int8", 50)["builder_optimization_level"] == 2
    assert engine.options_from_config(None, "fp32", 1)["tactic_sources"] is None


def test_an_engine_is_timed_with_the_options_its_sidecar_records():
    sidecar = {"build": {"precision": "int8", "batch_size": 8, "workspace_mib": 2048, "allow_tf32": False,
                         "tactic_sources": ["JIT_CONVOLUTIONS"], "builder_optimization_level": 2}}
    settings = engine.settings_of_sidecar(sidecar)
    assert settings == {"workspace_mib": 2048, "allow_tf32": False, "tactic_sources": ["JIT_CONVOLUTIONS"],
                        "builder_optimization_level": 2}
    # asked for with these settings, the engine matches its own sidecar: nothing is rebuilt
    assert engine.options_from_config(settings, "int8", 8) == sidecar["build"]
    assert engine.settings_of_sidecar(None) == {}


TENSORRT_PYTHON = os.path.join(os.path.dirname(HERE), ".venv-tensorrt", "bin", "python")

# TensorRT 8.6.0 (the PyPI wheel `make env-tensorrt` installs) as the code meets it: the enum
# members it names, with their values, and the requirements the wheel's METADATA lists.
# Checked against the real bindings by the test after the next, wherever TensorRT is installed.
TRT86 = {
    "version": "8.6.0",
    "BuilderFlag": {"FP16", "INT8", "TF32"},  # the members the code sets (of 8.6's many)
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
    "TacticSource": TRT86_TACTIC_SOURCES,
    "requires": ["nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cublas-cu12", "numpy ; extra == 'numpy'"],
}
# the tactic sources the H200 runs limit TensorRT to (benchmarks/h200/run.sh, SOURCES)
RUN_SH_SOURCES = ["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"]


def test_what_the_code_asks_of_tensorrt_8_6_is_in_its_bindings():
    """Without TensorRT: each name the build code uses on 8.6.0 is one of 8.6.0's (as recorded
    above, from its bindings), and the wheel says the CUDA it was built for."""
    assert engine.api_generation(TRT86["version"]) == 8
    creation = TRT86["NetworkDefinitionCreationFlag"]
    assert engine.network_creation_flags(TRT86["version"], creation.get("STRONGLY_TYPED"), creation.get("EXPLICIT_BATCH")) == 1
    for precision in ("fp32", "fp16", "int8"):
        assert set(engine.precision_flags(TRT86["version"], precision)) <= TRT86["BuilderFlag"], precision
    assert "TF32" in TRT86["BuilderFlag"]  # set or cleared on every build (allow_tf32)
    assert engine.tactic_source_mask(RUN_SH_SOURCES, TRT86["TacticSource"]) == 0b11000
    assert engine.tactic_source_mask(sorted(TRT86["TacticSource"]), TRT86["TacticSource"]) == 0b11111
    assert engine.tensorrt_cuda_major({"tensorrt": TRT86["requires"]}) == 12


@pytest.mark.tensorrt
@pytest.mark.skipif(not os.path.exists(TENSORRT_PYTHON),
                    reason="needs TensorRT's Python bindings, in .venv-tensorrt (make env-tensorrt builds it, about 2 GB;"
                           " make test does not); no GPU needed. The names the code uses on 8.6.0 are checked"
                           " without it (test_what_the_code_asks_of_tensorrt_8_6_is_in_its_bindings)")
def test_the_installed_tensorrt_has_every_name_its_generation_uses():
    """Against the real bindings of `make env-tensorrt` (no GPU needed to read them); on
    8.6.0 also the record the TensorRT-free test above checks the code against."""
    script = """
import json, sys, tensorrt as trt
sys.path.insert(0, sys.argv[1])
from infbench.runtimes.tensorrt import build as engine
g = engine.api_generation(trt.__version__)
creation = trt.NetworkDefinitionCreationFlag
bits = [int(getattr(creation, n)) if hasattr(creation, n) else None for n in ("STRONGLY_TYPED", "EXPLICIT_BATCH")]
flags = engine.network_creation_flags(trt.__version__, *bits)
for p in ("fp32", "fp16", "int8"):
    for name in engine.precision_flags(trt.__version__, p):
        getattr(trt.BuilderFlag, name)
mask = engine.tactic_source_mask(["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"], dict(trt.TacticSource.__members__))
for cls, name in [(trt.IBuilderConfig, "builder_optimization_level"), (trt.IBuilderConfig, "set_tactic_sources"),
                  (trt.IBuilderConfig, "get_tactic_sources"), (trt.IBuilderConfig, "set_memory_pool_limit"),
                  (trt.IBuilderConfig, "create_timing_cache"), (trt.ITimingCache, "combine"),
                  (trt.OnnxParser, "parse"), (trt.IExecutionContext, "execute_async_v3"),
                  (trt.IExecutionContext, "set_tensor_address"), (trt.IExecutionContext, "set_input_shape"),
                  (trt.ICudaEngine, "num_io_tensors"), (trt.ICudaEngine, "get_tensor_mode")]:
    assert hasattr(cls, name), name
cuda = engine.tensorrt_cuda_major(engine.installed_tensorrt_packages())
print(trt.__version__, g, flags, mask, trt.BuilderFlag.TF32, cuda)
members = lambda enum: {n: int(v) for n, v in enum.__members__.items()}
print(json.dumps({"BuilderFlag": sorted(trt.BuilderFlag.__members__), "NetworkDefinitionCreationFlag": members(creation),
                  "TacticSource": members(trt.TacticSource), "requires": engine.installed_tensorrt_packages().get("tensorrt")}))
"""
    out = subprocess.run([TENSORRT_PYTHON, "-c", script, SCRIPTS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, real = out.stdout.splitlines()[:2]
    version, generation, flags, mask, tf32, cuda = first.split()
    assert generation == {"8": "8", "9": "8", "10": "10"}.get(version.split(".")[0], "11")
    assert cuda == "12" if version == "8.6.0" else cuda in ("12", "13")  # the CUDA its wheel was built for
    assert (generation, flags) != ("8", "0") and int(mask) > 0 and tf32 == "BuilderFlag.TF32"
    if version == TRT86["version"]:
        real = json.loads(real)
        assert TRT86["BuilderFlag"] <= set(real["BuilderFlag"])
        assert real["NetworkDefinitionCreationFlag"] == TRT86["NetworkDefinitionCreationFlag"]
        assert real["TacticSource"] == TRT86["TacticSource"]
        assert sorted(real["requires"]) == sorted(TRT86["requires"])


# --- ONNX opsets for TensorRT 8.x's parser --------------------------------------------


def test_an_opset_18_export_is_rewritten_as_opset_17_for_tensorrt_8(onnx_path):
    """Same model for ONNX Runtime, reductions with attribute axes, opset 17, valid ONNX."""
    import onnxruntime

    data, rewrite = engine.onnx_for_parser(onnx_path, 8)
    assert rewrite == "opset 18 rewritten as opset 17 for TensorRT's ONNX parser"
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert engine.default_opset(model) == 17
    reduce = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert len(reduce) == 1 and len(reduce[0].input) == 1
    assert {a.name: list(a.ints) for a in reduce[0].attribute}["axes"] == [-1, -2]
    x = np.random.default_rng(0).standard_normal((2, 3, CROP, CROP)).astype(np.float32)
    run = [onnxruntime.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for m in (onnx_path, data)]
    np.testing.assert_array_equal(run[0], run[1])


@pytest.mark.parametrize("generation", [10, 11])
def test_newer_tensorrt_reads_the_file_as_it_is(onnx_path, generation):
    data, rewrite = engine.onnx_for_parser(onnx_path, generation)
    assert rewrite is None
    with open(onnx_path, "rb") as f:
        assert data == f.read()


def opset18(nodes, initializers=()):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("model, words", [
    (opset18([helper.make_node("Shape", ["input"], ["s"]), helper.make_node("ReduceSum", ["input", "s"], ["logits"], name="r")]),
     "r takes its axes from a computed tensor; opset 17 needs constant axes"),
    (opset18([helper.make_node("Split", ["input"], ["logits", "b"], axis=1, num_outputs=2, name="s")]),
     "Split node s uses an opset-18 feature TensorRT 8.x cannot read"),
])
def test_what_opset_17_cannot_say_is_refused(model, words):
    with pytest.raises(UserError, match=words):
        engine.downgrade_to_opset17(model, "m.onnx")


# --- sidecar matching and rebuild decisions -----------------------------------------------


@pytest.mark.parametrize("packages, major", [
    ({"tensorrt": ["nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "numpy ; extra == 'numpy'"]}, 12),  # 8.6.0, PyPI
    ({"tensorrt-cu12": ["tensorrt_cu12_libs==10.13.3.9"], "tensorrt_cu12_libs": ["nvidia-cuda-runtime-cu12"],
      "tensorrt-cu12-bindings": []}, 12),
    ({"tensorrt_cu13_bindings": [], "tensorrt-cu13-libs": ["nvidia-cuda-runtime~=13.0"]}, 13),
    ({"tensorrt": []}, None),  # nothing says: not a guess
    ({"nvidia-cuda-runtime-cu11": [], "tensorrt": ["numpy"]}, None),  # another package's CUDA is not TensorRT's
])  # fmt: skip
def test_the_sidecar_records_the_cuda_tensorrt_was_built_for(packages, major):
    assert engine.tensorrt_cuda_major(packages) == major
    env = engine.environment_fingerprint("8.6.0", "NVIDIA H200", "9.0", "580.159.04", 13000, 12090, major)
    assert env["tensorrt_cuda"] == major and env["cuda_runtime"] == 12090  # cuda-python's, kept apart
    recorded = {**env, "tensorrt_cuda": 11}  # recorded, not compared: the TensorRT version fixes it
    assert engine.sidecar_matches({**sidecar_for(env), "environment": recorded}, env, ONNX_SHA, OPTIONS)[0]

ENV = engine.environment_fingerprint(
    tensorrt="10.13.3.9",
    gpu_name="NVIDIA H200",
    compute_capability="9.0",
    driver="580.159.04",
    cuda_driver=13000,
    cuda_runtime=13050,
)
OPTIONS = engine.build_options("fp16", 8, 4096, False)
ONNX_SHA = "ab" * 32


def sidecar_for(env=ENV, onnx_sha256=ONNX_SHA, options=OPTIONS, engine_sha256="cd" * 32):
    return {
        "format": engine.SIDECAR_FORMAT,
        "engine_sha256": engine_sha256,
        "onnx_sha256": onnx_sha256,
        "environment": dict(env),
        "build": dict(options),
    }


def test_a_matching_sidecar_matches():
    assert engine.sidecar_matches(sidecar_for(), ENV, ONNX_SHA, OPTIONS) == (True, "matches")


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("tensorrt", "11.4.0.106", "TensorRT version changed (10.13.3.9 -> 11.4.0.106)"),
        ("gpu_name", "NVIDIA A100-SXM4-80GB", "GPU model changed (NVIDIA H200 -> NVIDIA A100-SXM4-80GB)"),
        ("compute_capability", "8.0", "compute capability changed (9.0 -> 8.0)"),
        ("driver", "590.10.01", "NVIDIA driver changed (580.159.04 -> 590.10.01)"),
        ("driver", None, "NVIDIA driver changed (580.159.04 -> None)"),
        ("cuda_driver", 13010, "CUDA driver version changed (13000 -> 13010)"),
    ],
)
def test_each_environment_field_forces_a_rebuild(field, value, words):
    now = dict(ENV, **{field: value})
    assert engine.sidecar_matches(sidecar_for(), now, ONNX_SHA, OPTIONS) == (False, words)


def test_the_cuda_runtime_of_cuda_python_is_recorded_not_compared():
    now = dict(ENV, cuda_runtime=12090)
    assert engine.sidecar_matches(sidecar_for(), now, ONNX_SHA, OPTIONS)[0] is True


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("precision", "fp32", "precision changed (fp16 -> fp32)"),
        ("batch_size", 50, "batch size changed (8 -> 50)"),
        ("workspace_mib", 1024, "workspace limit (MiB) changed (4096 -> 1024)"),
        ("allow_tf32", True, "TF32 setting changed (False -> True)"),
        ("tactic_sources", ["JIT_CONVOLUTIONS"], "tactic sources changed (None -> ['JIT_CONVOLUTIONS'])"),
        ("builder_optimization_level", 5, "builder optimisation level changed (None -> 5)"),
    ],
)
def test_each_build_option_forces_a_rebuild(field, value, words):
    wanted = dict(OPTIONS, **{field: value})
    assert engine.sidecar_matches(sidecar_for(), ENV, ONNX_SHA, wanted) == (False, words)


def test_a_changed_onnx_forces_a_rebuild():
    ok, reason = engine.sidecar_matches(sidecar_for(), ENV, "ef" * 32, OPTIONS)
    assert (ok, reason) == (False, "the ONNX file changed (sha256 differs)")


def test_a_missing_onnx_is_not_compared():
    assert engine.sidecar_matches(sidecar_for(), ENV, None, OPTIONS)[0] is True


@pytest.mark.parametrize("sidecar", [None, [], {"format": 0}, {"format": engine.SIDECAR_FORMAT + 1}])
def test_a_sidecar_of_another_format_does_not_match(sidecar):
    ok, reason = engine.sidecar_matches(sidecar, ENV, ONNX_SHA, OPTIONS)
    assert not ok and "format" in reason


def test_build_options_refuse_an_unknown_precision():
    with pytest.raises(UserError, match="precision 'bf16' has no TensorRT engine form"):
        engine.build_options("bf16", 8, 4096, False)


@pytest.fixture
def built(tmp_path):
    """An engine file and a sidecar that matches it, ENV, ONNX_SHA and OPTIONS."""
    plan = tmp_path / "fp16-bs8.plan"
    plan.write_bytes(b"serialized engine bytes")
    sidecar = sidecar_for(engine_sha256=engine.sha256_file(str(plan)))
    (tmp_path / "fp16-bs8.json").write_text(json.dumps(sidecar))
    return str(plan)


def test_a_matching_engine_is_used(built):
    assert engine.needs_rebuild(built, ENV, ONNX_SHA, OPTIONS) == (False, "matches")


def test_a_missing_engine_is_built(tmp_path):
    plan = str(tmp_path / "fp16-bs8.plan")
    assert engine.needs_rebuild(plan, ENV, ONNX_SHA, OPTIONS) == (True, f"{plan} does not exist")


def test_an_engine_without_sidecar_is_rebuilt(built):
    os.remove(engine.sidecar_path(built))
    rebuild, reason = engine.needs_rebuild(built, ENV, ONNX_SHA, OPTIONS)
    assert rebuild and "missing or unreadable" in reason


def test_an_engine_with_a_corrupt_sidecar_is_rebuilt(built):
    with open(engine.sidecar_path(built), "w") as f:
        f.write('{"format": 1, "environ')
    rebuild, reason = engine.needs_rebuild(built, ENV, ONNX_SHA, OPTIONS)
    assert rebuild and "missing or unreadable" in reason


def test_an_engine_that_is_not_the_one_its_sidecar_describes_is_rebuilt(built):
    with open(built, "ab") as f:
        f.write(b"!")
    assert engine.needs_rebuild(built, ENV, ONNX_SHA, OPTIONS) == (
        True,
        "the engine file does not match its sidecar (sha256 differs)",
    )


def test_an_engine_from_another_tensorrt_is_rebuilt(built):
    rebuild, reason = engine.needs_rebuild(built, dict(ENV, tensorrt="11.4.0.106"), ONNX_SHA, OPTIONS)
    assert rebuild and reason.startswith("TensorRT version changed")


def test_a_cell_refuses_an_engine_built_for_another_gpu_model_in_one_sentence(built, monkeypatch):
    """An engine built on an H200 (its sidecar says so) runs on any H200 of the machine, and a
    cell on another model of GPU refuses it: one sentence, the engine left as it is."""
    from infbench.runtimes.tensorrt import session

    spec = spec_for(built, precision="fp16", batch_size=8)
    monkeypatch.setattr(engine, "current_environment", lambda version: dict(ENV))  # another H200
    assert session.ensure_engine(spec, ENV["tensorrt"])[0]["environment"]["gpu_name"] == "NVIDIA H200"
    monkeypatch.setattr(engine, "current_environment", lambda version: dict(ENV, gpu_name="NVIDIA H100 80GB HBM3"))
    before = engine.sha256_file(built)
    with pytest.raises(UserError) as err:
        session.ensure_engine(spec, ENV["tensorrt"])
    assert str(err.value) == (
        f"TensorRT engine {built} does not fit this cell (GPU model changed (NVIDIA H200 -> NVIDIA H100 80GB"
        " HBM3)); delete it and run the workflow again, which rebuilds it (or: snakemake --forcerun build_engine)"
    )
    assert engine.sha256_file(built) == before


# --- atomic writes and the shared timing cache -----------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "timing.cache"
    engine.atomic_write(str(path), b"one")
    engine.atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["timing.cache"]


APPEND_ENTRIES = """
import sys
from infbench.runtimes.tensorrt import build as engine
path, writer = sys.argv[1], sys.argv[2]
for i in range(25):
    engine.update_locked(path, lambda old: (old or b"") + f"{writer}:{i}\\n".encode())
"""


def test_concurrent_timing_cache_updates_lose_nothing(tmp_path):
    path = str(tmp_path / "timing.cache")
    env = dict(os.environ, PYTHONPATH=SCRIPTS)
    writers = [
        subprocess.Popen([sys.executable, "-c", APPEND_ENTRIES, path, str(w)], env=env) for w in range(4)
    ]
    assert [writer.wait(60) for writer in writers] == [0, 0, 0, 0]
    lines = engine.read_locked(path).decode().splitlines()
    assert sorted(lines) == sorted(f"{w}:{i}" for w in range(4) for i in range(25))
    assert engine.read_locked(str(tmp_path / "absent.cache")) is None


# --- error sentences --------------------------------------------------------------------


def spec_for(artifact, device="cuda", precision="fp32", batch_size=2, options=None):
    return SessionSpec(
        runtime="tensorrt",
        model="r50",
        arch="resnet50",
        precision=precision,
        batch_size=batch_size,
        device=device,
        artifact=str(artifact),
        crop=CROP,
        options=options or {},
    )


def test_tensorrt_on_the_cpu_is_a_config_error(tmp_path):
    runtime = load("tensorrt")
    with pytest.raises(UserError, match="runtimes.tensorrt.device is 'cpu'") as err:
        runtime.open_session(spec_for(tmp_path / "fp32-bs2.plan", device="cpu"))
    assert "set runtimes.tensorrt.device to cuda or remove tensorrt from runtimes" in str(err.value)


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here, so it cannot be found missing")
def test_missing_tensorrt_says_how_to_install_it(tmp_path):
    runtime = load("tensorrt")
    with pytest.raises(UserError) as err:
        runtime.open_session(spec_for(tmp_path / "fp32-bs2.plan"))
    assert str(err.value) == (
        f"TensorRT is not installed in {sys.executable}: run `make env-tensorrt` (TensorRT 8.6"
        " from PyPI, needs a Python 3.10), set runtimes.tensorrt.python to an interpreter that"
        " has TensorRT, or remove tensorrt from runtimes"
    )


def run_build_script(*args):
    return subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "build_engine.py"), *args],
        capture_output=True, text=True, timeout=120,
    )


def test_build_script_documents_its_flags():
    result = run_build_script("--help")
    assert result.returncode == 0
    for flag in ("--onnx", "--batch-size", "--precision", "--workspace-mib", "--allow-tf32",
                 "--tactic-sources", "--builder-optimization-level", "--timing-cache", "--out", "--sidecar"):
        assert flag in result.stdout


def build_args(tmp_path, onnx_file):
    return ["--onnx", onnx_file, "--batch-size", "2", "--precision", "fp32", "--workspace-mib", "512",
            "--allow-tf32", "0", "--timing-cache", str(tmp_path / "timing.cache"),
            "--out", str(tmp_path / "fp32-bs2.plan"), "--sidecar", str(tmp_path / "fp32-bs2.json")]


def test_build_script_names_a_missing_onnx(tmp_path):
    missing = str(tmp_path / "nothing.onnx")
    result = run_build_script(*build_args(tmp_path, missing))
    assert result.returncode == 2
    assert f"{missing} does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here, so it cannot be found missing")
def test_build_script_without_tensorrt_ends_in_one_sentence(tmp_path, onnx_path):
    result = run_build_script(*build_args(tmp_path, onnx_path))
    assert result.returncode == 2
    assert "TensorRT is not installed in" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "fp32-bs2.plan").exists()


# --- builds through a stand-in of TensorRT's Python API (no TensorRT, no GPU needed) ----

# What TensorRT 8.6.0 logged on the H200 when inception_v3's int8 engine did not build
# (docs/results/h200.md), in the form its logger passes them: the cause, then the builder's
# own note that no engine came out.
TRT86_INT8_ERRORS = [
    "2: [graphOptimizer.cpp::chooseHigherPrecision::7079] Error Code 2: Internal Error"
    " (Assertion dt1 == DataType::kFLOAT || dt1 == DataType::kHALF failed. )",
    "2: [builder.cpp::buildSerializedNetwork::751] Error Code 2: Internal Error (Assertion engine != nullptr failed. )",
]
MYELIN_CACHE_ERRORS = [
    "1: [myelinCache.h::deserializeFromBuffer::52] Error Code 1: Myelin (Myelin error from unknown graph)",
    "4: The timing cache will not be used!",
]


def fake_tensorrt(build_errors=(), plan=b"engine", cache_errors=(), fails=None):
    """A module with the calls build_engine makes on TensorRT 8.6's Python API, behaving as
    8.6 does where it matters here: messages go to the ILogger subclass the caller passes
    (severity, text); a failed build logs ``build_errors`` and returns None (every build,
    or those whose parsed ONNX bytes ``fails(bytes)`` picks); reading a timing cache whose
    bytes start with b"myelin" logs ``cache_errors`` and goes on."""
    import enum
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "8.6.0"

    class ILogger:
        Severity = enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3})

        def __init__(self):
            pass

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data

        def combine(self, other, ignore_mismatch):
            self.data += b"+" + other.data
            return True

    class Config:
        builder_optimization_level = 3

        def __init__(self, logger):
            self.logger, self.cache = logger, None

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            pass

        clear_flag = set_flag

        def get_tactic_sources(self):
            return 0b11111  # 8.6's default: all five sources

        def add_optimization_profile(self, profile):
            pass

        def create_timing_cache(self, data):
            if bytes(data).startswith(b"myelin"):
                for message in cache_errors:
                    self.logger.log(ILogger.Severity.ERROR, message)
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return TimingCache(b"built")

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return types.SimpleNamespace(onnx=None)

        def create_builder_config(self):
            return Config(self.logger)

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *shapes: None)

        def build_serialized_network(self, network, config):
            self.logger.log(ILogger.Severity.WARNING, "onnx2trt_utils.cpp:374: Your ONNX model has been generated"
                            " with INT64 weights, while TensorRT does not natively support INT64.")
            if fails is not None and not fails(network.onnx):
                return plan
            for message in build_errors:
                self.logger.log(ILogger.Severity.ERROR, message)
            return None if build_errors else plan

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data, path):
            self.network.onnx = bytes(data)
            return True

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16=0, INT8=1, TF32=6)
    trt.TacticSource = enum.IntEnum("TacticSource", TRT86_TACTIC_SOURCES)
    return trt


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """results/onnx/inception_v3/int8-s8s8.onnx (a one-node opset-17 ONNX) and a function that
    runs build_engine.py's main on it, at batch size 8, with a stand-in TensorRT module;
    it returns (exit status, stdout, stderr, the engine path)."""
    import runpy

    onnx_dir = tmp_path / "results" / "onnx" / "inception_v3"
    onnx_dir.mkdir(parents=True)
    onnx_file = str(onnx_dir / "int8-s8s8.onnx")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), onnx_file)
    plan = str(tmp_path / "results" / "engines" / "inception_v3" / "int8-bs8.plan")
    fingerprint = engine.environment_fingerprint("8.6.0", "NVIDIA H200", "9.0", "580.159.04", 13000, 12090, 12)
    monkeypatch.setattr(engine, "current_environment", lambda version: fingerprint)

    def run(capsys, trt, cache=None):
        cache = cache or str(tmp_path / "results" / "engines" / "timing.cache")
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(sys, "argv", ["build_engine.py", *build_args_for(onnx_file, plan, cache)])
        try:
            runpy.run_path(os.path.join(SCRIPTS, "build_engine.py"), run_name="__main__")
            status = 0
        except SystemExit as done:
            status = done.code
        out = capsys.readouterr()
        return status, out.out, out.err, plan

    return run


def build_args_for(onnx_file, plan, cache):
    return ["--onnx", onnx_file, "--batch-size", "8", "--precision", "int8", "--workspace-mib", "4096",
            "--allow-tf32", "0", "--timing-cache", cache, "--out", plan, "--sidecar", engine.sidecar_path(plan)]


def test_a_failed_build_says_the_cell_and_tensorrts_message_in_one_sentence(fake_build, capsys):
    status, _, stderr, plan = fake_build(capsys, fake_tensorrt(build_errors=TRT86_INT8_ERRORS))
    assert status == 2 and "Traceback" not in stderr
    onnx_file = engine.onnx_for_engine(plan, "int8")
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"infbench: TensorRT 8\.6\.0 could not build the int8 engine of inception_v3 at batch size 8 from"
        rf" {re.escape(onnx_file)} after \d+\.\d s: {re.escape(TRT86_INT8_ERRORS[0])} \(and 1 more error"
        rf" message above\); run benchmarks/tensorrt_bisect\.py --onnx {re.escape(onnx_file)} --precision int8"
        rf" to find the node that trips it, or remove int8 from runtimes\.tensorrt\.precisions", last), last
    assert f"[TRT] [E] {TRT86_INT8_ERRORS[1]}" in stderr  # TensorRT's log stays above the sentence
    assert not os.path.exists(plan) and not os.path.exists(engine.sidecar_path(plan))


def test_a_builder_that_cannot_start_is_one_sentence(fake_build, capsys):
    """TensorRT 8.6.0 on a machine without a usable GPU (seen here): a warning, then pybind11's
    TypeError from trt.Builder."""
    trt = fake_tensorrt()
    started = trt.Builder.__init__

    def no_gpu(self, logger):
        started(self, logger)
        logger.log(trt.ILogger.Severity.WARNING, "CUDA initialization failure with error: 35.")
        raise TypeError("pybind11::init(): factory function returned nullptr")

    trt.Builder.__init__ = no_gpu
    status, _, stderr, plan = fake_build(capsys, trt)
    assert status == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "infbench: TensorRT 8.6.0 could not start its builder (CUDA initialization failure with error: 35.);"
        " build engines on a machine with an NVIDIA GPU and its driver, or remove tensorrt from runtimes")


def test_a_built_engine_has_its_build_seconds_and_timing_cache_use_in_its_sidecar(fake_build, capsys):
    status, stdout, stderr, plan = fake_build(capsys, fake_tensorrt(plan=b"engine bytes"))
    assert status == 0, stderr
    sidecar = engine.read_sidecar(engine.sidecar_path(plan))
    assert open(plan, "rb").read() == b"engine bytes"
    assert isinstance(sidecar["build_seconds"], float) and 0 <= sidecar["build_seconds"] < 60
    assert f"in {sidecar['build_seconds']:.1f} s with TensorRT 8.6.0" in stdout
    assert sidecar["timing_cache_use"] == {"file": sidecar["timing_cache"], "bytes": 0, "loaded": False, "saved": "written"}
    assert sidecar["flags"]["tactic_sources"] == sorted(TRT86_TACTIC_SOURCES)


def test_the_sidecar_names_the_gpu_slot_the_engine_was_built_on(fake_build, capsys, monkeypatch):
    """On a machine of several GPUs the build step holds one (infbench.slots): its sidecar
    says which, beside the GPU model it compares; outside a slot it says none."""
    slot = {"index": 1, "uuid": "GPU-5e3c0b8a-7f1d-4c2e-9a6b-000000000001", "name": "NVIDIA H200", "gpus": 2,
            "cpus": None, "waited_s": 0.0}
    monkeypatch.setenv("INFBENCH_GPU_SLOT", json.dumps(slot))
    status, _, stderr, plan = fake_build(capsys, fake_tensorrt())
    assert status == 0, stderr
    sidecar = engine.read_sidecar(engine.sidecar_path(plan))
    assert sidecar["gpu_slot"] == slot and sidecar["environment"]["gpu_name"] == "NVIDIA H200"
    monkeypatch.delenv("INFBENCH_GPU_SLOT")
    status, _, stderr, plan = fake_build(capsys, fake_tensorrt())
    assert status == 0 and engine.read_sidecar(engine.sidecar_path(plan))["gpu_slot"] is None


def test_a_timing_cache_tensorrt_cannot_read_is_recorded_with_its_words_and_replaced(fake_build, capsys, tmp_path):
    cache = tmp_path / "results" / "engines" / "timing.cache"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"myelin entries")
    status, _, stderr, plan = fake_build(capsys, fake_tensorrt(cache_errors=MYELIN_CACHE_ERRORS), str(cache))
    assert status == 0, stderr
    use = engine.read_sidecar(engine.sidecar_path(plan))["timing_cache_use"]
    assert use == {"file": str(cache), "bytes": 14, "loaded": False, "tensorrt_said": MYELIN_CACHE_ERRORS,
                   "saved": "replaced"}
    assert cache.read_bytes() == b"built"  # this build's cache, not a merge with what could not be read


def test_a_timing_cache_that_loads_is_merged(fake_build, capsys, tmp_path):
    cache = tmp_path / "results" / "engines" / "timing.cache"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"earlier")
    status, _, stderr, plan = fake_build(capsys, fake_tensorrt(cache_errors=MYELIN_CACHE_ERRORS), str(cache))
    assert status == 0, stderr
    use = engine.read_sidecar(engine.sidecar_path(plan))["timing_cache_use"]
    assert use == {"file": str(cache), "bytes": 7, "loaded": True, "saved": "merged"}
    assert cache.read_bytes() == b"earlier+built"


# --- the build_engine rule ---------------------------------------------------------------


def test_engines_of_one_model_build_back_to_back_in_the_configs_model_order(tmp_path):
    """Snakemake's plan for config/gpu.yaml: every engine of a model has that model's
    priority, the config's first model the highest, all above the cells (priority 0)."""
    repo = os.path.dirname(HERE)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", os.path.join(repo, "Snakefile"), "-n",
         "--configfile", os.path.join(repo, "config", "gpu.yaml"), "--directory", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=SCRIPTS),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    priorities = {}
    for job in proc.stdout.split("\nrule ")[1:]:
        rule, output = job.split(":", 1)[0], re.search(r"output: (\S+)", job)
        priority = int((re.search(r"priority: (\d+)", job) or [0, 0])[1])
        if rule == "build_engine":
            model = output[1].split("/")[2]
            priorities.setdefault(model, set()).add(priority)
        elif rule in ("speed", "evaluate"):
            assert priority == 0
    assert all(len(p) == 1 for p in priorities.values()), priorities
    order = [min(priorities[m]) for m in ("alexnet", "vgg16", "resnet50", "inception_v3")]
    assert order == sorted(order, reverse=True) and len(set(order)) == 4 and min(order) > 0, priorities


# --- benchmarks/tensorrt_bisect.py: its prefix graphs and bisection, without TensorRT ------


def load_bisect():
    spec = importlib.util.spec_from_file_location("tensorrt_bisect", os.path.join(os.path.dirname(HERE), "benchmarks", "tensorrt_bisect.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inception_like_int8():
    """inception_v3's int8 preamble as the unfolded export had it: per channel Gather,
    Unsqueeze, Mul, Add, then Concat, Q/DQ and a convolution whose weights come through a
    DequantizeLinear listed before everything else; then ReLU and a global average pool."""
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(np.array(c, np.int64), f"index{c}") for c in range(3)]
    init += [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(0.458, np.float32), "scale"),
             numpy_helper.from_array(np.array(-0.03, np.float32), "shift"),
             numpy_helper.from_array(np.array(0.02, np.float32), "act_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "act_zero"),
             numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "w_q"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="w_dq", axis=0)]
    for c in range(3):
        nodes += [helper.make_node("Gather", ["input", f"index{c}"], [f"g{c}"], name=f"gather{c}", axis=1),
                  helper.make_node("Unsqueeze", [f"g{c}", "axis1"], [f"u{c}"], name=f"unsqueeze{c}"),
                  helper.make_node("Mul", [f"u{c}", "scale"], [f"m{c}"], name=f"mul{c}"),
                  helper.make_node("Add", [f"m{c}", "shift"], [f"a{c}"], name=f"add{c}")]
    nodes += [helper.make_node("Concat", ["a0", "a1", "a2"], ["cat"], name="cat", axis=1),
              helper.make_node("QuantizeLinear", ["cat", "act_scale", "act_zero"], ["cat_q"], name="cat_q"),
              helper.make_node("DequantizeLinear", ["cat_q", "act_scale", "act_zero"], ["cat_dq"], name="cat_dq"),
              helper.make_node("Conv", ["cat_dq", "w"], ["conv"], name="conv", kernel_shape=[3, 3], strides=[2, 2]),
              helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
              helper.make_node("GlobalAveragePool", ["relu"], ["logits"], name="pool")]
    graph = helper.make_graph(nodes, "inception-like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 11, 11])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 1, 1])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bisect_cuts_after_activation_nodes_never_between_quantize_and_dequantize():
    bisect, graph = load_bisect(), inception_like_int8().graph
    names = [n.name for n in graph.node]
    assert [names[i] for i in bisect.activation_nodes(graph)] == names[1:]  # not the weights' DequantizeLinear
    assert bisect.cut_points(graph) == [i + 1 for i in range(1, 19) if names[i] != "cat_q"]


def test_bisect_prefixes_are_valid_models_that_compute_the_full_graphs_activations():
    """Each prefix, run by ONNX Runtime, gives the values the whole graph computes for the
    activations the nodes left out would read (asked of the whole graph as extra outputs)."""
    import onnxruntime

    bisect, model = load_bisect(), inception_like_int8()
    x = np.random.default_rng(1).standard_normal((2, 3, 11, 11)).astype(np.float32)
    expected_outputs = {5: ["a0"], 13: ["a0", "a1", "a2"], 14: ["cat"], 16: ["cat_dq"], 17: ["conv"], 19: ["logits"]}
    for length in bisect.cut_points(model.graph):
        prefix = bisect.prefix_model(model, length)
        onnx.checker.check_model(prefix, full_check=True)
        outputs = [o.name for o in prefix.graph.output]
        if length in expected_outputs:
            assert outputs == expected_outputs[length], length
        whole = onnx.ModelProto()
        whole.CopyFrom(model)
        whole.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs if name != "logits")
        def run(m, names):
            return onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, {"input": x})
        for name, got, want in zip(outputs, run(prefix, outputs), run(whole, outputs)):
            assert np.array_equal(got, want), (length, name)
    assert len(model.graph.node) == 19 and [o.name for o in model.graph.output] == ["logits"]  # left as it was


@pytest.mark.parametrize("first_bad", [2, 9, 14, 19])
def test_bisect_finds_the_first_failing_prefix_in_log2_builds(first_bad):
    bisect = load_bisect()
    points = bisect.cut_points(inception_like_int8().graph)  # 17 cut points
    lo, hi, tried = bisect.first_failing(points, lambda length: length < first_bad, budget_s=60)
    assert hi == min(p for p in points if p >= first_bad) and lo == max([0] + [p for p in points if p < first_bad])
    assert len(tried) <= 5  # ceil(log2(17 + 1)), where one build per point would be 17


def test_bisect_stops_when_its_budget_is_spent():
    bisect = load_bisect()
    clock = iter(range(0, 1000, 10)).__next__  # every build takes 10 s
    lo, hi, tried = bisect.first_failing(list(range(1, 101)), lambda length: length < 77, budget_s=25, clock=clock)
    assert len(tried) == 2 and lo < 77 <= hi and (lo, hi) != (76, 77)


def test_bisect_names_the_node_whose_inclusion_fails_the_build(tmp_path, monkeypatch, capsys):
    """Through its main, with the stand-in TensorRT failing every network that holds the
    Concat of the input transform, at every level (as 8.6 did with inception_v3's int8)."""
    import runpy

    path = str(tmp_path / "int8-s8s8.onnx")
    onnx.save(inception_like_int8(), path)
    def has_concat(data):
        return any(n.op_type == "Concat" for n in onnx.load_from_string(data).graph.node)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(build_errors=TRT86_INT8_ERRORS, fails=has_concat))
    out_json = str(tmp_path / "bisect.json")
    monkeypatch.setattr(sys, "argv", ["tensorrt_bisect.py", "--onnx", path, "--precision", "int8", "--json", out_json])
    runpy.run_path(os.path.join(os.path.dirname(HERE), "benchmarks", "tensorrt_bisect.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "prefixes of 13 nodes build, of 14 fail; the node(s) whose inclusion fails:" in out
    assert "  node 13 Concat 'cat': inputs ['a0', 'a1', 'a2'] -> outputs ['cat']" in out
    assert f"TensorRT: {TRT86_INT8_ERRORS[0]}" in out
    found = json.load(open(out_json))
    assert found["result"] == {"builds_up_to": 13, "fails_from": 14, "message": TRT86_INT8_ERRORS[0]}
    assert len(found["builds"]) <= 6 and all(b["level"] == 0 for b in found["builds"])  # the whole graph, then log2(17)


def test_bisect_runs_without_tensorrt_as_far_as_its_help():
    result = subprocess.run([sys.executable, os.path.join(os.path.dirname(HERE), "benchmarks", "tensorrt_bisect.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--budget-s" in result.stdout and "--level" in result.stdout


# --- cuda-python ------------------------------------------------------------------------


@needs_cuda_python
def test_check_returns_the_values_of_a_successful_call():
    version = CUDART.check(CUDART.rt.cudaRuntimeGetVersion())
    assert isinstance(version, int) and version >= 12000


@needs_cuda_python
@pytest.mark.parametrize("name", ["cudaErrorInvalidValue", "cudaErrorMemoryAllocation", "cudaErrorNoDevice"])
def test_check_names_the_cuda_error(name):
    code = getattr(CUDART.rt.cudaError_t, name)
    with pytest.raises(CUDART.CudaError) as err:
        CUDART.check((code, None), "cudaSomething")
    assert err.value.name == name and err.value.code == int(code)
    assert str(err.value).startswith(f"{name} in cudaSomething: ")


@pytest.mark.skipif(CUDART is None or HAVE_GPU, reason="needs cuda-python on a machine without a usable GPU")
def test_allocating_without_a_gpu_raises_a_named_cuda_error():
    with pytest.raises(CUDART.CudaError) as err:
        CUDART.DeviceBuffer(1024)
    assert err.value.name in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")


@needs_gpu
def test_current_environment_reads_this_gpu():
    env = engine.current_environment("10.99")
    assert env["tensorrt"] == "10.99" and env["gpu_name"]
    major, minor = env["compute_capability"].split(".")
    assert major.isdigit() and minor.isdigit()
    assert env["cuda_driver"] >= 12000 and env["cuda_runtime"] >= 12000


@needs_gpu
def test_host_device_round_trip_is_exact():
    data = np.random.default_rng(0).standard_normal((8, 3, CROP, CROP), dtype=np.float32)
    back = np.empty_like(data)
    with CUDART.Stream() as stream, CUDART.DeviceBuffer(data.nbytes) as buf:
        CUDART.memcpy_htod_async(buf, data, stream)
        CUDART.memcpy_dtoh_async(back, buf, stream)
        stream.synchronize()
    assert np.array_equal(back, data)


@needs_gpu
def test_a_captured_copy_replays_with_new_source_data():
    first, second = np.arange(4096, dtype=np.float32), -np.arange(4096, dtype=np.float32)
    out = np.empty_like(first)
    with CUDART.Stream() as stream, CUDART.DeviceBuffer(first.nbytes) as src, CUDART.DeviceBuffer(first.nbytes) as dst:
        CUDART.memcpy_htod_async(src, first, stream)
        graph = CUDART.Graph(stream, lambda: CUDART.memcpy_dtod_async(dst, src, first.nbytes, stream))
        for data in (first, second):
            CUDART.memcpy_htod_async(src, data, stream)
            graph.launch(stream)
            CUDART.memcpy_dtoh_async(out, dst, stream)
            stream.synchronize()
            assert np.array_equal(out, data)
        graph.destroy()


# --- TensorRT (skipped where it is not installed) --------------------------------------


@pytest.fixture(scope="module")
def engine_plan(layout, onnx_path):
    plan = str(layout / "engines" / "r50" / "fp32-bs2.plan")
    engine.build_engine(onnx_path, plan, engine.sidecar_path(plan), 2, "fp32", 1024, False,
                        str(layout / "engines" / "timing.cache"))
    return plan


@needs_tensorrt_gpu
def test_built_engine_has_a_complete_sidecar(engine_plan, onnx_path):
    import tensorrt

    sidecar = engine.read_sidecar(engine.sidecar_path(engine_plan))
    assert sidecar["engine_sha256"] == engine.sha256_file(engine_plan)
    assert sidecar["onnx_sha256"] == engine.sha256_file(onnx_path)
    assert sidecar["environment"]["tensorrt"] == tensorrt.__version__
    assert sidecar["build"] == engine.build_options("fp32", 2, 1024, False)
    assert sidecar["profile"] == {"input": [[2, 3, CROP, CROP]] * 3}
    assert sidecar["flags"]["builder_flags"] == []
    assert os.path.getsize(os.path.join(os.path.dirname(os.path.dirname(engine_plan)), "timing.cache")) > 0
    env = engine.current_environment(tensorrt.__version__)
    assert engine.needs_rebuild(engine_plan, env, sidecar["onnx_sha256"], sidecar["build"]) == (False, "matches")


@needs_tensorrt_gpu
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_engine_logits_match_onnxruntime(engine_plan, onnx_path, cuda_graphs):
    import onnxruntime

    from infbench.runtimes.base import normalise_nchw

    images = np.random.default_rng(1).integers(0, 256, (3, 2, CROP, CROP, 3), dtype=np.uint8)
    reference = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    session = load("tensorrt").open_session(spec_for(engine_plan, options={"cuda_graphs": cuda_graphs}))
    try:
        staged = [session.stage(batch) for batch in images]
        for batch, handle in zip(images, staged):
            got = session.logits(session.run(handle))
            want = reference.run(["logits"], {"input": normalise_nchw(batch)})[0]
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        info = session.info()
        assert info["cuda_graphs"] is cuda_graphs and info["tf32"] is False and info["engine_rebuilt"] is None
    finally:
        session.close()


@needs_tensorrt_gpu
def test_the_accuracy_loop_refills_two_slots_instead_of_allocating_per_batch(engine_plan, onnx_path):
    """metrics.evaluate stages every batch anew: with CUDA graphs the session keeps two slots
    (buffers and graph) and refills them, and every batch's logits are still its own."""
    import onnxruntime

    from infbench import metrics
    from infbench.runtimes.base import normalise_nchw

    cache = np.random.default_rng(2).integers(0, 256, (7 * 2, CROP, CROP, 3), dtype=np.uint8)
    session = load("tensorrt").open_session(spec_for(engine_plan, options={"cuda_graphs": True}))
    try:
        top5, logits, nonfinite = metrics.evaluate(session, cache, 2, keep_logits=len(cache))
        assert len(session.slots) == 2 and all(slot.graph is not None for slot in session.slots)
    finally:
        session.close()
    reference = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    want = reference.run(["logits"], {"input": normalise_nchw(cache)})[0]
    np.testing.assert_allclose(logits, want, rtol=1e-3, atol=1e-3)
    assert not nonfinite.any()


@needs_tensorrt_gpu
def test_the_harness_waits_for_tensorrt(engine_plan):
    """No-sync control: with the session's CUDA graph, queueing a batch takes microseconds
    and running it (resnet50, 64 px, batch 2) far longer; the harness stays near a loop that
    reads every batch back, and without its one sync per window it would report several
    times that."""
    from conftest import assert_the_harness_waits

    session = load("tensorrt").open_session(spec_for(engine_plan, options={"cuda_graphs": True}))
    assert_the_harness_waits(session, 2, CROP)


@needs_tensorrt_gpu
def test_a_stale_engine_is_refused_on_open_and_left_alone(engine_plan):
    import tensorrt

    path = engine.sidecar_path(engine_plan)
    sidecar = engine.read_sidecar(path)
    sidecar["environment"]["tensorrt"] = "9.0.0"
    with open(path, "w") as f:
        json.dump(sidecar, f)
    before = engine.sha256_file(engine_plan)
    with pytest.raises(UserError) as err:
        load("tensorrt").open_session(spec_for(engine_plan))
    assert str(err.value) == (
        f"TensorRT engine {engine_plan} does not fit this cell (TensorRT version changed (9.0.0 ->"
        f" {tensorrt.__version__})); delete it and run the workflow again, which rebuilds it"
        " (or: snakemake --forcerun build_engine)"
    )
    assert engine.sha256_file(engine_plan) == before  # the build rule's output is not rewritten
