"""The numbers of README.md, docs/gpu.md and config/README.md that a command can produce,
against that command: the jobs each shipped config plans and the runtimes it times, from one Snakemake
dry-run per config (`snakemake -n`, in an empty working directory: every job planned)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infbench.runtimes import LABELS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.prefix) / "bin" / "snakemake"
CONFIGS = ("config.yaml", "gpu.yaml", "imagenet-gpu.yaml")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """config file -> (jobs planned, runtimes with speed jobs), from its dry-run."""
    plans = {}
    for name in CONFIGS:
        workdir = tmp_path_factory.mktemp(name.replace(".", "-"))
        proc = subprocess.run(
            [str(SNAKEMAKE), "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
             "--configfile", str(REPO / "config" / name)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
        total = re.search(r"^total\s+(\d+)$", proc.stdout, re.MULTILINE)
        assert total, proc.stdout[-2000:]
        runtimes = set(re.findall(r"results/speed/([a-z]+)/", proc.stdout))
        plans[name] = (int(total.group(1)), runtimes)
    return plans


def paragraph(path, marker):
    """The paragraph of ``path`` (blank-line separated) that holds ``marker``."""
    found = [p for p in (REPO / path).read_text().split("\n\n") if marker in p]
    assert len(found) == 1, f"{path}: {len(found)} paragraphs hold {marker!r}"
    return found[0]


def labels_named(text):
    """The runtimes a text names, by the tables' labels."""
    return {name for name, label in LABELS.items() if label in text}


def configured_runtimes(name):
    return set(yaml.safe_load((REPO / "config" / name).read_text())["runtimes"])


def test_each_config_times_the_runtimes_it_lists(planned):
    for name in CONFIGS:
        assert planned[name][1] == configured_runtimes(name), name


def test_readme_gives_the_jobs_and_runtimes_of_the_demo(planned):
    text = paragraph("README.md", "`make demo` runs")
    assert re.findall(r"(\d+) jobs", text) == [str(planned["config.yaml"][0])]
    assert labels_named(text) == planned["config.yaml"][1]


def test_readme_gives_the_jobs_and_runtimes_of_the_seed_matrix(planned):
    text = paragraph("README.md", "It needs the ImageNet validation images")
    assert re.search(r"\((\d+) jobs\)", text).group(1) == str(planned["imagenet-gpu.yaml"][0])
    assert labels_named(text) == planned["imagenet-gpu.yaml"][1]


def test_gpu_page_names_the_runtimes_of_the_gpu_config(planned):
    text = paragraph("docs/gpu.md", "`config/gpu.yaml`: the four seed models")
    assert labels_named(text) == planned["gpu.yaml"][1]


def test_config_readme_names_the_runtimes_of_the_gpu_config(planned):
    text = paragraph("config/README.md", "`config/config.yaml` is the embedded default")
    gpu = text[text.index("`config/gpu.yaml`") :].split("nothing to download")[0]
    # OneFlow is named only as the one it leaves out
    assert labels_named(gpu.replace("not OneFlow", "")) == planned["gpu.yaml"][1]
