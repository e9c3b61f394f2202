#!/usr/bin/env bash
# Wheels for an air-gapped GPU node, built on a machine that reaches a package index.
#
#   bash envs/wheelhouse.sh PYTHON STACK DIR     # `make wheelhouse` calls it
#
# PYTHON: an interpreter of the node's Python version (pip builds and picks wheels for it).
# STACK:  full       the main stack (envs/requirements-main.txt) with onnxruntime-gpu in place of
#                    onnxruntime (envs/requirements-gpu.txt): PyTorch and its CUDA libraries
#                    included, several GB
#         workflow   the same without torch and torchvision, for a node whose Python has its
#                    own PyTorch (the node's venv then sees it: envs/offline-gpu.sh)
#         snakemake  Snakemake and its dependencies only (about 28 MB for CPython 3.12), for a
#                    node that has the rest
# DIR gets the wheels and requirements.txt, what envs/offline-gpu.sh installs from it.
# pulp's solver binaries (CBC for several platforms, 40 MB) are left out of its wheel: run
# such a node with Snakemake's greedy scheduler (`--scheduler greedy`, as offline-gpu.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$1 stack=$2 out=$3
mkdir -p "$out"
req=$out/requirements.txt
case "$stack" in
    full) { grep -v '^onnxruntime==' envs/requirements-main.txt; grep -v '^#' envs/requirements-gpu.txt; } >"$req" ;;
    workflow) { grep -vE '^(onnxruntime|torch|torchvision)==' envs/requirements-main.txt; grep -v '^#' envs/requirements-gpu.txt; } >"$req" ;;
    snakemake) grep -E '^snakemake==' envs/requirements-main.txt >"$req" ;;
    *) echo "infbench: unknown wheelhouse stack '$stack': use full, workflow or snakemake (WHEELHOUSE_STACK=...)" >&2; exit 2 ;;
esac
"$python" -m pip wheel --quiet --wheel-dir "$out" -r "$req"
for wheel in "$out"/pulp-*.whl; do
    [ -e "$wheel" ] || continue
    if unzip -l "$wheel" 'pulp/solverdir/*' >/dev/null 2>&1; then
        "$python" - "$wheel" <<'PY'
import os, sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as src, zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if not item.filename.startswith("pulp/solverdir/"):
            dst.writestr(item, src.read(item.filename))
os.replace(path + ".tmp", path)
PY
    fi
done
echo "infbench: $(ls "$out"/*.whl | wc -l) wheels for $("$python" -c 'import sys; print("CPython %d.%d" % sys.version_info[:2])'), $(du -sh "$out" | cut -f1), in $out"
