#!/usr/bin/env bash
# On an air-gapped GPU node: install the workflow's environment from a wheelhouse made by
# `make wheelhouse` (envs/wheelhouse.sh) on a connected machine, then run config/gpu.yaml.
#
#   bash envs/offline-gpu.sh [WHEELHOUSE] [SNAKEMAKE ARGS...]
#
# WHEELHOUSE defaults to wheelhouse/. PYTHON (default python3) must be the Python version
# the wheelhouse was built for. The venv is .venv, made with --system-site-packages so that
# a node's own PyTorch (stacks `workflow` and `snakemake`) stays visible; nothing is
# downloaded (pip --no-index). Extra arguments go to Snakemake (e.g. -n for a dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
wheelhouse=${1:-wheelhouse}
[ $# -gt 0 ] && shift
python=${PYTHON:-python3}
if [ ! -f "$wheelhouse/requirements.txt" ]; then
    echo "infbench: $wheelhouse/requirements.txt does not exist: run \`make wheelhouse WHEEL_PYTHON=...\` on a connected machine and copy $wheelhouse/ here" >&2
    exit 1
fi
"$python" -m venv --system-site-packages .venv
.venv/bin/pip install --quiet --no-index --find-links "$wheelhouse" -r "$wheelhouse/requirements.txt"
touch .venv/.installed
.venv/bin/snakemake --version
# --configfile=FILE, one argument: after `--configfile FILE` Snakemake reads the arguments up
# to the next option as more config files, so a target given first would be read as one
exec .venv/bin/snakemake --cores all --resources gpu=1 --scheduler greedy --configfile=config/gpu.yaml "$@"
