"""PyTorch and ONNX Runtime sessions: same logits on real images, timing harness, refusals."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from infbench import runtimes, timing
from infbench.data import load_image
from infbench.errors import UserError
from infbench.precision import export_fp32
from infbench.runtimes.base import SessionSpec
from conftest import make_weights

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/imagenet-sample"
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "val_map.txt").is_file(), reason=f"ImageNet sample not found at {SAMPLE}"
)
CROP = 224


def sample_images(count, resize, crop):
    """The first ``count`` sample images, preprocessed as the workflow's cache holds them."""
    names = [line.split()[0] for line in (SAMPLE / "val_map.txt").read_text().splitlines()[:count]]
    return np.stack([load_image(SAMPLE / "val" / name, resize, crop) for name in names])


def spec(runtime, arch, artifact, precision="fp32", device="cpu", batch_size=8, options=None):
    return SessionSpec(
        runtime=runtime,
        model=arch,
        arch=arch,
        precision=precision,
        batch_size=batch_size,
        device=device,
        artifact=str(artifact),
        crop=CROP,
        options=options or {},
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """{arch: (weights, fp32 onnx)}, made on first use."""
    made = {}

    def get(arch):
        if arch not in made:
            folder = tmp_path_factory.mktemp(arch)
            weights, onnx = folder / "weights.safetensors", folder / "fp32.onnx"
            make_weights(arch, weights)
            export_fp32(arch, weights, CROP, onnx)
            made[arch] = (weights, onnx)
        return made[arch]

    return get


def run_logits(session, images):
    out = session.run(session.stage(images))
    session.sync(out)
    return session.logits(out)


@needs_sample
@pytest.mark.parametrize("arch", ["resnet50", "alexnet"])
def test_onnxruntime_fp32_logits_equal_pytorch_on_real_images(artifacts, arch):
    weights, onnx = artifacts(arch)
    images = sample_images(8, 256, CROP)
    torch_session = runtimes.load("torch").open_session(spec("torch", arch, weights))
    ort_session = runtimes.load("onnxruntime").open_session(spec("onnxruntime", arch, onnx))
    try:
        expected = run_logits(torch_session, images)
        got = run_logits(ort_session, images)
    finally:
        torch_session.close()
        ort_session.close()
    assert got.shape == expected.shape == (8, 1000)
    assert got.dtype == np.float32
    rel = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert rel < 1e-4, f"{arch}: ONNX Runtime differs from PyTorch by {rel:.2e}"
    # the images are distinct, so are their logits (a model that ignored its input would not be)
    assert np.linalg.norm(expected[0] - expected[1]) > 1e-3 * np.linalg.norm(expected[0])


class Recording:
    """A real session that also records which staged batch each ``run`` received."""

    def __init__(self, session):
        self.session = session
        self.ran = []

    def stage(self, images):
        return self.session.stage(images)

    def run(self, staged):
        self.ran.append(id(staged))
        return self.session.run(staged)

    def sync(self, output):
        self.session.sync(output)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_timing_harness_rotates_staged_batches_and_gives_a_rate(artifacts, runtime):
    weights, onnx = artifacts("resnet50")
    artifact = weights if runtime == "torch" else onnx
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (2, CROP, CROP, 3), dtype=np.uint8) for _ in range(3)]
    session = runtimes.load(runtime).open_session(spec(runtime, "resnet50", artifact, batch_size=2))
    recording = Recording(session)
    try:
        result = timing.measure(recording, batches, warmup_batches=1, timed_batches=3, windows=2)
        info = session.info()
    finally:
        session.close()
    assert result["images_per_s"] > 0 and all(r > 0 for r in result["window_images_per_s"])
    assert result["staged_batches"] == 3
    timed = recording.ran[1:]  # after one warm-up batch
    assert len(timed) == 6 and len(set(timed[:3])) == 3 and timed[:3] == timed[3:]
    assert info["device"] == "cpu" and info["threads"] >= 1 and info["device_name"]


def test_torch_fp16_on_cpu_is_refused(artifacts):
    weights, _ = artifacts("resnet50")
    with pytest.raises(UserError, match=r"runtimes\.torch\.precisions.*'fp16'.*cpu"):
        runtimes.load("torch").open_session(spec("torch", "resnet50", weights, precision="fp16"))


def test_torch_threads_option_sets_the_thread_count(artifacts):
    weights, _ = artifacts("resnet50")
    before = torch.get_num_threads()
    try:
        session = runtimes.load("torch").open_session(
            spec("torch", "resnet50", weights, options={"threads": 1})
        )
        assert torch.get_num_threads() == 1
        info = session.info()
        assert (
            info["threads"] == 1
            and info["cuda_graphs"] is False
            and info["torch"] == torch.__version__
        )
    finally:
        torch.set_num_threads(before)


def test_onnxruntime_cuda_without_its_provider_is_refused(artifacts):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider, so it cannot be found missing")
    _, onnx = artifacts("resnet50")
    with pytest.raises(UserError, match=r"runtimes\.onnxruntime\.device.*CUDAExecutionProvider"):
        runtimes.load("onnxruntime").open_session(
            spec("onnxruntime", "resnet50", onnx, device="cuda")
        )


def test_onnxruntime_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        runtimes.load("onnxruntime").open_session(
            spec("onnxruntime", "resnet50", tmp_path / "no.onnx")
        )


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@needs_cuda
@pytest.mark.parametrize(
    "precision, cuda_graphs", [("fp32", True), ("fp32", False), ("fp16", True)]
)
def test_torch_cuda_matches_cpu_for_every_staged_batch(artifacts, precision, cuda_graphs):
    """Each staged batch keeps its own output: all are run, then all are read back."""
    weights, _ = artifacts("resnet50")
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 256, (4, CROP, CROP, 3), dtype=np.uint8) for _ in range(3)]
    cpu = runtimes.load("torch").open_session(spec("torch", "resnet50", weights, batch_size=4))
    expected = [run_logits(cpu, b) for b in batches]
    cpu.close()
    options = {"cuda_graphs": cuda_graphs}
    cuda = runtimes.load("torch").open_session(
        spec("torch", "resnet50", weights, precision, "cuda", batch_size=4, options=options)
    )
    try:
        staged = [cuda.stage(b) for b in batches]
        for _ in range(2):  # rotate twice, as the timing harness does
            outputs = [cuda.run(s) for s in staged]
        cuda.sync(outputs[-1])
        got = [cuda.logits(o) for o in outputs]
        info = cuda.info()
    finally:
        cuda.close()
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    for g, e in zip(got, expected):
        rel = np.linalg.norm(g - e) / np.linalg.norm(e)
        assert rel < tolerance, f"{precision} cuda_graphs={cuda_graphs}: {rel:.2e}"
    assert info["cuda_graphs"] is cuda_graphs and info["tf32"] is False and info["device_name"]
    assert (
        torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
    )


@needs_cuda
def test_torch_allow_tf32_option(artifacts):
    weights, _ = artifacts("resnet50")
    session = runtimes.load("torch").open_session(
        spec("torch", "resnet50", weights, device="cuda", options={"allow_tf32": True})
    )
    try:
        assert session.info()["tf32"] is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        session.close()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


@needs_cuda
def test_torch_cuda_graph_slots_are_reused_across_loops(artifacts):
    """The accuracy loop stages every batch anew; the timing harness may be called again."""
    weights, _ = artifacts("resnet50")
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, (2, CROP, CROP, 3), dtype=np.uint8) for _ in range(5)]
    cpu = runtimes.load("torch").open_session(spec("torch", "resnet50", weights, batch_size=2))
    expected = [run_logits(cpu, b) for b in batches]
    cpu.close()
    session = runtimes.load("torch").open_session(
        spec("torch", "resnet50", weights, device="cuda", batch_size=2)
    )
    try:
        for b, e in zip(batches, expected):  # as metrics.evaluate does
            out = session.run(session.stage(b))
            session.sync(out)
            got = session.logits(out)
            assert np.linalg.norm(got - e) / np.linalg.norm(e) < 1e-4
        assert len(session.slots) == 2
        del out  # the last output holds its slot; now both slots are free
        for _ in range(2):  # as a benchmark that measures twice does
            result = timing.measure(
                session, batches[:3], warmup_batches=1, timed_batches=3, windows=1
            )
            assert result["images_per_s"] > 0
        assert len(session.slots) == 3
    finally:
        session.close()


@needs_cuda
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_the_harness_waits_for_the_gpu(artifacts, runtime):
    """No-sync control on CUDA, at each runtime's default (PyTorch with CUDA graphs, ONNX
    Runtime with I/O binding and no per-run sync): the harness cannot beat a loop that reads
    every batch back, and a session whose sync does nothing makes it report several times the
    true rate (resnet50 batch 8 at 224 px: milliseconds of work per batch, microseconds to
    queue a graph or ONNX Runtime's kernels)."""
    import onnxruntime

    from conftest import assert_the_harness_waits

    if runtime == "onnxruntime" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (install onnxruntime-gpu: make env-gpu)")
    weights, onnx = artifacts("resnet50")
    artifact = weights if runtime == "torch" else onnx
    # ONNX Runtime without its own per-run sync (auto may pick either): the harness's sync is what waits
    options = {"per_run_sync": False} if runtime == "onnxruntime" else {}
    session = runtimes.load(runtime).open_session(spec(runtime, "resnet50", artifact, device="cuda", options=options))
    assert_the_harness_waits(session, 8, CROP)


def test_onnxruntime_on_cuda_asks_for_strict_fp32_and_no_per_run_sync():
    """The provider options and run options a CUDA cell passes (checked without a GPU)."""
    from infbench.runtimes import onnxruntime as ortrt

    cuda = SessionSpec("onnxruntime", "m", "resnet50", "fp32", 8, "cuda", "x.onnx", 224, {})
    providers, options = ortrt.provider_options(cuda)
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options[0]["use_tf32"] == "0"
    tf32 = dataclasses.replace(cuda, options={"allow_tf32": True})
    assert ortrt.provider_options(tf32)[1][0]["use_tf32"] == "1"
    assert ortrt.run_options(cuda).get_run_config_entry("disable_synchronize_execution_providers") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ONNX Runtime's default: sync
        ortrt.run_options(cuda, per_run_sync=True).get_run_config_entry("disable_synchronize_execution_providers")
    assert "enable_cuda_graph" not in options[0]  # CUDA graphs are an option, off by default
    graphs = dataclasses.replace(cuda, options={"cuda_graphs": True})
    assert ortrt.provider_options(graphs)[1][0]["enable_cuda_graph"] == "1"
    # each staged batch replays its own graph: an annotation id from 1 (0 is ONNX Runtime's own)
    assert ortrt.run_options(graphs, graph_id=3).get_run_config_entry("gpu_graph_id") == "3"
    cpu = SessionSpec("onnxruntime", "m", "resnet50", "fp32", 8, "cpu", "x.onnx", 224, {})
    assert ortrt.provider_options(cpu) == (["CPUExecutionProvider"], [{}])
    assert ortrt.provider_options(dataclasses.replace(cpu, options={"cuda_graphs": True}))[1] == [{}]


def test_onnxruntime_per_run_sync_auto_keeps_the_faster_way():
    """per_run_sync: auto on CUDA, with a stand-in for the staged batch's runs: both ways warmed
    up, blocks of about 0.1 s sized from a probe with sync, alternating, the lower median kept
    (no per-run sync on a tie), and the medians reported in ms per run."""
    from infbench.runtimes.onnxruntime import choose_per_run_sync

    def runs_taking(with_sync, without_sync):
        calls = []

        def seconds_per_run(per_run_sync, runs):
            calls.append((per_run_sync, runs))
            return with_sync if per_run_sync else without_sync

        return calls, seconds_per_run

    # resnet50 fp16 batch 8 on the H200: 4,222 img/s with ONNX Runtime's sync, 3,581 without
    calls, fake = runs_taking(8 / 4222, 8 / 3581)
    assert choose_per_run_sync(fake) == (True, {"with": 1.8948, "without": 2.234, "runs": 52})
    # warm-up 2 + 2 runs, a probe of 3 with sync, then 3 rounds of (with, without) of 52 runs
    # each: int(0.1 s / 1.8948 ms) = 52
    assert calls == [(True, 2), (False, 2), (True, 3)] + [(True, 52), (False, 52)] * 3
    _, fake = runs_taking(0.004, 0.003)
    assert choose_per_run_sync(fake) == (False, {"with": 4.0, "without": 3.0, "runs": 25})
    _, fake = runs_taking(0.002, 0.002)
    assert choose_per_run_sync(fake)[0] is False
    # slow runs: at least 3 per block; fast ones: at most 100
    assert choose_per_run_sync(runs_taking(0.5, 0.6)[1])[1]["runs"] == 3
    assert choose_per_run_sync(runs_taking(1e-5, 1e-5)[1])[1]["runs"] == 100

    # the median decides, not one noisy block
    times = iter([0, 0, 0.002] + [0.002, 0.003, 0.009, 0.003, 0.002, 0.003])

    def noisy(per_run_sync, runs):
        return next(times)

    assert choose_per_run_sync(noisy)[0] is True  # with: 2, 9, 2 ms (median 2); without: 3, 3, 3


def test_onnxruntime_auto_times_each_form_with_its_own_run_options(monkeypatch):
    """per_run_sync: auto on CUDA without a GPU: the session's choice among its two forms with
    a stand-in for ONNX Runtime's runs and a controlled clock. Each form runs only with its own
    run options (the documented loop: per-run sync and ONNX Runtime's output; the asynchronous
    one: no sync and a preallocated output), the faster is kept and staged from then on."""
    from infbench.runtimes import onnxruntime as ortrt

    clock = [0.0]
    monkeypatch.setattr(ortrt.time, "perf_counter", lambda: clock[0])

    class Binding:
        def __init__(self, preallocated):
            self.preallocated = preallocated

        def synchronize_outputs(self):
            pass

    class Runs:
        """ONNX Runtime stand-in: 2.0 ms a run in the documented loop, 2.3 ms asynchronous."""

        def __init__(self):
            self.seen = []

        def run_with_iobinding(self, binding, options):
            try:
                options.get_run_config_entry("disable_synchronize_execution_providers")
                synced = False
            except RuntimeError:
                synced = True
            self.seen.append((synced, binding.preallocated))
            clock[0] += 0.0020 if synced else 0.0023

    session = ortrt.OrtSession.__new__(ortrt.OrtSession)
    session.spec = SessionSpec("onnxruntime", "m", "resnet50", "fp16", 8, "cuda", "x.onnx", 224, {})
    session.session, session.on_cuda, session.cuda_graphs = Runs(), True, False
    session.per_run_sync, session.per_run_sync_ms = None, None
    monkeypatch.setattr(session, "_bind", lambda x, preallocated=True: ((x, None), Binding(preallocated)))

    first = session.stage(np.zeros((8, 224, 224, 3), np.uint8))
    assert session.per_run_sync is True and first.binding.preallocated is False
    assert session.per_run_sync_ms == {"with": 2.0, "without": 2.3, "runs": 50}
    # every timed run used its form's own options: never a sync with a preallocated output
    assert set(session.session.seen) == {(True, False), (False, True)}
    second = session.stage(np.zeros((8, 224, 224, 3), np.uint8))
    session.session.seen.clear()
    session.run(second)
    assert second.binding.preallocated is False and session.session.seen == [(True, False)]


def test_torch_compile_gives_the_eager_logits_and_compiles_in_the_warm_up(tmp_path, monkeypatch):
    """runtimes.torch.compile on the CPU (inductor, default mode): the same numbers as eager;
    the compile happens on the first batch, so the harness counts it as warm-up. Inductor
    gets an empty cache, so that it compiles here even where this model was compiled before,
    and writes scalar C++: its SIMD form (and the compiler probes it makes first) doubled the
    compile on this 2-core machine, 26 s against 15, and is inductor's own code, not infbench's."""
    import torch._inductor.config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._inductor.config.cpp, "vec_isa_ok", False)
    weights = tmp_path / "alexnet.safetensors"
    make_weights("alexnet", weights)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    opened = {}
    for compile_option in (False, True):
        cell = dataclasses.replace(spec("torch", "alexnet", weights, batch_size=2,
                                        options={"threads": 2, "compile": compile_option}), crop=64)
        opened[compile_option] = runtimes.load("torch").open_session(cell)
    eager, compiled = opened[False], opened[True]
    assert (eager.info()["mode"], compiled.info()["mode"]) == ("eager", "torch.compile default")
    got = timing.measure(compiled, [x], warmup_batches=1, timed_batches=2, windows=1)
    assert got["warmup_seconds"] > 10 * got["window_seconds"][0]  # the compile
    np.testing.assert_allclose(compiled.logits(compiled.run(compiled.stage(x))),
                               eager.logits(eager.run(eager.stage(x))), rtol=1e-4, atol=1e-5)


# --- the settings a result records: read back from the runtime --------------------------


def test_onnxruntime_records_the_threads_its_session_runs_with(artifacts):
    """threads: 2 is the intra-op count (one operator's threads), inter-op stays 1: read back
    from the InferenceSession's own options, so a session opened otherwise says so."""
    _, onnx = artifacts("alexnet")
    session = runtimes.load("onnxruntime").open_session(spec("onnxruntime", "alexnet", onnx, options={"threads": 2}))
    try:
        options = session.session.get_session_options()
        info = session.info()
    finally:
        session.close()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert (info["threads"], info["inter_op_threads"]) == (2, 1)
    assert info["graph_optimization"] == "ORT_ENABLE_ALL"
    # on the CPU there is no CUDA provider to report on
    assert (info["tf32"], info["cuda_graphs"], info["prefer_nhwc"], info["per_run_sync"]) == (None, False, None, None)


def test_onnxruntime_reads_its_per_run_sync_back_from_the_run_options():
    """Real RunOptions: ONNX Runtime waits for the GPU after each run unless told not to."""
    from infbench.runtimes import onnxruntime as ortrt

    cuda = SessionSpec("onnxruntime", "m", "resnet50", "fp16", 8, "cuda", "x.onnx", 224, {})
    assert ortrt.syncs_after_each_run(ortrt.run_options(cuda, per_run_sync=False)) is False
    assert ortrt.syncs_after_each_run(ortrt.run_options(cuda, per_run_sync=True)) is True
    assert ortrt.syncs_after_each_run(ortrt.run_options(cuda, graph_id=2, per_run_sync=True)) is True


def test_onnxruntime_cuda_options_nhwc_and_the_algorithm_search():
    """prefer_nhwc and cudnn_conv_algo_search reach the CUDA provider under its own names and
    values; by default the fastest the H200 ran (cuDNN's heuristics; NHWC in fp16 cells, NCHW
    in fp32 ones); a value the provider does not know is one sentence naming the key."""
    from infbench.runtimes import onnxruntime as ortrt

    cuda = SessionSpec("onnxruntime", "m", "resnet50", "fp16", 8, "cuda", "x.onnx", 224, {})
    default = ortrt.provider_options(cuda)[1][0]
    assert (default["prefer_nhwc"], default["cudnn_conv_algo_search"]) == ("1", "HEURISTIC")
    for precision, layout in (("fp32", "0"), ("int8", "0"), ("fp16", "1")):
        options = ortrt.provider_options(dataclasses.replace(cuda, precision=precision))[1][0]
        assert options["prefer_nhwc"] == layout, precision
    always = dataclasses.replace(cuda, precision="fp32", options={"prefer_nhwc": True})
    assert ortrt.provider_options(always)[1][0]["prefer_nhwc"] == "1"
    for search in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
        chosen = dataclasses.replace(cuda, options={"prefer_nhwc": True, "cudnn_conv_algo_search": search})
        options = ortrt.provider_options(chosen)[1][0]
        assert (options["prefer_nhwc"], options["cudnn_conv_algo_search"]) == ("1", search)
    wrong = dataclasses.replace(cuda, options={"cudnn_conv_algo_search": "exhaustive"})
    with pytest.raises(UserError) as err:
        ortrt.provider_options(wrong)
    assert str(err.value) == (
        "config key runtimes.onnxruntime.cudnn_conv_algo_search is 'exhaustive';"
        " it must be one of EXHAUSTIVE, HEURISTIC, DEFAULT"
    )


def test_onnxruntime_defaults_are_the_schemas():
    """The defaults the runtime applies are the ones the schema and config/README.md state."""
    import yaml

    from infbench.runtimes import onnxruntime as ortrt

    root = Path(__file__).resolve().parents[1]
    keys = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())["$defs"]["runtime"]["properties"]
    for key in ("prefer_nhwc", "cudnn_conv_algo_search"):
        assert keys[key]["default"] == ortrt.DEFAULTS[key], key
    assert keys["cudnn_conv_algo_search"]["enum"] == list(ortrt.CONV_ALGO_SEARCH)
    readme = (root / "config/README.md").read_text()
    assert "| `prefer_nhwc` | onnxruntime on cuda:" in readme and "or `fp16` (the default: the fp16 cells only" in readme
    assert "| `cudnn_conv_algo_search` | onnxruntime on cuda:" in readme and "no timing; the default)" in readme


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="onnxruntime here has no CUDA provider (install onnxruntime-gpu: make env-gpu)",
)
@needs_cuda
def test_onnxruntime_records_the_cuda_options_its_session_runs_with(artifacts):
    _, onnx = artifacts("alexnet")
    options = {"prefer_nhwc": True, "cudnn_conv_algo_search": "HEURISTIC", "per_run_sync": False}
    session = runtimes.load("onnxruntime").open_session(
        spec("onnxruntime", "alexnet", onnx, device="cuda", options=options)
    )
    try:
        session.stage(np.zeros((8, CROP, CROP, 3), np.uint8))
        info = session.info()
    finally:
        session.close()
    assert (info["prefer_nhwc"], info["cudnn_conv_algo_search"], info["tf32"]) == (True, "HEURISTIC", False)
    assert (info["cuda_graphs"], info["per_run_sync"]) == (False, False)


def test_torch_on_cuda_keeps_fp32_strict_unless_asked():
    """The TF32 decision, made and read back on the CPU: PyTorch's flags are process-wide and
    can be set without a GPU. By default neither matrix products nor cuDNN convolutions may
    use TF32 (PyTorch's own default lets cuDNN use it); allow_tf32: true allows both."""
    from infbench.runtimes import torch as torch_rt

    was = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch_rt.apply_cuda_settings(torch_rt.cuda_settings({}))
        assert torch_rt.settings_in_force() == {
            "tf32": False, "tf32_matmul": False, "tf32_cudnn": False, "cudnn_benchmark": True,
        }
        torch_rt.apply_cuda_settings(torch_rt.cuda_settings({"allow_tf32": True}))
        assert torch_rt.settings_in_force()["tf32"] is True
        # read back, not echoed: a flag set behind the session's back shows
        torch_rt.apply_cuda_settings(torch_rt.cuda_settings({"allow_tf32": False}))
        torch.backends.cudnn.allow_tf32 = True
        assert torch_rt.settings_in_force()["tf32"] is True and torch_rt.settings_in_force()["tf32_matmul"] is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = was
