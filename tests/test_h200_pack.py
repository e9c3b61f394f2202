"""The H200 pack (benchmarks/h200/pack.sh, wheels.py): every wheel it carries is pip's
resolver's pick from the project's pins, for the target Python.

Offline: pack.sh's wheels stage runs against a local index of small wheels that reproduce
the ml_dtypes mistake of an earlier pack (an unpinned `pip download --no-deps ml_dtypes`
took 0.7.0, which needs NumPy 2, beside the pinned numpy 1.26.4). Online (skipped without
PyPI): the real envs/requirements-tensorrt.txt resolves, for Python 3.10, to a closed set.
"""

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "h200"))

import wheels  # noqa: E402

PY310 = "/root/.pyenv/versions/3.10.13/bin/python3.10"


def make_wheel(folder, name, version, requires=()):
    """A pure-Python wheel of ``name`` ``version`` whose METADATA requires ``requires``."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}/__init__.py": "",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}.dist-info/RECORD", "".join(f"{p},,\n" for p in files) + f"{dist}.dist-info/RECORD,,\n")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A local index: numpy 1.26.4 and 2.1.0, ml_dtypes 0.5.4 (numpy>=1.21) and 0.7.0 (numpy>=2),
    onnx (ml_dtypes>=0.5.4, protobuf), and small stand-ins of the Python 3.12 stack; the
    requirement files name them as the project's do."""
    root = tmp_path_factory.mktemp("index")
    found = root / "wheels"
    found.mkdir()
    for name, version, requires in [
        ("numpy", "1.26.4", []), ("numpy", "2.1.0", []),
        ("ml_dtypes", "0.5.4", ["numpy>=1.21"]), ("ml_dtypes", "0.7.0", ["numpy>=2.0.0"]),
        ("protobuf", "7.36.2", []), ("onnx", "1.23.2", ["numpy>=1.23.2", "protobuf>=6.31.1", "ml_dtypes>=0.5.4"]),
        ("tensorrt", "8.6.0", ["numpy; extra == 'numpy'"]),
        ("snakemake", "9.27.1", ["pyyaml", "platformdirs"]), ("pyyaml", "6.0.4", []), ("pyyaml", "6.1.0", []),
        ("platformdirs", "4.14.9", []), ("pandas", "3.1.1", ["numpy>=1.26"]), ("tabulate", "0.10.0", []),
        ("onnxconverter-common", "1.16.0", ["onnx", "numpy", "protobuf"]), ("onnxruntime-gpu", "1.31.1", ["numpy"]),
    ]:  # fmt: skip
        make_wheel(found, name, version, requires)
    (root / "requirements-tensorrt.txt").write_text("# TensorRT\ntensorrt==8.6.0\nnumpy==1.26.4\nonnx==1.23.2\n")
    (root / "requirements-main.txt").write_text(
        "snakemake==9.27.1\nnumpy==2.1.0\nonnx==1.23.2\npandas==3.1.1  # the tables\ntabulate==0.10.0\n"
        "onnxconverter-common==1.16.0\npyyaml==6.0.4\ntorch==2.14.1\n"
    )
    (root / "requirements-gpu.txt").write_text("onnxruntime-gpu==1.31.1\n")
    return root


def pip_env(index):
    return dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(index / "wheels"))


def run_pack_wheels(index, out, with_ort="0"):
    env = pip_env(index)
    env.update(OUTDIR=str(out), PY310=sys.executable, PY312=sys.executable, WITH_ORT=with_ort,
               REQ_TRT=str(index / "requirements-tensorrt.txt"), REQ_MAIN=str(index / "requirements-main.txt"),
               REQ_GPU=str(index / "requirements-gpu.txt"))  # fmt: skip
    return subprocess.run(["bash", str(REPO / "benchmarks/h200/pack.sh"), "wheels"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def resolver_report(index, lines, constraints=()):
    """{name: version} of pip's own report for ``lines`` (the test's independent call)."""
    env = pip_env(index)
    req = index / "report-requirements.txt"
    req.write_text("\n".join(lines) + "\n")
    report = index / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "--report", str(report), "-r", str(req)]
    for path in constraints:
        command += ["-c", str(path)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return {wheels.canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def folder_versions(folder):
    return {name: version for name, version, _ in (wheels.wheel_metadata(p) for p in sorted(folder.glob("*.whl")))}


def test_pack_carries_the_resolvers_picks_for_python_310_never_an_unpinned_name(index, tmp_path):
    done = run_pack_wheels(index, tmp_path / "devpack")
    assert done.returncode == 0, done.stderr
    carried = folder_versions(tmp_path / "devpack" / "wheels" / "w310")
    assert carried == resolver_report(index, ["tensorrt==8.6.0", "numpy==1.26.4", "onnx==1.23.2"])
    # by hand: ml_dtypes 0.7.0 needs NumPy 2, so beside the pinned numpy 1.26.4 the resolver takes 0.5.4
    assert carried == {"tensorrt": "8.6.0", "numpy": "1.26.4", "onnx": "1.23.2", "ml-dtypes": "0.5.4", "protobuf": "7.36.2"}


def test_pack_312_stack_is_resolved_with_the_main_pins_as_constraints(index, tmp_path):
    done = run_pack_wheels(index, tmp_path / "devpack", with_ort="1")
    assert done.returncode == 0, done.stderr
    carried = folder_versions(tmp_path / "devpack" / "wheels" / "w312")
    wanted = ["snakemake==9.27.1", "pandas==3.1.1", "tabulate==0.10.0", "onnxconverter-common==1.16.0", "onnxruntime-gpu==1.31.1"]
    assert carried == resolver_report(index, wanted, [index / "requirements-main.txt"])
    assert carried["numpy"] == "2.1.0" and carried["pyyaml"] == "6.0.4"  # the project's pins, not the newest
    assert carried["ml-dtypes"] == "0.7.0"  # beside numpy 2, the newest ml_dtypes is the right one
    assert "torch" not in carried  # a constraint installs nothing by itself


def test_the_lock_pins_each_carried_wheel_by_its_sha256(index, tmp_path):
    out = tmp_path / "devpack"
    assert run_pack_wheels(index, out).returncode == 0
    lock = {line.split()[0]: line.split("sha256:")[1] for line in (out / "lock310.txt").read_text().splitlines()}
    for wheel in (out / "wheels" / "w310").glob("*.whl"):
        name, version, _ = wheels.wheel_metadata(wheel)
        assert lock[f"{name}=={version}"] == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_verify_names_a_wheel_the_resolver_did_not_pick_and_what_it_lacks(index, tmp_path):
    """The earlier pack's folder: the pins, but ml_dtypes fetched by name (0.7.0)."""
    folder = tmp_path / "w310"
    folder.mkdir()
    for name in ("tensorrt-8.6.0", "numpy-1.26.4", "onnx-1.23.2", "protobuf-7.36.2", "ml_dtypes-0.7.0"):
        (folder / f"{name}-py3-none-any.whl").write_bytes((index / "wheels" / f"{name}-py3-none-any.whl").read_bytes())
    lock = tmp_path / "lock.txt"
    lock.write_text("ml-dtypes==0.5.4\nnumpy==1.26.4\nonnx==1.23.2\nprotobuf==7.36.2\ntensorrt==8.6.0\n")
    assert wheels.verify(str(lock), str(folder)) == [
        "ml_dtypes-0.7.0-py3-none-any.whl: ml-dtypes 0.7.0 is not the resolver's pick (0.5.4)",
        "ml-dtypes 0.7.0 needs numpy>=2.0.0 (found 1.26.4)",
    ]


def test_requirement_lines_keep_only_the_named_projects(index):
    lines = wheels.requirement_lines([index / "requirements-main.txt"], ["pandas", "Tabulate"])
    assert lines == ["pandas==3.1.1", "tabulate==0.10.0"]


@pytest.mark.skipif(not os.path.exists(PY310), reason=f"no Python 3.10 at {PY310}")
def test_the_real_tensorrt_pins_resolve_to_a_closed_set_for_python_310():
    """Online: pip's resolver, run by the pack's Python 3.10, on envs/requirements-tensorrt.txt
    (metadata only, no wheels downloaded); skipped where PyPI cannot be reached."""
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import wheels\n"
        "picked = wheels.resolve(wheels.requirement_lines([sys.argv[2]]))\n"
        "versions = {p['name']: p['version'] for p in picked}\n"
        "print(json.dumps({'versions': versions, 'unmet': [u for p in picked for u in wheels.unmet(p['requires'], versions)]}))\n"
    )
    done = subprocess.run([PY310, "-c", script, str(REPO / "benchmarks" / "h200"), str(REPO / "envs" / "requirements-tensorrt.txt")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    offline = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
    if done.returncode != 0 and any(word in done.stderr for word in offline):
        pytest.skip(f"PyPI not reachable: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["unmet"] == []
    assert found["versions"]["tensorrt"] == "8.6.0" and found["versions"]["numpy"] == "1.26.4"
    assert found["versions"]["ml-dtypes"].startswith("0.5.")  # the newest ml_dtypes for NumPy 1


# --- run.sh on the GPU machine: one part per call, back to back ---------------------------


def run_sh(repo, verb, env, timeout=120):
    return subprocess.run(["bash", str(repo / "benchmarks/h200/run.sh"), verb], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def device(tmp_path):
    """A folder packed by pack.sh's own `parts` (xz, 40 kB parts, MANIFEST), and a copy of
    the repository's run.sh as the GPU machine's working tree; the machine's /tmp folders
    are under tmp_path."""
    source = tmp_path / "source"
    (source / "site310" / "tensorrt").mkdir(parents=True)
    (source / "site310" / "tensorrt" / "lib.so").write_bytes(os.urandom(150_000))  # does not compress
    (source / "LIBRARIES").write_text("real\n")
    (source / "LOCKS").write_text("tensorrt==8.6.0\n" * 2000)
    parts = tmp_path / "parts-made"
    done = subprocess.run(["bash", str(REPO / "benchmarks/h200/pack.sh"), "parts", str(source), str(parts), "40k"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "h200").mkdir(parents=True)
    (repo / "benchmarks" / "h200" / "run.sh").write_bytes((REPO / "benchmarks/h200/run.sh").read_bytes())
    machine = tmp_path / "machine"
    env = dict(os.environ, PACK=str(machine / "pack"), PARTS=str(machine / "parts"), RUN=str(machine / "run"),
               UNPACK_WAIT_S="20")  # fmt: skip
    return source, parts, repo, env


def carry(repo, parts, *names):
    """What one call's carry puts in the working tree: these parts and MANIFEST, nothing else."""
    folder = repo / ".devpack" / "parts"
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*names, "MANIFEST"):
        (folder / name).write_bytes((parts / name).read_bytes())


def wait_for(path, seconds=60):
    import time

    end = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.2)
    return path.exists()


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_one_part_per_call_unpacks_the_pack_as_it_was(device):
    source, parts, repo, env = device
    names = sorted(p.name for p in parts.iterdir() if p.name != "MANIFEST")
    assert len(names) >= 4  # 150 kB of random bytes in 40 kB parts
    for count, name in enumerate(names, 1):
        carry(repo, parts, name)
        done = run_sh(repo, "receive", env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"parts here: {count} of {len(names)};" in done.stdout
    pack = Path(env["PACK"])
    assert wait_for(Path(f"{pack}.done")), (Path(env["PARTS"]) / "unpack.log").read_text()
    assert tree(pack) == tree(source)


def test_a_damaged_part_is_refused_and_not_kept(device):
    source, parts, repo, env = device
    (parts / "p01").write_bytes(b"x" + (parts / "p01").read_bytes()[1:])
    carry(repo, parts, "p01")
    done = run_sh(repo, "receive", env)
    assert done.returncode == 2
    assert done.stdout.strip() == "infbench: p01 arrived damaged or is not in MANIFEST (sha256 differs); send it again"
    assert not (Path(env["PARTS"]) / "p01").exists()


def test_start_before_every_part_came_says_how_many_are_here(device):
    source, parts, repo, env = device
    carry(repo, parts, "p00")
    assert run_sh(repo, "receive", env).returncode == 0
    done = run_sh(repo, "start", dict(env, START_WAIT_S="1"))
    assert done.returncode == 2
    total = len([p for p in parts.iterdir() if p.name != "MANIFEST"])
    assert f"infbench: the pack is not unpacked (1 of {total} parts here; still unpacking): receive the rest" in done.stdout


# --- run.json: the run's summary (benchmarks/h200/summary.py, idle_ratio.py --json) ---------


def test_run_summary_has_what_the_published_run_records(tmp_path):
    results, logs, run = tmp_path / "results", tmp_path / "logs", tmp_path / "run"
    for folder in (results / "engines" / "alexnet", results / "speed" / "torch" / "alexnet",
                   results / "accuracy" / "torch" / "alexnet", logs / "engines" / "inception_v3", run):
        folder.mkdir(parents=True)  # fmt: skip
    for name, seconds, loaded in (("fp16-bs8", 12.25, False), ("fp32-bs50", 30.5, None)):
        (results / "engines" / "alexnet" / f"{name}.json").write_text(json.dumps({
            "build_seconds": seconds, "environment": {"tensorrt": "8.6.0"},
            "flags": {"tactic_sources": ["CUBLAS", "CUDNN"], "builder_optimization_level": 3, "builder_flags": ["FP16"]},
            "timing_cache_use": {"loaded": loaded}}))  # fmt: skip
    (logs / "engines" / "inception_v3" / "int8-bs8.log").write_text(
        "[TRT] [E] 2: [graphOptimizer.cpp::chooseHigherPrecision::7079] ...\ninfbench: TensorRT 8.6.0 could not build it.\n")
    provenance = {"started": "2026-12-03T10:00:10+00:00", "finished": "2026-12-03T10:00:40+00:00",
                  "phases": {"start_up": 2.0, "imports": 3.0, "inputs": 5.0}}  # fmt: skip
    (results / "speed" / "torch" / "alexnet" / "fp32-bs8.json").write_text(
        json.dumps({"result": {"window_seconds": [1.5, 1.5, 2.0]}, "provenance": provenance}))
    (results / "accuracy" / "torch" / "alexnet" / "fp32.json").write_text(json.dumps({"provenance": provenance}))
    (run / "gpu.csv").write_text("2026/12/03 10:00:00.000, NVIDIA H200, 580.159.04, 1980 MHz, 3201 MHz, 40, 120.5 W\n")
    (run / "versions-tensorrt.json").write_text(json.dumps({"python": "3.10.13", "tensorrt": "8.6.0"}))
    (run / "phases.txt").write_text("10:00:00 workflow\n10:20:00 done\n")
    locks = [tmp_path / "lock310.txt", tmp_path / "lock312.txt"]
    locks[0].write_text("numpy==1.26.4 --hash=sha256:ab\nnvidia-cudnn-cu12==8.9.7.29 --hash=sha256:cd\n")
    locks[1].write_text("numpy==2.4.6 --hash=sha256:ef\nsnakemake==9.27.1 --hash=sha256:01\n")
    idle = subprocess.run([sys.executable, str(REPO / "benchmarks/idle_ratio.py"), str(results), "--wall", "600",
                           "--json", str(run / "idle.json")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert idle.returncode == 0, idle.stderr
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/h200/summary.py"), "run", "--run", str(run), "--results", str(results),
         "--logs", str(logs), "--snakemake-rc", "1", "--wall", "600", "--started", "2026-12-03T10:00:00Z",
         "--finished", "2026-12-03T10:20:00Z", "--command", "bash benchmarks/h200/run.sh start", "--commit", "abc1234",
         "--libraries", "real", "--locks", *map(str, locks)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["date"] == {"started": "2026-12-03T10:00:00Z", "finished": "2026-12-03T10:20:00Z"}
    assert summary["commit"] == "abc1234" and summary["command"] == "bash benchmarks/h200/run.sh start"
    assert summary["machine"] == {"gpu": "NVIDIA H200", "driver": "580.159.04"}
    assert summary["versions"] == {"tensorrt": {"python": "3.10.13", "tensorrt": "8.6.0"}}
    assert summary["pack"] == {"libraries": "real", "locks": {  # one per Python: numpy differs between them
        "lock310": {"numpy": "1.26.4", "nvidia-cudnn-cu12": "8.9.7.29"}, "lock312": {"numpy": "2.4.6", "snakemake": "9.27.1"}}}
    assert summary["snakemake"] == {"exit_status": 1, "wall_seconds": 600.0}
    assert summary["timed_seconds"] == 5.0 and summary["wall_over_timed"] == 120.0  # 1.5 + 1.5 + 2.0 s of windows
    assert summary["results"] == {"speed": 1, "accuracy": 1}
    assert summary["engines"]["alexnet/fp16-bs8"] == {
        "build_seconds": 12.25, "tactic_sources": ["CUBLAS", "CUDNN"], "builder_optimization_level": 3,
        "builder_flags": ["FP16"], "timing_cache_loaded": False, "tensorrt": "8.6.0"}  # fmt: skip
    assert summary["engine_build_seconds"] == 42.8  # 12.25 + 30.5, to 0.1 s
    assert summary["engines_failed"] == {"inception_v3/int8-bs8": "infbench: TensorRT 8.6.0 could not build it."}
    assert summary["phases"] == [["10:00:00", "workflow"], ["10:20:00", "done"]]


def test_libchecks_network_is_a_valid_onnx_model_for_tensorrt_8s_parser(tmp_path):
    """The small network run.sh start builds on the GPU (benchmarks/h200/libcheck.py): ONNX
    Runtime runs it at the batch size of the check, opset 17 as TensorRT 8.6's parser wants."""
    import importlib.util

    import numpy as np
    import onnx
    import onnxruntime

    spec = importlib.util.spec_from_file_location("libcheck", REPO / "benchmarks" / "h200" / "libcheck.py")
    libcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(libcheck)
    path = libcheck.small_network(str(tmp_path / "small.onnx"))
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    (logits,) = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert logits.shape == (8, 10) and np.isfinite(logits).all()
    assert {op.op_type for op in model.graph.node} == {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"}
