#!/usr/bin/env bash
# Pack what this project's GPU machine lacks for the TensorRT run (benchmarks/h200/run.sh):
# that machine reaches no package index and takes at most 64 MiB a call, so everything
# travels as numbered parts of one tar, in .devpack/parts/ (git-ignored, never committed).
#
#   bash benchmarks/h200/pack.sh      # on a machine with PyPI and pyenv's Python 3.10 / 3.12
#
# Inside: pyenv's Python 3.10 (without its tests and site-packages), the wheels of
# envs/requirements-tensorrt.txt but cuBLAS 12 and cuDNN 8 (over 1 GB; see run.sh), stand-in
# libraries for those two (stubs that return an error from every call: libnvinfer_plugin
# links them, but with tactic sources limited to TensorRT's own kernels nothing calls them),
# and Snakemake's wheels for the machine's Python 3.12 less what its image already has.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY310=${PY310:-/root/.pyenv/versions/3.10.13/bin/python3.10}
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
out=.devpack
rm -rf "$out/pack" "$out/parts" && mkdir -p "$out/pack/w310" "$out/pack/w312" "$out/pack/stubs" "$out/parts"

# WITH_TRT=0 leaves TensorRT, Python 3.10 and the stand-ins out (a run of PyTorch and ONNX Runtime only)
if [ "${WITH_TRT:-1}" = 1 ]; then
# Python 3.10, unpacked at the same path there
prefix=$("$PY310" -c 'import sys; print(sys.prefix)')
tar -C / -cJf "$out/pack/python310.tar.xz" --exclude="${prefix#/}/lib/python3.10/test" \
    --exclude="${prefix#/}/lib/python3.10/site-packages" --exclude='*.a' --exclude='__pycache__' "${prefix#/}"

# the TensorRT stack for Python 3.10, less the CUDA-12 math libraries
grep -vE '^(#|nvidia-cu|$)' envs/requirements-tensorrt.txt >"$out/req310.txt"
"$PY310" -m pip download -q --no-deps -d "$out/pack/w310" -r "$out/req310.txt" \
    cuda-pathfinder protobuf ml_dtypes typing_extensions
fi

# Snakemake (as in envs/requirements-main.txt) for the machine's Python 3.12, less what its image has
# (`make wheelhouse WHEELHOUSE_STACK=snakemake`, pulp's solver binaries left out: the run
# uses Snakemake's greedy scheduler)
bash envs/wheelhouse.sh "$PY312" snakemake "$out/pack/w312"
(cd "$out/pack/w312" && rm -f requirements.txt attrs-* certifi-* charset_normalizer-* idna-* jinja2-* markupsafe-* \
    packaging-* psutil-* pyyaml-* requests-* tabulate-* typing_extensions-*)
# snakemake imports platformdirs (its wheel did not come along); the tables need pandas 3
# and the tabulate of the pins (the image's own pandas may be older: tables.require_pandas_3);
# the speed cells read the GPU's energy counter through nvidia-ml-py
pins=$(grep -E '^(onnxconverter-common|pandas|tabulate|nvidia-ml-py)==' envs/requirements-main.txt | sed 's/ *#.*//')
"$PY312" -m pip download -q --no-deps -d "$out/pack/w312" $pins platformdirs
# ONNX Runtime's CUDA build (256 MB, 4 more parts): with WITH_ORT=1; installed before the
# machine's CPU-only onnxruntime on the path (run.sh), so that the ONNX Runtime cells run on CUDA
if [ "${WITH_ORT:-0}" = 1 ]; then
    "$PY312" -m pip download -q --no-deps -d "$out/pack/w312" -r envs/requirements-gpu.txt
fi

# stand-ins for libcublas.so.12, libcublasLt.so.12 and libcudnn.so.8
if [ "${WITH_TRT:-1}" = 1 ]; then
    "$PY310" benchmarks/h200/stubs.py "$out/pack/w310"/tensorrt-*.whl "$out/pack/stubs"
fi

tar -C "$out/pack" -cf - . | split -b 60M -d -a 2 - "$out/parts/p"
ls -l "$out/parts"
