# Where the workflow's own files are: its scripts, schema and data, and the interpreters its
# Makefile builds. Found from this file (it lies in workflow/rules/), never from the working
# directory nor from workflow.basedir: inside a module, that is the folder of the Snakefile
# that uses it.

import os
import sys


def workflow_folder(rules_dir):
    """The folder holding workflow/rules/: a clone, or a module's folder on disk. A module
    read from a git host (github(...), gitlab(...), as snakedeploy writes it) is not on
    disk: its workflow/ folder is extracted once per commit (extracted_workflow)."""
    if os.path.isdir(str(rules_dir)):
        return os.path.dirname(os.path.dirname(str(rules_dir)))
    if not hasattr(rules_dir, "hosted_repo"):
        print(
            f"infbench: the module's files ({rules_dir}) are neither on disk nor on a git host:"
            " name its snakefile by the path of a clone, or by github(...) or gitlab(...)"
            " (docs/module.md)",
            file=sys.stderr,
        )
        sys.exit(1)
    return extracted_workflow(rules_dir)


def extracted_workflow(source):
    """The workflow/ folder of a module read from a git host, extracted from its commit into
    .snakemake/infbench-workflow/<commit>/ of the working directory. Snakemake's source
    cache holds a module's files one at a time, as it reads them; the steps need the folder
    (launch.sh, the scripts and the infbench package they import)."""
    import io
    import shutil
    import subprocess
    import tarfile
    import tempfile

    git = ["git", "-C", str(source.hosted_repo.repo.git_dir)]  # Snakemake's clone of it
    commit = subprocess.run(
        git + ["rev-parse", f"{source.ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = os.path.abspath(os.path.join(".snakemake", "infbench-workflow", commit))
    if not os.path.isdir(folder):
        archive = subprocess.run(
            git + ["archive", "--format=tar", commit, "workflow"],
            check=True,
            capture_output=True,
        ).stdout
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        part = tempfile.mkdtemp(dir=os.path.dirname(folder))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(part, filter="data")
        try:
            os.rename(part, folder)
        except OSError:  # another process extracted it first
            shutil.rmtree(part)
    return folder


WORKFLOW_DIR = workflow_folder(workflow.current_basedir)
