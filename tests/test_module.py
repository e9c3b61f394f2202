"""The workflow as Snakemake users reuse it: as a module of their own workflow (`module` and
`use rule * from infbench as infbench_*`, with and without a prefix), and deployed into an
empty folder by snakedeploy from a git host. Each runs one tiny config and must give the
tables a run of the clone gives (the precision table as it is, the speed table's shape:
timings differ from run to run). A deployed folder also runs the embedded demo config as
snakedeploy copied it, OneFlow's interpreter named as docs/module.md says, to tables of the
config's rows and columns with every cell measured (a few minutes on two cores)."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ONEFLOW_PYTHON, REPO
from test_workflow import planned_jobs, read_markdown_table

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1"]
# where snakedeploy is told the workflow lives; git serves it from a local bare clone
HOSTED = "https://github.com/infbench-test/infbench"


def tiny_config():
    """One alexnet-sized model at 72/64 px, random weights, ONNX Runtime fp32 on the CPU."""
    return {
        "dataset": {"kind": "synthetic", "images": 6, "seed": 3},
        "models": {
            "alexnet": {
                "arch": "alexnet",
                "resize": 72,
                "crop": 64,
                "checkpoint": {"random": 0},
            }
        },
        "runtimes": {"onnxruntime": {"device": "cpu", "precisions": ["fp32"], "threads": 2}},
        "batch_sizes": [2],
        "timing": {"warmup_batches": 1, "timed_batches": 2, "windows": 2, "staged_batches": 2},
        "accuracy": {"reference": "onnxruntime/fp32"},
        "calibration": {"images": 4, "method": "minmax"},
        "latency": {"batch_sizes": []},  # the speed and accuracy cells show what a module changes
    }


def run(cwd, *args, env=None, check=True, timeout=900):
    proc = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def write_config(folder, config):
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# the columns of cells.csv that do not change from run to run, nor with where a run writes
STABLE_COLUMNS = ("kind", "status", "runtime", "model", "precision", "batch_size", "device",
                  "top1", "top5", "mismatches", "images", "gmacs_per_image")  # fmt: skip


def assert_same_tables(tables, clone_tables):
    """The clone's tables: the precision table word for word, the speed table with the same
    rows and columns and a figure in every cell, every cell of cells.csv the same."""
    assert (tables / "precision.md").read_text() == (clone_tables / "precision.md").read_text()
    header, rows = read_markdown_table(tables / "speed-bs2.md")
    clone_header, clone_rows = read_markdown_table(clone_tables / "speed-bs2.md")
    assert header == clone_header == ["model", "ONNX Runtime(fp32)"]
    assert list(rows) == list(clone_rows) == ["alexnet"]
    assert re.fullmatch(r"\d+(\.\d)?\*?", rows["alexnet"]["ONNX Runtime(fp32)"])

    def cells(path):
        with open(path) as f:
            return [{key: row[key] for key in STABLE_COLUMNS} for row in csv.DictReader(f)]

    assert cells(tables / "cells.csv") == cells(clone_tables / "cells.csv")
    assert [c["status"] for c in cells(tables / "cells.csv")] == ["measured", "measured"]


@pytest.fixture(scope="module")
def clone_tables(tmp_path_factory):
    """The tables of the tiny config run as in the clone (its Snakefile, another folder)."""
    workdir = tmp_path_factory.mktemp("clone")
    write_config(workdir, tiny_config())
    run(workdir, "--snakefile", str(REPO / "Snakefile"), "--configfile", "config/config.yaml")
    return workdir / "results/tables"


CONSUMER = """\
configfile: "config/config.yaml"


module infbench:
    snakefile:
        "{snakefile}"
    config:
        config{prefix}


use rule * from infbench as infbench_*


# Snakemake runs a module's onstart and onerror only when the module's own Snakefile is the
# main one: the consumer calls them
onstart:
    infbench.onstart()


onerror:
    infbench.onerror()
"""

# a runtime's interpreter named by a path relative to the consumer's folder: a wrapper that
# notes each script it runs, then runs it with the interpreter running these tests
WRAPPER = """\
#!/bin/sh
echo "$1" >> "$(dirname "$0")/ran"
exec {python} "$@"
"""


@pytest.fixture(scope="module", params=[None, "bench"], ids=["no-prefix", "prefix"])
def module_run(request, tmp_path_factory):
    """A consumer folder with the workflow as a module, run on the tiny config; ONNX Runtime's
    interpreter named in the consumer's config. Returns the folder, the prefix of the
    module's files ('' or 'bench/') and Snakemake's output."""
    prefix = request.param
    consumer = tmp_path_factory.mktemp("consumer")
    (consumer / "Snakefile").write_text(
        CONSUMER.format(
            snakefile=REPO / "Snakefile",
            prefix=f'\n    prefix:\n        "{prefix}"' if prefix else "",
        )
    )
    wrapper = consumer / "env" / "bin" / "python"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    config = tiny_config()
    config["runtimes"]["onnxruntime"]["python"] = "env/bin/python"
    write_config(consumer, config)
    proc = run(consumer)
    return consumer, f"{prefix}/" if prefix else "", proc


@pytest.mark.workflow
def test_as_a_module_it_gives_the_tables_of_a_clone_run(module_run, clone_tables):
    consumer, prefix, proc = module_run
    assert_same_tables(consumer / prefix / "results/tables", clone_tables)
    # the rules that run where Snakemake runs keep saying so under the module's names
    assert "localrules directive specifies rules" not in proc.stderr
    assert "localrule infbench_tables:" in proc.stderr


@pytest.mark.workflow
def test_a_module_s_files_all_lie_under_its_prefix(module_run):
    consumer, prefix, _ = module_run
    written = {"results", "resources", "logs"}
    mine = {".snakemake", "Snakefile", "config", "env"}
    if prefix:
        assert {p.name for p in consumer.iterdir()} == mine | {prefix.strip("/")}
        assert {p.name for p in (consumer / prefix).iterdir()} == written
    else:
        assert {p.name for p in consumer.iterdir()} == mine | written


@pytest.mark.workflow
def test_the_interpreter_the_consumer_names_runs_the_runtime_s_steps(module_run):
    consumer, prefix, _ = module_run
    ran = (consumer / "env" / "bin" / "ran").read_text().split()
    # each step starts in gpu_slot.py (its GPU slot), which hands on to the step's own script
    # under the same interpreter: the consumer's, twice per step
    assert sorted(os.path.basename(script) for script in ran) == [
        "evaluate.py",
        "gpu_slot.py",
        "gpu_slot.py",
        "measure_speed.py",
    ]
    # the steps run the workflow's own scripts, in its clone
    assert all(script.startswith(str(REPO / "workflow" / "scripts")) for script in ran)


@pytest.mark.workflow
def test_a_module_s_results_name_the_workflow_s_release(module_run):
    from infbench import __version__

    consumer, prefix, _ = module_run
    results = consumer / prefix / "results"
    for path in ("speed/onnxruntime/alexnet/fp32-bs2.json", "accuracy/onnxruntime/alexnet/fp32.json"):
        provenance = json.loads((results / path).read_text())["provenance"]
        assert provenance["workflow"] == {"name": "infbench", "version": __version__}


@pytest.mark.workflow
def test_a_module_s_onstart_and_onerror_run_through_the_consumer(module_run):
    """Last for each module run: it breaks a runtime. onstart held the run lock; onerror
    writes the partial tables under the module's prefix, the failed cell saying why."""
    consumer, prefix, _ = module_run
    assert (consumer / ".snakemake" / "infbench-run.lock").read_text().startswith("pid ")
    config = yaml.safe_load((consumer / "config" / "config.yaml").read_text())
    config["runtimes"]["torch"] = {
        "device": "cpu",
        "precisions": ["fp32"],
        "python": "env/none/python",
    }
    write_config(consumer, config)
    proc = run(consumer, "--keep-going", check=False)
    assert proc.returncode != 0
    missing = consumer / "env" / "none" / "python"
    assert f"infbench: the torch runtime's interpreter {missing} does not exist" in proc.stderr
    assert f"infbench: some jobs failed or were interrupted; {prefix}results/tables/ shows" in proc.stderr
    tables = consumer / prefix / "results/tables"
    header, rows = read_markdown_table(tables / "speed-bs2.md")
    assert rows["alexnet"]["PyTorch(fp32)"] == "failed"
    assert re.fullmatch(r"\d+(\.\d)?\*?", rows["alexnet"]["ONNX Runtime(fp32)"])
    assert "> Partial: written from what ran" in (tables / "speed-bs2.md").read_text()
    assert not (tables / "config.json").exists()  # the next run makes the tables again


def test_a_module_read_from_a_plain_url_stops_with_one_sentence(tmp_path):
    """Snakemake reads a module from any URL, one file at a time; the steps need the
    workflow's folder, which only a clone or a git host gives (served here on 127.0.0.1)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(REPO)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        (tmp_path / "Snakefile").write_text(CONSUMER.format(snakefile=f"{url}/workflow/Snakefile", prefix=""))
        write_config(tmp_path, tiny_config())
        proc = run(tmp_path, "-n", check=False)
    finally:
        server.shutdown()
    assert proc.returncode != 0
    assert (
        f"infbench: the module's files ({url}/workflow/rules) are neither on disk nor on a git host: name its"
        " snakefile by the path of a clone, or by github(...) or gitlab(...)"
    ) in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    """This working tree as a release on a git host: committed and tagged v<version> in a bare
    repository, which git serves for HOSTED (url.<bare>.insteadOf), to snakedeploy's clone
    and to Snakemake's alike. Returns the environment to run them in, the tag and the
    bare repository."""
    from infbench import __version__

    root = tmp_path_factory.mktemp("hosted")
    tree = root / "tree"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    tag = f"v{__version__}"
    git("init", "-q", "-b", "main", cwd=tree)
    git("add", "-A", cwd=tree)
    git("-c", "user.name=infbench", "-c", "user.email=infbench@invalid", "commit", "-qm", tag, cwd=tree)
    git("tag", tag, cwd=tree)
    git("clone", "-q", "--bare", str(tree), str(root / "infbench.git"), cwd=root)
    env = {
        **os.environ,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.file://{root / 'infbench.git'}.insteadOf",
        "GIT_CONFIG_VALUE_0": HOSTED,
        "XDG_CACHE_HOME": str(root / "cache"),  # Snakemake's clone of the module
    }
    return env, tag, root / "infbench.git"


def deploy(hosted, dest):
    """`snakedeploy deploy-workflow` of the release into the empty folder ``dest``."""
    env, tag, _ = hosted
    subprocess.run(
        [sys.executable, "-m", "snakedeploy.client", "deploy-workflow", HOSTED, str(dest), "--tag", tag],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return dest


@pytest.fixture(scope="module")
def deployed(hosted, tmp_path_factory):
    """A deployed folder for the tests below; the tiny config's run replaces its config, so
    the demo config's run deploys a folder of its own."""
    return deploy(hosted, tmp_path_factory.mktemp("deployed"))


def test_snakedeploy_writes_a_module_of_the_release(deployed, hosted):
    _, tag, _ = hosted
    snakefile = (deployed / "workflow" / "Snakefile").read_text()
    assert f'github("infbench-test/infbench", path="workflow/Snakefile", tag="{tag}")' in snakefile
    assert (deployed / "config" / "config.yaml").read_text() == (REPO / "config/config.yaml").read_text()
    assert (deployed / "config" / "README.md").exists()
    assert (deployed / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert (deployed / "profiles" / "default" / "config.yaml").exists()  # gpu=1, keep-going


def test_the_deployed_demo_config_plans_the_jobs_of_the_clone(deployed, hosted, tmp_path):
    env, _, _ = hosted
    deployed_jobs = planned_jobs(run(deployed, "-n", env=env))
    clone_jobs = planned_jobs(run(tmp_path, "-n", "--snakefile", str(REPO / "Snakefile"),
                                  "--configfile", str(REPO / "config/config.yaml")))  # fmt: skip
    # the deployed workflow's default target is workflow/Snakefile's, the clone's `all`
    assert deployed_jobs.pop("default") == clone_jobs.pop("all") == 1
    assert deployed_jobs == clone_jobs and clone_jobs["speed"] == 8


@pytest.mark.workflow
def test_the_deployed_workflow_gives_the_tables_of_a_clone_run(deployed, hosted, clone_tables):
    env, tag, bare = hosted
    write_config(deployed, tiny_config())
    run(deployed, env=env)
    assert_same_tables(deployed / "results/tables", clone_tables)
    # the steps ran the release's own scripts, extracted from git once, for its commit
    (extracted,) = (deployed / ".snakemake" / "infbench-workflow").iterdir()
    commit = subprocess.run(["git", "rev-parse", f"{tag}^{{commit}}"], env=env, check=True,
                            cwd=bare, capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert extracted.name == commit
    result = json.loads((deployed / "results/speed/onnxruntime/alexnet/fp32-bs2.json").read_text())
    assert result["provenance"]["command"][0] == str(extracted / "workflow/scripts/measure_speed.py")


# how the tables name the runtimes (the seed report's spelling)
RUNTIME_LABELS = {"oneflow": "OneFlow", "onnxruntime": "ONNX Runtime", "torch": "PyTorch"}
# a measured cell of each table: images/s (with `*` where the spread was flagged); p50 / p90 /
# p99 ms; top-1 / mismatches (cos, rel against the reference's logits: random weights)
MEASURED = {
    "speed": r"\d+(\.\d)?\*?",
    "latency": r"(\d+(\.\d+)?) / (\d+(\.\d+)?) / (\d+(\.\d+)?)",
    "precision": r"(?P<top1>[01]\.\d{3}) / (?P<mismatches>\d+) \(cos (?P<cos>[01]\.\d{5}), rel (?P<rel>\d\.\de[-+]\d\d)\)",
}


@pytest.mark.workflow
@pytest.mark.skipif(
    not ONEFLOW_PYTHON.exists(),
    reason=f"the demo config's reference is OneFlow: no {ONEFLOW_PYTHON} (make env-oneflow)",
)
def test_a_deployed_folder_runs_the_demo_config_to_full_tables(hosted, tmp_path):
    """The embedded demo config as snakedeploy copied it, run in the deployed folder with its
    profile; OneFlow's interpreter named as docs/module.md says, in a config file of that one
    key merged by --configfile. Every cell of the speed, latency and precision tables is
    measured, in the rows and columns the config asks for (those of `make demo` in a clone)."""
    env, _, _ = hosted
    folder = deploy(hosted, tmp_path / "demo")
    (folder / "config" / "interpreters.yaml").write_text(
        yaml.safe_dump({"runtimes": {"oneflow": {"python": str(ONEFLOW_PYTHON)}}})
    )
    run(folder, "--configfile", "config/interpreters.yaml", env=env, timeout=2400)
    assert (folder / "config" / "config.yaml").read_text() == (REPO / "config/config.yaml").read_text()

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    models = list(config["models"])
    columns = [f"{RUNTIME_LABELS[rt]}({p})" for rt, spec in config["runtimes"].items() for p in spec["precisions"]]
    tables = folder / "results/tables"
    shown = {
        **{f"speed-bs{bs}.md": "speed" for bs in config["batch_sizes"]},
        **{f"latency-bs{bs}.md": "latency" for bs in config["latency"]["batch_sizes"]},
        "precision.md": "precision",
    }
    precision = {}
    for name, kind in shown.items():
        header, rows = read_markdown_table(tables / name)
        assert header == ["model", *columns], name
        assert list(rows) == models, name
        for model in models:
            for column in columns:
                cell = re.fullmatch(MEASURED[kind], rows[model][column])
                assert cell, (name, model, column, rows[model][column])
                if kind == "precision":
                    precision[model, column] = cell
    with open(tables / "cells.csv") as f:
        cells = [c for c in csv.DictReader(f) if c["kind"] in ("speed", "latency", "accuracy")]
    per_cell = len(config["batch_sizes"]) + len(config["latency"]["batch_sizes"]) + 1
    assert len(cells) == len(models) * len(columns) * per_cell
    assert {c["status"] for c in cells} == {"measured"}

    # the accuracy cells, scored against the reference over the config's images: the
    # reference agrees with itself exactly, fp32 elsewhere to the logit, int8 clearly
    ref_runtime, ref_precision = config["accuracy"]["reference"].split("/")
    reference = f"{RUNTIME_LABELS[ref_runtime]}({ref_precision})"
    images = config["dataset"]["images"]
    assert f"top-1 accuracy over {images} images" in (tables / "precision.md").read_text()
    for (model, column), cell in precision.items():
        correct = float(cell["top1"]) * images  # a whole number of images, shown to 3 decimals
        assert abs(correct - round(correct)) < 0.03, (model, column, cell[0])
        cos = float(cell["cos"])
        if column == reference:
            assert (cell["mismatches"], cell["cos"], cell["rel"]) == ("0", "1.00000", "0.0e+00")
        elif column.endswith("(fp32)"):
            assert cos > 0.9999 and float(cell["rel"]) < 1e-3, (model, column, cell[0])
            assert cell["top1"] == precision[model, reference]["top1"] or cell["mismatches"] != "0"
        else:
            assert 0.9 < cos < 1, (model, column, cell[0])
    accuracy = [c for c in cells if c["kind"] == "accuracy"]
    assert {(c["images"], c["reference"]) for c in accuracy} == {(str(images), config["accuracy"]["reference"])}


def test_the_release_is_named_alike_everywhere():
    """The version in the library, CITATION.cff and the CHANGELOG's newest entry; the licence
    that README names is LICENSE's."""
    from infbench import __version__

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["version"] == __version__ and citation["license"] == "MIT"
    newest = re.search(r"^## (\S+) \((\d{4}-\d\d-\d\d)\)$", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert newest.groups() == (__version__, str(citation["date-released"]))
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
    assert "[MIT licence](LICENSE)" in (REPO / "README.md").read_text()
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert set(catalog["usage"]) == {"mandatory-flags", "software-stack-deployment", "report"}
