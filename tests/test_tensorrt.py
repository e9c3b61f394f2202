"""TensorRT engine build decisions, the cuda-python layer and the TensorRT runtime.

Everything that needs neither TensorRT nor a GPU runs everywhere: profile shapes and I/O
names read from a real torchvision ONNX export, sidecar matching and rebuild decisions for
each field, the shared timing-cache file under concurrent writers, and the error
sentences. Tests that need cuda-python and a GPU, or TensorRT, skip with a reason.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(os.path.dirname(HERE), "workflow", "scripts")
sys.path.insert(0, SCRIPTS)

from infbench import engine  # noqa: E402
from infbench.errors import UserError  # noqa: E402
from infbench.runtimes import load  # noqa: E402
from infbench.runtimes.base import SessionSpec  # noqa: E402

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_TENSORRT = "TensorRT is not installed here: NVIDIA's package index cannot be reached from this machine"


def _cudart():
    try:
        from infbench import cudart
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

    model = build_torch("resnet50", seed=0).eval()
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, crop, crop),),
        path,
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


# --- network flags ----------------------------------------------------------------------


def test_tensorrt_10_asks_for_a_strongly_typed_network():
    assert engine.network_creation_flags("10.13.3.9", 1) == 1 << 1


@pytest.mark.parametrize("strongly_typed_bit", [0, 1, None])
def test_tensorrt_11_passes_no_flag(strongly_typed_bit):
    assert engine.network_creation_flags("11.4.0.106", strongly_typed_bit) == 0


@pytest.mark.parametrize("version, bit", [("8.6.1", 1), ("10.0.0", None)])
def test_tensorrt_without_strong_typing_is_refused(version, bit):
    with pytest.raises(UserError, match=f"TensorRT {version} cannot build strongly typed networks"):
        engine.network_creation_flags(version, bit)


# --- sidecar matching and rebuild decisions -----------------------------------------------

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
        ("gpu_name", "NVIDIA A100-SXM4-80GB", "GPU changed (NVIDIA H200 -> NVIDIA A100-SXM4-80GB)"),
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


# --- atomic writes and the shared timing cache -----------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "timing.cache"
    engine.atomic_write(str(path), b"one")
    engine.atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["timing.cache"]


APPEND_ENTRIES = """
import sys
from infbench import engine
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
        f"TensorRT is not installed in {sys.executable}: install tensorrt"
        " (pip install tensorrt-cu12 from NVIDIA's index) or remove tensorrt from runtimes"
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
                 "--timing-cache", "--out", "--sidecar"):
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
def test_a_stale_engine_is_rebuilt_on_open(engine_plan):
    path = engine.sidecar_path(engine_plan)
    sidecar = engine.read_sidecar(path)
    sidecar["environment"]["tensorrt"] = "9.0.0"
    with open(path, "w") as f:
        json.dump(sidecar, f)
    session = load("tensorrt").open_session(spec_for(engine_plan))
    try:
        assert session.info()["engine_rebuilt"] == f"TensorRT version changed (9.0.0 -> {session.trt.__version__})"
    finally:
        session.close()
    assert engine.read_sidecar(path)["environment"]["tensorrt"] != "9.0.0"
