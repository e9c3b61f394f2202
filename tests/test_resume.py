"""A failed or interrupted run picks up where it stopped, and the tables never show a number
that the current config did not produce.

Each test starts from a copy of one finished run (two alexnet-sized models with random
weights on ONNX Runtime's CPU provider, 400 synthetic images) and drives Snakemake as a
user would: it breaks something or sends a signal, then runs the same command again.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import SNAKEMAKE, planned_jobs, read_markdown_table, snakemake

pytestmark = pytest.mark.workflow

CACHE = "results/cache/synthetic/72-64.npy"
SPEED_LOG = "logs/speed/onnxruntime/{model}/fp32.log"
LABEL = "ONNX Runtime(fp32)"


def resume_config():
    model = {"arch": "alexnet", "resize": 72, "crop": 64}
    return {
        # enough images that writing the tensor cache takes a moment to interrupt
        "dataset": {"kind": "synthetic", "images": 400, "seed": 5},
        "models": {"a1": {**model, "checkpoint": {"random": 0}}, "a2": {**model, "checkpoint": {"random": 1}}},
        "runtimes": {"onnxruntime": {"device": "cpu", "precisions": ["fp32"], "threads": 2}},
        "batch_sizes": [4],
        # windows of a second or two: long enough to be interrupted in the middle of one
        "timing": {"warmup_batches": 2, "timed_batches": 100, "windows": 3, "staged_batches": 2},
        "latency": {"batch_sizes": [1], "queries": 20},
        "accuracy": {"reference": "onnxruntime/fp32"},
    }


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """The finished run every test starts from (a copy of it)."""
    workdir = tmp_path_factory.mktemp("base")
    snakemake(workdir, config=resume_config())
    return workdir


def copy_of(base_run, tmp_path):
    """A copy of the finished run, Snakemake's records and modification times included."""
    work = tmp_path / "run"
    shutil.copytree(base_run, work, symlinks=True)
    return work


def write_config(workdir, config):
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(workdir, config):
    """`snakemake --cores 2 --resources gpu=1 --configfile ...` in its own process group, with
    SIGINT handled as in a terminal (a background job of a script would ignore it)."""
    cmd = SNAKEMAKE + ["--directory", str(workdir), "--cores", "2", "--resources", "gpu=1"]
    cmd += ["--configfile", str(write_config(workdir, config))]
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(condition, proc, what, timeout=240):
    """Poll ``condition`` every 5 ms until it holds; fail if the run ends first."""
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.005)


def interrupt(proc, sig):
    """``sig`` to the whole run's process group, as a scheduler's time limit, `kill` or a
    terminal's Ctrl-C send it; the run's exit status and output."""
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def timed_window_running(workdir, model):
    """A speed job of this run is between its first and last timed window: its log (which
    launch.sh starts afresh) has a window done and no exit status yet."""
    log = workdir / SPEED_LOG.format(model=model)

    def running():
        text = log.read_text() if log.exists() else ""
        return " window 1/3 " in text and "infbench-exit:" not in text

    return running


def snapshot(workdir):
    """Modification time of every output of a step (the tables and figures aside: every run
    that fails writes the tables again)."""
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for top in ("results", "resources")
        for p in (workdir / top).rglob("*")
        if p.is_file() and not str(p.relative_to(workdir)).startswith(("results/tables", "results/plots"))
    }


def leftovers(workdir):
    """Temporary and partial files anywhere under results/ and resources/."""
    return [
        str(p.relative_to(workdir))
        for top in ("results", "resources")
        for p in (workdir / top).rglob("*")
        # (Snakemake's own .snakemake_timestamp marks a finished folder output)
        if p.name.endswith((".tmp", ".part")) or (p.name.startswith(".") and p.name != ".snakemake_timestamp")
    ]


def assert_complete(workdir, base_run):
    """The tables of a finished run: nothing partial, failed, stale or not run, and the same
    precision table as the uninterrupted run's."""
    assert (workdir / "results/tables/config.json").exists()
    for name in ("speed-bs4.md", "energy-bs4.md", "latency-bs1.md", "precision.md", "report.md"):
        text = (workdir / "results/tables" / name).read_text()
        assert "Partial" not in text and "failed" not in text and "stale" not in text and "not run" not in text
    assert (workdir / "results/tables/precision.md").read_text() == (
        base_run / "results/tables/precision.md"
    ).read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_is_resumed_by_the_next_plain_run(base_run, tmp_path, sig):
    """Interrupted while writing the tensor cache, then (the rerun) in the middle of a timed
    cell: each rerun does what was left and nothing that had finished, the last one ends
    with the uninterrupted run's precision table and no temporary file anywhere."""
    work = copy_of(base_run, tmp_path)
    config = resume_config()
    # a run stopped before it made the tensor cache: the data set, checkpoints, weights and
    # ONNX files are there, no cache, no cell, no table
    for done_later in ("results/cache", "results/speed", "results/latency", "results/accuracy", "results/tables",
                       "results/plots"):  # fmt: skip
        shutil.rmtree(work / done_later)
    upstream = snapshot(work)

    run = start(work, config)
    tmp = work / "results/cache/synthetic/.72-64.npy.tmp"
    wait_for(tmp.exists, run, "the tensor cache's write")
    status, out = interrupt(run, sig)
    assert status != 0
    assert not (work / CACHE).exists() and not tmp.exists(), out[-3000:]
    assert (work / "results/tables/speed-bs4.md").read_text().splitlines()[2].startswith("> Partial")
    assert "not run" in (work / "results/tables/speed-bs4.md").read_text()
    assert not (work / "results/tables/config.json").exists()  # so the tables are made again
    jobs = planned_jobs(snakemake(work, "-n", config=config))
    assert jobs == {"preprocess": 1, "speed": 2, "latency": 2, "evaluate": 2, "score": 2, "tables": 1, "plots": 1,
                    "all": 1}  # fmt: skip
    assert {k: v for k, v in snapshot(work).items() if k in upstream} == upstream

    started = time.time_ns()
    run = start(work, config)
    wait_for(timed_window_running(work, "a1"), run, "a timed window of a1")
    status, out = interrupt(run, sig)
    assert status != 0
    assert not (work / "results/speed/onnxruntime/a1/fp32-bs4.json").exists(), out[-3000:]
    assert "it was interrupted before it finished" in (work / "results/tables/speed-bs4.md").read_text()
    finished = {k: v for k, v in snapshot(work).items() if k in upstream or v > started}
    assert CACHE in finished and {k: finished[k] for k in upstream} == upstream

    snakemake(work, config=config)
    assert_complete(work, base_run)
    after = snapshot(work)
    assert {k: after.get(k) for k in finished} == finished  # nothing that had finished was redone
    assert leftovers(work) == []


def test_a_failed_cell_is_retried_by_the_next_plain_run(base_run, tmp_path):
    """ONNX Runtime's interpreter is missing: its cells fail with one sentence and the tables
    say so. The next plain run plans them again (a dry-run lists them); once the
    interpreter exists, the same command measures them and writes complete tables."""
    work = copy_of(base_run, tmp_path)
    python = tmp_path / "env" / "python"
    config = resume_config()
    config["runtimes"]["onnxruntime"]["python"] = str(python)
    proc = snakemake(work, config=config, check=False)
    assert proc.returncode != 0
    sentence = f"the onnxruntime runtime's interpreter {python} does not exist"
    _, rows = read_markdown_table(work / "results/tables/speed-bs4.md")
    assert rows["a1"][LABEL] == rows["a2"][LABEL] == "failed"
    assert f"a1 {LABEL}: {sentence}" in (work / "results/tables/speed-bs4.md").read_text()
    _, rows = read_markdown_table(work / "results/tables/precision.md")
    assert rows["a1"][LABEL] == "failed"
    _, rows = read_markdown_table(work / "results/tables/latency-bs1.md")  # the latency cells too
    assert rows["a1"][LABEL] == rows["a2"][LABEL] == "failed"
    assert f"a2 {LABEL}: {sentence}" in (work / "results/tables/latency-bs1.md").read_text()
    jobs = planned_jobs(snakemake(work, "-n", config=config))
    assert jobs == {"speed": 2, "latency": 2, "evaluate": 2, "score": 2, "tables": 1, "plots": 1, "all": 1}

    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # the runtime is installed
    python.chmod(0o755)
    snakemake(work, config=config)
    assert_complete(work, base_run)


def test_a_score_against_an_earlier_reference_keeps_its_top1_and_is_scored_again(base_run, tmp_path):
    """The reference changes to PyTorch fp32, whose interpreter is missing: the tables are
    still written; ONNX Runtime's cell, scored against the old reference, shows top-1 and
    top-5 and says mismatches need the reference. Once the interpreter exists, the next run
    scores it against PyTorch."""
    work = copy_of(base_run, tmp_path)
    python = tmp_path / "env" / "python"
    config = resume_config()
    del config["models"]["a2"]
    config["runtimes"]["torch"] = {"device": "cpu", "precisions": ["fp32"], "threads": 2, "python": str(python)}
    config["accuracy"]["reference"] = "torch/fp32"
    proc = snakemake(work, config=config, check=False)
    assert proc.returncode != 0
    path = work / "results/tables/precision.md"
    _, rows = read_markdown_table(path)
    assert rows["a1"]["PyTorch(fp32)"] == "failed"
    top1, rest = rows["a1"][LABEL].split(" / ")
    assert rest.startswith("n/a (top-5 ") and float(top1) >= 0
    assert f"a1 {LABEL}: onnxruntime/fp32; mismatches need PyTorch(fp32)'s predictions" in path.read_text()

    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    snakemake(work, config=config)
    _, rows = read_markdown_table(path)
    assert rows["a1"][LABEL].split(" / ")[0] == top1
    assert rows["a1"][LABEL].split(" / ")[1].split()[0].isdigit()  # mismatches against PyTorch fp32


def test_a_result_of_another_config_is_never_shown_as_measured(base_run, tmp_path):
    """a2's checkpoint changes to a download that fails: only the download runs. a2's old
    results (random weights) must not be shown: its cells say the download failed, a1's
    stay measured."""
    work = copy_of(base_run, tmp_path)
    config = resume_config()
    config["models"]["a2"]["checkpoint"] = {"url": "http://127.0.0.1:9/a.pth", "sha256": "0" * 64, "retries": 0}
    proc = snakemake(work, config=config, check=False)
    assert proc.returncode != 0
    assert (work / "results/speed/onnxruntime/a2/fp32-bs4.json").exists()  # the old result is still there
    for table in ("speed-bs4.md", "energy-bs4.md", "latency-bs1.md", "precision.md"):
        path = work / "results/tables" / table
        _, rows = read_markdown_table(path)
        assert rows["a2"][LABEL] == "failed", table
        assert rows["a1"][LABEL] not in ("failed", "stale", "not run"), table
        assert f"a2 {LABEL}: fetching a2's checkpoint failed: " in path.read_text()
    assert "- a1: random weights" in (work / "results/tables/precision.md").read_text()  # a2's are not shown
    cells = (work / "results/tables/cells.csv").read_text().splitlines()
    a2 = [line for line in cells if ",a2," in line]
    assert a2 and all(",failed," in line for line in a2)


def test_a_batch_that_does_not_fit_fails_alone(base_run, tmp_path):
    """Batch size 30000 cannot be staged under a 2.5 GB address-space limit (`ulimit -v` in
    the runtime's interpreter): that cell fails with one sentence naming it, its batch size
    and the memory; batch size 4 of the same job and every other cell are measured."""
    work = copy_of(base_run, tmp_path)
    python = tmp_path / "env" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nulimit -v 2500000\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    config = resume_config()
    config["batch_sizes"] = [4, 30000]
    config["accuracy"]["batch_size"] = 4  # (its default, the largest batch size, would not fit either)
    config["runtimes"]["onnxruntime"]["python"] = str(python)
    proc = snakemake(work, config=config, check=False)
    assert proc.returncode != 0
    sentence = "cell onnxruntime a1 fp32 at batch size 30000 ran out of host memory ("
    assert f"infbench: {sentence}" in proc.stderr
    _, rows = read_markdown_table(work / "results/tables/speed-bs30000.md")
    assert rows["a1"][LABEL] == rows["a2"][LABEL] == "failed"
    assert f"a1 {LABEL}: {sentence}" in (work / "results/tables/speed-bs30000.md").read_text()
    _, rows = read_markdown_table(work / "results/tables/speed-bs4.md")
    assert float(rows["a1"][LABEL].rstrip("*")) > 0 and float(rows["a2"][LABEL].rstrip("*")) > 0
    _, rows = read_markdown_table(work / "results/tables/precision.md")
    assert rows["a1"][LABEL].startswith(("0.", "1."))


def test_a_second_run_in_the_same_directory_stops_at_the_lock(base_run, tmp_path):
    """While a run works, a second one in the same directory says in one sentence that the
    first holds it and changes nothing; the first finishes with complete tables."""
    work = copy_of(base_run, tmp_path)
    config = resume_config()
    # what a run interrupted before a1's timed cell leaves (the tables to be made again)
    for path in ("results/speed/onnxruntime/a1/fp32-bs4.json", "results/tables/config.json"):
        Path(work / path).unlink()
    first = start(work, config)
    wait_for(timed_window_running(work, "a1"), first, "a timed window of a1")
    second = snakemake(work, config=config, check=False)
    assert second.returncode != 0
    said = [line for line in second.stderr.splitlines() if line.startswith("infbench:")]
    assert len(said) == 1 and said[0].startswith("infbench: another snakemake run (pid "), second.stderr
    assert "holds Snakemake's lock on it" in said[0]
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert_complete(work, base_run)


def test_an_unreadable_image_names_the_index_in_every_cell(base_run, tmp_path):
    """The data set holds a file that is no image: the index step stops with one sentence
    listing it, before any image is preprocessed, and every cell of the partial tables says
    that the index failed, and why (not a bare `not run`)."""
    from PIL import Image

    work = copy_of(base_run, tmp_path)
    root = tmp_path / "val"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 60), (60 * i, 90, 200)).save(root / f"img{i}.JPEG")
    (root / "broken.JPEG").write_bytes(b"not a JPEG at all")
    (tmp_path / "val_map.txt").write_text("img0.JPEG 1\nimg1.JPEG 2\nimg2.JPEG 3\nbroken.JPEG 4\n")
    config = resume_config()
    config["dataset"] = {"kind": "imagenet", "root": str(root), "labels": str(tmp_path / "val_map.txt")}
    for never_measured in ("results/speed", "results/latency", "results/accuracy", "results/tables"):  # first run
        shutil.rmtree(work / never_measured)
    proc = snakemake(work, config=config, check=False)
    assert proc.returncode != 0
    assert not (work / "results/cache/imagenet").exists()
    for table in ("speed-bs4.md", "latency-bs1.md", "precision.md"):
        path = work / "results/tables" / table
        _, rows = read_markdown_table(path)
        assert rows["a1"][LABEL] == rows["a2"][LABEL] == "failed", table
        assert f"a1 {LABEL}: indexing the data set failed: 1 of 4 images cannot be read: " in path.read_text()
        assert "broken.JPEG" in path.read_text()


def test_results_imported_from_an_earlier_run_are_kept(base_run, tmp_path):
    """The matrix run in parts (docs/results/h200/README.md, benchmarks/h200/run.sh IMPORT and
    FINAL): a1's result files alone come from an earlier run (no engine, ONNX file, cache or
    prediction file with them); this run makes the other cells first (and a1's weights, as
    the H200 run's other runtimes do), then touches the imported files and runs the whole
    config, which measures nothing again and writes complete tables with a1's figures."""
    work = tmp_path / "run"
    for kind in ("speed", "latency", "accuracy"):
        for path in (base_run / "results" / kind / "onnxruntime" / "a1").glob("*.json"):
            target = work / path.relative_to(base_run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    imported = {str(p.relative_to(work)): p.read_bytes() for p in (work / "results").rglob("*.json")}
    config = resume_config()
    snakemake(
        work, "results/speed/onnxruntime/a2/fp32-bs4.json", "results/accuracy/onnxruntime/a2/fp32.json",
        "results/latency/onnxruntime/a2/fp32-bs1.json",
        # (the tables read every model's MACs; on the H200 a1's other cells make them)
        "results/weights/a1.macs.json", config=config,
    )  # fmt: skip
    now = time.time()
    for path in imported:
        os.utime(work / path, (now, now))
    assert planned_jobs(snakemake(work, "-n", config=config)) == {"tables": 1, "plots": 1, "all": 1}
    snakemake(work, config=config)
    assert {p: (work / p).read_bytes() for p in imported} == imported
    assert_complete(work, base_run)
