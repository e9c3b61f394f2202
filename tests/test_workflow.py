"""The workflow as a user drives it: lint, dry-runs, a whole run on a tiny config, reruns.

Snakemake runs in a subprocess in a temporary directory (`--directory`), exactly as a user
would start it, with the repository's Snakefile.
"""

import csv
import json
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from conftest import ONEFLOW_PYTHON, REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
HAVE_ONEFLOW = ONEFLOW_PYTHON.exists()


def snakemake(workdir, *args, config=None, check=True):
    """Run snakemake in ``workdir`` as a user would; ``args`` come before the config file."""
    # targets first: --resources and --configfile take several values each
    cmd = SNAKEMAKE + list(args) + ["--directory", str(workdir), "--cores", "2"]
    cmd += ["--resources", "gpu=1"]
    if config is not None:
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd += ["--configfile", str(path)]  # takes several values: keep it last
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc):
    """rule -> count from a dry-run's job stats table."""
    text = proc.stdout + proc.stderr
    stats = text[text.index("Job stats:") :].splitlines()[3:]
    jobs = Counter()
    for line in stats:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def planned_outputs(proc):
    text = proc.stdout + proc.stderr
    return [
        path
        for line in text.splitlines()
        if line.strip().startswith("output:")
        for path in line.split(":", 1)[1].replace(",", " ").split()
    ]


def tiny_config():
    runtimes = {
        "onnxruntime": {"device": "cpu", "precisions": ["fp32", "int8"], "threads": 2},
        "torch": {"device": "cpu", "precisions": ["fp32"], "threads": 2},
    }
    if HAVE_ONEFLOW:
        runtimes = {
            # eager: graph mode compiles per batch size (about 10 s of this run);
            # test_oneflow.py checks both modes' logits and timing
            "oneflow": {"device": "cpu", "precisions": ["fp32"], "mode": "eager"},
            **runtimes,
        }
    return {
        "dataset": {"kind": "synthetic", "images": 12, "seed": 3},
        "models": {
            "alexnet": {
                "arch": "alexnet",
                "resize": 72,
                "crop": 64,
                "checkpoint": {"random": 0},
            },
            "resnet50": {
                "arch": "resnet50",
                "resize": 72,
                "crop": 64,
                "checkpoint": {"random": 0},
            },
        },
        "runtimes": runtimes,
        "batch_sizes": [4, 8],
        "timing": {
            "warmup_batches": 1,
            "timed_batches": 3,
            "windows": 2,
            "staged_batches": 2,
        },
        # single queries at a batch size of their own, few of them
        "latency": {"batch_sizes": [2], "queries": 5},
        "accuracy": {"reference": "oneflow/fp32" if HAVE_ONEFLOW else "torch/fp32"},
        "calibration": {"images": 8, "method": "minmax"},
        "reference_results": [
            {
                "label": "Vendor",
                "device": "some GPU",
                "model": "resnet50",
                "precision": "fp32",
                "batch_size": 8,
                "images_per_s": 1234,
                "source": "a published table",
            },
        ],
    }


def read_markdown_table(path):
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in path.read_text().splitlines()
        if line.lstrip().startswith("|")
    ]
    header, body = rows[0], [r for r in rows[2:]]
    return header, {r[0]: dict(zip(header, r)) for r in body}


def test_lint_and_format_are_clean():
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "workflow", "benchmarks", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    ruff_format = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "workflow", "benchmarks", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ruff_format.returncode == 0, ruff_format.stdout + ruff_format.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_dry_run_of_the_seed_gpu_matrix_offline(tmp_path):
    """4 models x (OneFlow 2 + TensorRT 3 + ORT 3 + torch 2 precisions) x batch 8 and 50."""
    proc = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/imagenet-gpu.yaml"))
    assert planned_jobs(proc) == {
        "fetch_checkpoint": 4,
        "convert_weights": 4,
        "export_onnx": 4,
        "convert_fp16": 4,
        "calibrate_int8": 4,
        "int8_fp16_form": 4,  # TensorRT 10/11's int8 form
        "index_dataset": 1,
        "preprocess": 2,  # 256/224 shared by three models, 342/299 for inception_v3
        "build_engine": 4 * 3 * 3,  # per model, precision and batch size (8, 50; latency's 1)
        "speed": 4 * 10,  # each times batch 8 and 50
        "latency": 4 * 10,  # each times single queries at batch 1
        "evaluate": 4 * 10,
        "score": 4 * 10,
        "tables": 1,
        "plots": 1,
        "all": 1,
    }
    outputs = planned_outputs(proc)
    assert "results/cache/imagenet/342-299.npy" in outputs
    assert "results/speed/tensorrt/inception_v3/int8-bs50.json" in outputs
    assert "results/latency/tensorrt/inception_v3/int8-bs1.json" in outputs
    assert "results/onnx/resnet50/int8-s8s8.onnx" in outputs


def test_dry_run_of_the_gpu_config_passes_every_engine_option(tmp_path):
    """config/gpu.yaml plans every cell; build_engine gets each engine option of the config."""
    config = yaml.safe_load((REPO / "config/gpu.yaml").read_text())
    config["runtimes"]["tensorrt"].update(
        tactic_sources=["JIT_CONVOLUTIONS", "EDGE_MASK_CONVOLUTIONS"],
        builder_optimization_level=2,
        workspace_mib=1024,
    )
    proc = snakemake(tmp_path, "-n", "-p", config=config)
    jobs = planned_jobs(proc)
    # TensorRT 3 precisions, ONNX Runtime 3, PyTorch 2: 8 columns; engines at 8, 50 and 1
    assert jobs["build_engine"] == 4 * 3 * 3 and jobs["speed"] == jobs["latency"] == 4 * 8
    assert jobs["evaluate"] == 4 * 8 and jobs["score"] == 4 * 8
    assert jobs["int8_fp16_form"] == 4  # what TensorRT 10/11 build int8 engines from
    builds = [
        line for line in (proc.stdout + proc.stderr).splitlines() if "build_engine.py" in line and "--onnx" in line
    ]
    assert len(builds) == 36
    for line in builds:
        assert str(REPO / ".venv-tensorrt/bin/python") in line
        assert (
            "--workspace-mib 1024 --allow-tf32 0"
            " --tactic-sources=EDGE_MASK_CONVOLUTIONS,JIT_CONVOLUTIONS"
            " --builder-optimization-level 2"
        ) in line
    int8 = [line for line in builds if "--precision int8" in line]
    assert len(int8) == 12 and all("int8-s8s8.onnx" in line for line in int8)


def test_latency_can_be_left_out(tmp_path):
    """latency.batch_sizes: [] plans no latency job and no latency table; the energy tables
    (of the speed cells) stay."""
    config = tiny_config()
    config["latency"] = {"batch_sizes": []}
    proc = snakemake(tmp_path, "-n", config=config)
    assert "latency" not in planned_jobs(proc)
    outputs = planned_outputs(proc)
    assert not [p for p in outputs if "latency" in p]
    assert "results/tables/energy-bs4.md" in outputs and "results/plots/energy-vs-speed-bs8.png" in outputs


# Through Snakemake, as a user meets them: a schema rule (a type), an unknown key and a rule
# of combinations. Every rule has its case on the checker itself in test_configcheck.py.
@pytest.mark.parametrize(
    "change, sentence",
    [
        (lambda c: c.update(batch_sizes=["eight"]), "batch_sizes[0]"),
        (
            lambda c: c["models"]["alexnet"].update(colour="blue"),
            "models.alexnet.colour is not a known key",
        ),
        (
            lambda c: c["runtimes"]["torch"].update(precisions=["fp16"]),
            "runtimes.torch.precisions: torch has no fp16 on cpu",
        ),
    ],
)
def test_bad_config_stops_with_one_sentence_naming_the_key(tmp_path, change, sentence):
    config = tiny_config()
    change(config)
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert sentence in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The whole workflow on a tiny config, run once for the tests below. With OneFlow as the
    reference, PyTorch's cells are left out: a PyTorch process imports torchvision (10-16 s a
    job on this machine, the dearest cells of the run), and PyTorch's cells run through the
    workflow in test_slurm.py's local run, and here wherever OneFlow's environment is absent."""
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config()
    if HAVE_ONEFLOW:
        del config["runtimes"]["torch"]
    snakemake(workdir, config=config)
    return workdir, config


@pytest.mark.workflow
def test_whole_workflow_produces_the_report_tables(finished_run):
    workdir, config = finished_run
    tables = workdir / "results/tables"
    columns = [
        f"{label}({p})"
        for rt, label in [
            ("oneflow", "OneFlow"),
            ("onnxruntime", "ONNX Runtime"),
            ("torch", "PyTorch"),
        ]
        if rt in config["runtimes"]
        for p in config["runtimes"][rt]["precisions"]
    ]
    for bs in (4, 8):
        header, rows = read_markdown_table(tables / f"speed-bs{bs}.md")
        assert header[1 : 1 + len(columns)] == columns
        assert list(rows) == ["alexnet", "resnet50"]
        for model in rows:
            for column in columns:
                assert float(rows[model][column].rstrip("*")) > 0
    header, rows = read_markdown_table(tables / "speed-bs8.md")
    assert rows["resnet50"]["Vendor(fp32)"] == "1234"

    # the tables are pivots of one frame of every cell: each cell shows its result file's figure
    names = {"oneflow": "OneFlow", "onnxruntime": "ONNX Runtime", "torch": "PyTorch"}
    speed_files = sorted((workdir / "results/speed").rglob("*.json"))
    assert len(speed_files) == 2 * len(columns) * 2
    for path in speed_files:
        data = json.loads(path.read_text())
        cell, rate = data["cell"], data["result"]["images_per_s"]
        _, table = read_markdown_table(tables / f"speed-bs{cell['batch_size']}.md")
        shown = table[cell["model"]][f"{names[cell['runtime']]}({cell['precision']})"]
        figure = f"{round(rate)}" if round(rate, 1) >= 100 else f"{rate:.1f}"
        # the marks this cell's result calls for, and no other (one machine: no ‡)
        marks = ("*" if data["flagged"] else "") + ("†" if data["clock_drop"] else "")
        assert shown == figure + marks, path
    _, table = read_markdown_table(tables / "precision.md")
    for path in sorted((workdir / "results/accuracy").rglob("*.json")):
        data = json.loads(path.read_text())
        shown = table[data["cell"]["model"]][f"{names[data['cell']['runtime']]}({data['cell']['precision']})"]
        assert shown.startswith(f"{data['top1']:.3f} / {data['mismatches']}"), path

    header, rows = read_markdown_table(tables / "precision.md")
    reference = "OneFlow(fp32)" if HAVE_ONEFLOW else "PyTorch(fp32)"
    for model in ("alexnet", "resnet50"):
        cell = rows[model][reference]
        # the reference cell agrees with itself exactly
        assert re.match(r"^[01]\.\d{3} / 0 \(cos 1\.0+", cell), cell
        # fp32 of another runtime agrees at the logit level; int8 less so but clearly
        fp32 = re.search(r"cos ([0-9.]+)", rows[model]["ONNX Runtime(fp32)"])
        assert float(fp32.group(1)) > 0.9999
        int8 = re.search(r"cos ([0-9.]+)", rows[model]["ONNX Runtime(int8)"])
        assert float(int8.group(1)) > 0.9

    with open(tables / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    speed = [c for c in cells if c["kind"] == "speed"]
    assert len(speed) == 2 * len(columns) * 2
    assert all(c["status"] == "measured" for c in speed)
    # MACs per image as convert_weights counted them at the model's crop
    for model, spec in config["models"].items():
        record = json.loads((workdir / f"results/weights/{model}.macs.json").read_text())
        assert (record["arch"], record["crop"]) == (spec["arch"], spec["crop"])
        shown = {float(c["gmacs_per_image"]) for c in speed if c["model"] == model}
        assert shown == {record["macs_per_image"] / 1e9}, model

    # the latency table: each cell p50 / p90 / p99 of its result file's queries
    latency_files = sorted((workdir / "results/latency").rglob("*.json"))
    assert len(latency_files) == 2 * len(columns)
    _, table = read_markdown_table(tables / "latency-bs2.md")
    for path in latency_files:
        data = json.loads(path.read_text())
        cell, result = data["cell"], data["result"]
        assert cell["batch_size"] == 2 and result["queries"] == 5 and len(result["query_ms"]) == 5
        ranked = sorted(result["query_ms"])
        assert (result["p50_ms"], result["p90_ms"], result["p99_ms"]) == (ranked[2], ranked[4], ranked[4])
        shown = table[cell["model"]][f"{names[cell['runtime']]}({cell['precision']})"]
        assert shown == " / ".join(
            f"{result[k]:#.3g}" if round(result[k], 1) < 100 else f"{round(result[k])}"
            for k in ("p50_ms", "p90_ms", "p99_ms")
        ), path
    # the energy table: a figure where the CPU's counter was read, else `not measured` and why
    for path in speed_files:
        data = json.loads(path.read_text())
        cell, used = data["cell"], data["energy"]
        _, table = read_markdown_table(tables / f"energy-bs{cell['batch_size']}.md")
        shown = table[cell["model"]][f"{names[cell['runtime']]}({cell['precision']})"]
        if used["measured"]:
            assert shown.endswith(" W)") and used["images"] == 2 * 3 * cell["batch_size"], path
        else:
            assert shown == "not measured"
            assert used["reason"] in (tables / f"energy-bs{cell['batch_size']}.md").read_text()

    result = json.loads((workdir / "results/speed/onnxruntime/resnet50/fp32-bs8.json").read_text())
    assert result["result"]["windows"] == 2 and result["result"]["timed_batches"] == 3
    assert result["provenance"]["host"]["cpu_count"] >= 1
    assert result["provenance"]["config"]["model"]["crop"] == 64
    for bs in config["batch_sizes"]:  # the figures, drawn from cells.csv
        for name in ("throughput", "accuracy-vs-speed", "energy-vs-speed"):
            assert (workdir / f"results/plots/{name}-bs{bs}.png").read_bytes()[:4] == b"\x89PNG"
    # where the process's time went: the timed windows as the result has them, the
    # interpreter's start-up from the launcher's time stamp, the phases adding up. One
    # process timed both batch sizes: start-up and imports are on the first cell's record
    # only, so that phases summed over results count them once.
    first = json.loads((workdir / "results/speed/onnxruntime/resnet50/fp32-bs4.json").read_text())
    assert first["provenance"]["cell_of_process"] == [1, 2]
    assert result["provenance"]["cell_of_process"] == [2, 2]
    phases = first["provenance"]["phases"]
    assert 0 < phases["start_up"] < 60 and phases["imports"] > 0
    assert "start_up" not in result["provenance"]["phases"]
    assert "imports" not in result["provenance"]["phases"]
    for cell in (first, result):
        phases = cell["provenance"]["phases"]
        timed = sum(cell["result"]["window_seconds"])
        assert phases["timed_windows"] == pytest.approx(timed)
        assert phases["staging"] == cell["result"]["staging_seconds"]
        assert phases["open_session"] > 0
        inside = sum(v for k, v in phases.items() if k not in ("start_up", "total_in_script"))
        assert inside == pytest.approx(phases["total_in_script"])
    assert first["provenance"]["finished"] <= result["provenance"]["started"]


@pytest.mark.workflow
def test_the_html_report_renders_in_a_real_browser(finished_run, chromium, tmp_path):
    """`snakemake --report` (make report) on the finished run, opened in headless Chromium:
    the report's own JavaScript draws the front page from workflow/report/workflow.rst with
    this run's config, and a menu with the result categories (tables, figures, cells); no
    script error on the page, every table and plot of the run inside, and a screenshot of
    the first page that is not blank."""
    from PIL import Image

    from conftest import CHROMIUM_FLAGS

    workdir, config = finished_run
    snakemake(workdir, "--report", "results/report.html", config=config)
    report = workdir / "results/report.html"
    assert report.stat().st_size > 100_000
    page = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=20000", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert page.returncode == 0, page.stderr[-2000:]
    # the page's console, as Chromium logs it: an uncaught exception is a page error
    console = [line for line in page.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", page.stdout, flags=re.S)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "Results Cells Figures Tables" in text  # the menu the script builds, not the static page
    assert (
        f"Models: {', '.join(config['models'])}; runtimes: {', '.join(config['runtimes'])};"
        f" batch sizes: {', '.join(map(str, config['batch_sizes']))};"
        f" accuracy reference: {config['accuracy']['reference']}."
    ) in text
    # every cell's result file is in the report, labelled by the job's wildcards
    html = report.read_text()
    for runtime, spec in config["runtimes"].items():
        for precision in spec["precisions"]:
            assert f'"runtime": "{runtime}"' in html and f'"precision": "{precision}"' in html
    assert "One timed cell's result file" in html and "Timed" in html
    assert "One latency cell's result file" in html and "Milliseconds per query" in html
    # every table and plot the run wrote is a report item
    bss = config["batch_sizes"]
    made = ["precision.md", "report.md", "cells.csv", *(f"{t}-bs{bs}.md" for t in ("speed", "energy") for bs in bss)]
    made += [f"latency-bs{bs}.md" for bs in config["latency"]["batch_sizes"]]
    made += [f"{figure}-bs{bs}.png" for figure in ("throughput", "accuracy-vs-speed", "energy-vs-speed") for bs in bss]
    assert all((workdir / "results" / ("plots" if n.endswith(".png") else "tables") / n).exists() for n in made)
    assert [n for n in made if n not in html] == []
    # the first page as a reader sees it: text and figures, not one flat colour
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
         "--window-size=1280,900", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1280, 900)
    histogram = pixels.histogram()
    background = max(histogram)
    assert sum(histogram) - background > 0.02 * sum(histogram)  # over 2 % of the page is not background
    assert sum(1 for count in histogram if count) > 16  # anti-aliased text: many grey levels


@pytest.mark.workflow
def test_every_cell_is_scored_against_the_reference_cell(finished_run):
    """Mismatches, cosine and relative error recomputed from the prediction files."""
    import numpy as np

    workdir, config = finished_run
    reference = config["accuracy"]["reference"]
    ref_runtime, ref_precision = reference.split("/")
    compared = 0
    for model in config["models"]:
        ref = np.load(workdir / f"results/accuracy/{ref_runtime}/{model}/{ref_precision}.npz")
        for runtime, rt in config["runtimes"].items():
            for precision in rt["precisions"]:
                base = workdir / f"results/accuracy/{runtime}/{model}/{precision}"
                got = json.loads(base.with_suffix(".json").read_text())
                cell = np.load(base.with_suffix(".npz"))
                assert got["reference"] == reference
                assert got["mismatches"] == int(np.sum(cell["top5"][:, 0] != ref["top5"][:, 0]))
                a = cell["logits"].astype(np.float64)
                b = ref["logits"].astype(np.float64)
                rel = np.linalg.norm(a - b) / np.linalg.norm(b)
                assert got["rel_error"] == pytest.approx(rel, rel=1e-9, abs=1e-15)
                if f"{runtime}/{precision}" != reference and precision == "int8":
                    assert got["rel_error"] > 1e-3  # int8 is not its own reference
                    compared += 1
    assert compared == len(config["models"])


def reversed_keys(value, keep_order=False):
    """The same config with every mapping's keys in reverse order, except the models'
    (their order is the tables' row order, which may rerun the tables)."""
    if isinstance(value, dict):
        items = list(value.items()) if keep_order else list(value.items())[::-1]
        return {k: reversed_keys(v, keep_order=(k == "models")) for k, v in items}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


@pytest.mark.workflow
def test_the_same_values_in_another_key_order_replan_nothing(finished_run):
    workdir, config = finished_run
    reordered = reversed_keys(config)
    assert list(reordered) != list(config)
    assert list(reordered["runtimes"]) == list(config["runtimes"])[::-1]
    assert list(reordered["models"]) == list(config["models"])
    assert list(reordered["models"]["alexnet"]) == list(config["models"]["alexnet"])[::-1]
    proc = snakemake(workdir, "-n", config=reordered)
    assert "Nothing to be done" in proc.stdout, planned_jobs(proc)


@pytest.mark.workflow
def test_changing_one_model_reruns_only_its_jobs(finished_run):
    workdir, config = finished_run
    assert "Nothing to be done" in snakemake(workdir, "-n", config=config).stdout
    changed = json.loads(json.dumps(config))
    changed["models"]["resnet50"]["checkpoint"] = {"random": 7}
    proc = snakemake(workdir, "-n", config=changed)
    outputs = planned_outputs(proc)
    assert outputs, proc.stdout
    others = [p for p in outputs if "resnet50" not in p and not p.startswith(("results/tables/", "results/plots/"))]
    assert others == [], others
    jobs = planned_jobs(proc)
    assert jobs["fetch_checkpoint"] == 1 and jobs["tables"] == 1
    # one speed job per runtime and precision times every batch size
    assert jobs["speed"] * len(config["batch_sizes"]) == len(
        re.findall(r"results/speed/\S+/resnet50/", " ".join(outputs))
    )


def cells(config, models=None, runtimes=None):
    """(runtime, model, precision) of every configured cell, optionally narrowed."""
    return [
        (rt, model, precision)
        for rt, spec in config["runtimes"].items()
        if runtimes is None or rt in runtimes
        for model in config["models"]
        if models is None or model in models
        for precision in spec["precisions"]
    ]


def speed_outputs(config, chosen):
    return {f"results/speed/{rt}/{m}/{p}-bs{bs}.json" for rt, m, p in chosen for bs in config["batch_sizes"]}


def latency_outputs(config, chosen):
    return {
        f"results/latency/{rt}/{m}/{p}-bs{bs}.json" for rt, m, p in chosen for bs in config["latency"]["batch_sizes"]
    }


def accuracy_outputs(chosen, suffixes=(".npz", ".json")):
    return {f"results/accuracy/{rt}/{m}/{p}{s}" for rt, m, p in chosen for s in suffixes}


def table_outputs(config):
    """The tables and the figures drawn from them (which follow the tables)."""
    return (
        {f"results/tables/{t}-bs{bs}.md" for t in ("speed", "energy") for bs in config["batch_sizes"]}
        | {f"results/tables/latency-bs{bs}.md" for bs in config["latency"]["batch_sizes"]}
        | {
            "results/tables/precision.md",
            "results/tables/cells.csv",
            "results/tables/report.md",
            "results/tables/config.json",
        }
        | {
            f"results/plots/{name}-bs{bs}.{ext}"
            for bs in config["batch_sizes"]
            for name in ("throughput", "accuracy-vs-speed", "energy-vs-speed")
            for ext in ("png", "svg")
        }
    )


def int8_outputs(model):
    return {
        f"results/onnx/{model}/int8-s8s8.onnx",
        f"results/onnx/{model}/int8-u8s8.onnx",
        f"results/onnx/{model}/calibration.tsv",
    }


def expected_after(change, config):
    """The exact outputs a dry-run plans after ``change`` (see the test below)."""
    reference_runtime = config["accuracy"]["reference"].split("/")[0]
    if change == "checkpoint":  # resnet50's seed: all of resnet50, nothing of alexnet
        chosen = cells(config, models=["resnet50"])
        return (
            {
                "resources/checkpoints/resnet50.pth",
                "results/weights/resnet50.safetensors",
                "results/weights/resnet50.macs.json",
                "results/onnx/resnet50/fp32.onnx",
            }
            | int8_outputs("resnet50")
            | speed_outputs(config, chosen)
            | latency_outputs(config, chosen)
            | accuracy_outputs(chosen)
            | table_outputs(config)
        )
    if change == "crop":  # alexnet's crop: a new cache, its MACs, its ONNX and every alexnet cell
        chosen = cells(config, models=["alexnet"])
        return (
            {
                "results/cache/synthetic/72-63.npy",
                # convert_weights counts the MACs at the crop (the weights come out the same)
                "results/weights/alexnet.safetensors",
                "results/weights/alexnet.macs.json",
                "results/onnx/alexnet/fp32.onnx",
            }
            | int8_outputs("alexnet")
            | speed_outputs(config, chosen)
            | latency_outputs(config, chosen)
            | accuracy_outputs(chosen)
            | table_outputs(config)
        )
    if change == "runtime":  # ONNX Runtime's options: its cells (never the reference here)
        assert reference_runtime != "onnxruntime"
        chosen = cells(config, runtimes=["onnxruntime"])
        return (
            speed_outputs(config, chosen)
            | latency_outputs(config, chosen)
            | accuracy_outputs(chosen)
            | table_outputs(config)
        )
    if change == "reference":  # the reference runtime's options: its cells and every score
        chosen = cells(config, runtimes=[reference_runtime])
        return (
            speed_outputs(config, chosen)
            | latency_outputs(config, chosen)
            | accuracy_outputs(chosen, (".npz",))
            | accuracy_outputs(cells(config), (".json",))
            | table_outputs(config)
        )
    if change == "timing":  # the windows' length: every speed cell, no latency cell, no accuracy
        return speed_outputs(config, cells(config)) | table_outputs(config)
    if change == "latency":  # latency.queries: every latency cell, nothing else
        return latency_outputs(config, cells(config)) | table_outputs(config)
    raise ValueError(change)


CHANGES = {
    "checkpoint": lambda c: c["models"]["resnet50"].update(checkpoint={"random": 7}),
    "crop": lambda c: c["models"]["alexnet"].update(crop=63),
    "runtime": lambda c: c["runtimes"]["onnxruntime"].update(threads=1),
    "reference": lambda c: c["runtimes"][c["accuracy"]["reference"].split("/")[0]].update(threads=1),
    "timing": lambda c: c["timing"].update(timed_batches=4),
    "latency": lambda c: c["latency"].update(queries=6),
}


@pytest.mark.workflow
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_replans_exactly_the_jobs_it_affects(finished_run, change):
    workdir, config = finished_run
    changed = json.loads(json.dumps(config))
    CHANGES[change](changed)
    proc = snakemake(workdir, "-n", config=changed)
    assert set(planned_outputs(proc)) == expected_after(change, config)


@pytest.mark.workflow
def test_missing_runtime_interpreter_fails_that_rule_with_one_sentence(finished_run, tmp_path):
    workdir, config = finished_run
    broken = json.loads(json.dumps(config))
    runtime = "oneflow" if HAVE_ONEFLOW else "onnxruntime"
    broken["runtimes"][runtime]["python"] = "/nonexistent/python3.10"
    target = f"results/speed/{runtime}/alexnet/fp32-bs4.json"
    other = f"results/speed/{'onnxruntime' if runtime == 'oneflow' else 'torch'}/alexnet/fp32-bs4.json"
    (workdir / target).unlink()
    (workdir / other).unlink()
    proc = snakemake(workdir, target, other, "--keep-going", config=broken, check=False)
    assert proc.returncode != 0
    assert (
        f"infbench: the {runtime} runtime's interpreter /nonexistent/python3.10 does not exist"
        f" (config key runtimes.{runtime}.python)" in proc.stderr
    )
    assert (workdir / other).exists()  # everything else still runs
    assert not (workdir / target).exists()
    # the tables are written from what ran, the failed cell saying why
    label = {"oneflow": "OneFlow", "onnxruntime": "ONNX Runtime"}[runtime]
    header, rows = read_markdown_table(workdir / "results/tables/speed-bs4.md")
    assert rows["alexnet"][f"{label}(fp32)"] == "failed"
    assert rows["resnet50"][f"{label}(fp32)"] != "failed"
    note = next(
        line
        for line in (workdir / "results/tables/speed-bs4.md").read_text().splitlines()
        if line.startswith("- `failed`")
    )
    assert f"alexnet {label}(fp32): the {runtime} runtime's interpreter" in note
    assert "results/tables/ shows what ran" in proc.stderr


@pytest.mark.workflow
def test_when_the_reference_fails_the_precision_table_still_shows_top1(finished_run):
    workdir, config = finished_run
    broken = json.loads(json.dumps(config))
    ref_runtime, ref_precision = config["accuracy"]["reference"].split("/")
    broken["runtimes"][ref_runtime]["python"] = "/nonexistent/python3.10"
    (workdir / f"results/accuracy/{ref_runtime}/alexnet/{ref_precision}.npz").unlink()
    for summary in (workdir / "results/accuracy").glob("*/alexnet/*.json"):
        summary.unlink()
    proc = snakemake(workdir, "results/tables/precision.md", "--keep-going", config=broken, check=False)
    assert proc.returncode != 0  # the failure still counts
    path = workdir / "results/tables/precision.md"
    header, rows = read_markdown_table(path)
    ref_label = {"oneflow": "OneFlow", "torch": "PyTorch"}[ref_runtime]
    assert rows["alexnet"][f"{ref_label}({ref_precision})"] == "failed"
    others = [c for c in header[1:] if c != f"{ref_label}({ref_precision})"]
    for column in others:
        assert re.fullmatch(r"0\.\d{3} / n/a \(top-5 [01]\.\d{3}\)", rows["alexnet"][column]), rows["alexnet"]
        # resnet50's reference predictions exist, but were made under the reference's old config
        # (its interpreter changed): their mismatches are not current either
        assert re.fullmatch(r"0\.\d{3} / n/a \(top-5 [01]\.\d{3}\)", rows["resnet50"][column])
    text = path.read_text()
    assert "so mismatches need it: top-1 and top-5 only" in text
    assert f"resnet50 {others[0]}: {config['accuracy']['reference']} predictions made under another config" in text
    assert f"alexnet {ref_label}({ref_precision}): the {ref_runtime} runtime's interpreter" in text


def test_editing_the_label_file_in_place_re_indexes(tmp_path):
    """An ImageNet folder whose path has a space: index it, edit its labels, plan again."""
    from PIL import Image

    root = tmp_path / "image net" / "val"
    root.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 30), (80 * i, 20, 200)).save(root / f"img{i}.JPEG")
    labels = tmp_path / "image net" / "val map.txt"
    config = tiny_config()
    config["dataset"] = {"kind": "imagenet", "root": str(root), "labels": str(labels), "images": "all"}
    labels.write_text("img0.JPEG 1\nimg1.JPEG 2\nimg2.JPEG 3\n")
    index = "results/datasets/imagenet/index.tsv"
    snakemake(tmp_path, index, config=config)
    assert [line.split("\t")[-1] for line in (tmp_path / index).read_text().splitlines()[-3:]] == ["1", "2", "3"]
    dry = snakemake(tmp_path, "-n", index, config=config)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    time.sleep(1.1)  # a new modification time
    labels.write_text("img0.JPEG 1\nimg1.JPEG 2\nimg2.JPEG 7\n")
    assert planned_jobs(snakemake(tmp_path, "-n", index, config=config)) == Counter(index_dataset=1)
    snakemake(tmp_path, index, config=config)
    assert (tmp_path / index).read_text().splitlines()[-1].split("\t")[-1] == "7"
