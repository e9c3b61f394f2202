"""Every path and config value reaches the shell quoted: a `$(...)` in one is text, not a command.

The commands are the ones Snakemake would run (a dry-run with -p), parsed by bash exactly as
Snakemake hands them over, but into a function that only prints its arguments.
"""

import subprocess
import sys

import yaml

from conftest import REPO

PLANT = "$(touch PWNED) `touch PWNED` it's"  # a command substitution twice, and a quote


def words(command, cwd):
    """The arguments bash makes of ``command`` (nothing runs but what the command substitutes)."""
    script = 'args() { printf "%s\\0" "$@"; }; args ' + command
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().split("\0")[:-1]


def value_after(argv, option):
    return argv[argv.index(option) + 1]


def test_a_planted_command_in_a_path_or_url_stays_text(tmp_path):
    checkpoint = tmp_path / f"weights {PLANT}.pth"
    checkpoint.write_bytes(b"")  # a dry-run wants an input that exists
    root = tmp_path / f"data {PLANT}" / "val"
    labels = tmp_path / f"labels {PLANT}.txt"
    url = "https://example.org/models/$(touch PWNED).pth"
    config = {
        "dataset": {"kind": "imagenet", "root": str(root), "labels": str(labels), "images": "all"},
        "models": {
            "mine": {"arch": "alexnet", "resize": 72, "crop": 64, "checkpoint": {"path": str(checkpoint)}},
            "theirs": {"arch": "alexnet", "resize": 72, "crop": 64,
                       "checkpoint": {"url": url, "sha256": "0" * 64}},
        },
        "runtimes": {"onnxruntime": {"device": "cpu", "precisions": ["fp32"]}},
        "batch_sizes": [8],
    }
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n", "-p", "--forceall",
         "--directory", str(work), "--cores", "1", "--configfile", str(work / "config.yaml")],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prefix = f"Shell command: {REPO / 'workflow/scripts/launch.sh'} "
    commands = [line[len("Shell command: "):] for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith(prefix)]  # the steps' commands (a compound one is the report's)
    steps = {}
    for command in commands:
        argv = words(command, cwd=work)
        steps.setdefault(argv[3].rsplit("/", 1)[-1], []).append(argv)
    assert not list(work.rglob("PWNED")) and not list(tmp_path.glob("PWNED"))
    assert sorted(value_after(argv, "--checkpoint") for argv in steps["convert_weights.py"]) == sorted(
        [str(checkpoint), "resources/checkpoints/theirs.pth"]
    )
    [fetch] = steps["fetch_checkpoint.py"]
    assert value_after(fetch, "--url") == url and value_after(fetch, "--sha256") == "0" * 64
    [index] = steps["index_dataset.py"]
    assert value_after(index, "--root") == str(root) and value_after(index, "--labels") == str(labels)
    assert {"export_onnx.py", "preprocess.py", "measure_speed.py", "evaluate.py", "score.py"} <= set(steps)
    exported = sorted(value_after(argv, "--weights") for argv in steps["export_onnx.py"])
    assert exported == ["results/weights/mine.safetensors", "results/weights/theirs.safetensors"]
