#!/usr/bin/env bash
# Pack what this project's GPU machine lacks for its H200 run (benchmarks/h200/run.sh): that
# machine reaches no package index and takes at most 64 MiB a call, so everything travels as
# the numbered 60 MiB parts of one xz-compressed tar, in .devpack/parts/ (git-ignored, never
# committed), with MANIFEST (each part's sha256).
#
#   bash benchmarks/h200/pack.sh           # on a machine with PyPI and pyenv's Python 3.10 / 3.12
#   bash benchmarks/h200/pack.sh wheels    # only resolve the pins and fetch the wheels
#   bash benchmarks/h200/pack.sh parts DIR OUT [SIZE]  # any folder as parts (default 60M)
#
# The wheels are what pip's resolver picks, for the target Python, from the project's pins
# (benchmarks/h200/wheels.py lock: `pip install --dry-run --report`, written as a hashed lock,
# fetched with `pip wheel --require-hashes`, checked with wheels.py verify):
# - Python 3.10: envs/requirements-tensorrt.txt (TensorRT 8.6.0, cuBLAS 12, cuDNN 8, the
#   NVRTC cuDNN requires, cuda-python, numpy, onnx), installed into site310/ here;
# - Python 3.12 (the machine's python3): snakemake, pandas, tabulate, onnxconverter-common
#   (and with WITH_ORT=1 onnxruntime-gpu) of envs/requirements-main.txt / -gpu.txt, the rest of
#   the resolution constrained by requirements-main.txt, installed into site312/ here less the
#   packages IMAGE_HAS names (the machine's image has them; run.sh start checks that its
#   versions meet every requirement of what travels, with wheels.py satisfied).
# Inside the pack: pyenv's Python 3.10 (without its tests and site-packages), site310/,
# site312/, lock310.txt and lock312.txt, PRUNED.txt (what was left out of the wheels, with sizes).
#
# The CUDA math libraries (STANDINS): by default the real ones, as TensorRT 8.6 uses them:
# cuBLAS (libcublas, libcublasLt), cuDNN's shim with its inference sub-libraries ops_infer and
# cnn_infer (the training ones and adv_infer, for RNNs, serve none of TensorRT's convolution
# tactics: docs/tensorrt-api-notes.md), NVRTC without its .alt twins; headers, libnvblas,
# pulp's solver binaries and the test suites of pandas and onnx stay behind. STANDINS=1:
# stand-ins for cuBLAS and cuDNN instead (benchmarks/h200/stubs.py: every function returns an
# error; run.sh then limits TensorRT to its own tactic sources), the fallback when the real
# ones cannot travel; the stand-ins travel in every pack (LIBS=stand-ins on the machine).
# WITH_TRT=0: no Python 3.10 and no TensorRT (a run of PyTorch and ONNX Runtime only).
# XZ_LEVEL: xz's preset (default 6).
#
# Sizes (2026-12-02, xz -6; parts of 60 MiB): see docs/h200-pack.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY310=${PY310:-/root/.pyenv/versions/3.10.13/bin/python3.10}
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
REQ_TRT=${REQ_TRT:-envs/requirements-tensorrt.txt}
REQ_MAIN=${REQ_MAIN:-envs/requirements-main.txt}
REQ_GPU=${REQ_GPU:-envs/requirements-gpu.txt}
# (nvidia-ml-py: the speed cells read the GPU's energy counter through it)
MAIN_PROJECTS=${MAIN_PROJECTS:-snakemake pandas tabulate onnxconverter-common nvidia-ml-py}
# the machine's own numpy, onnx, protobuf and ml_dtypes stay in use (its PyTorch and ONNX are
# built with them); everything else of the resolution travels, newer than the image's or not
IMAGE_HAS=${IMAGE_HAS:-ml-dtypes numpy onnx protobuf}
WITH_TRT=${WITH_TRT:-1} WITH_ORT=${WITH_ORT:-0} STANDINS=${STANDINS:-0} XZ_LEVEL=${XZ_LEVEL:-6}
out=${OUTDIR:-.devpack}
pack=$out/pack wheels=$out/wheels

# the locks and the wheels of the Python 3.10 (TensorRT) and 3.12 (workflow) stacks
fetch_wheels() {
    mkdir -p "$wheels"
    rm -f "$out/lock310.txt" "$out/lock312.txt"
    if [ "$WITH_TRT" = 1 ]; then
        "$PY310" benchmarks/h200/wheels.py lock "$out/lock310.txt" -r "$REQ_TRT"
        rm -rf "$wheels/w310"
        "$PY310" -m pip wheel -q --no-deps --require-hashes -r "$out/lock310.txt" -w "$wheels/w310"
        "$PY310" benchmarks/h200/wheels.py verify "$out/lock310.txt" "$wheels/w310"
    fi
    local names=() project
    for project in $MAIN_PROJECTS; do names+=(--name "$project"); done
    [ "$WITH_ORT" = 1 ] && names+=(--name onnxruntime-gpu)
    "$PY312" benchmarks/h200/wheels.py lock "$out/lock312.txt" -r "$REQ_MAIN" -r "$REQ_GPU" -c "$REQ_MAIN" "${names[@]}"
    rm -rf "$wheels/w312"
    "$PY312" -m pip wheel -q --no-deps --require-hashes -r "$out/lock312.txt" -w "$wheels/w312"
    "$PY312" benchmarks/h200/wheels.py verify "$out/lock312.txt" "$wheels/w312"
}

# $1 folder, then paths under it: removed, each listed with its size in PRUNED.txt
prune() {
    local root=$1 path
    shift
    for path in "$@"; do
        [ -e "$root/$path" ] || continue
        du -sb "$root/$path" | sed "s|$root/||" >>"$pack/PRUNED.txt"
        rm -rf "${root:?}/$path"
    done
}

stack310() {
    # pyenv's Python 3.10, unpacked at the same path there
    local prefix
    prefix=$("$PY310" -c 'import sys; print(sys.prefix)')
    tar -C / -cf "$pack/python310.tar" --exclude="${prefix#/}/lib/python3.10/test" \
        --exclude="${prefix#/}/lib/python3.10/site-packages" --exclude='*.a' --exclude='__pycache__' "${prefix#/}"
    "$PY310" -m pip install -q --no-index --no-deps --no-compile --target "$pack/site310" "$wheels/w310"/*.whl
    local site=$pack/site310 cudnn=nvidia/cudnn/lib
    prune "$site" nvidia/cublas/include nvidia/cudnn/include nvidia/cuda_runtime/include nvidia/cuda_nvrtc/include \
        nvidia/cublas/lib/libnvblas.so.12 "$cudnn/libcudnn_ops_train.so.8" "$cudnn/libcudnn_cnn_train.so.8" \
        "$cudnn/libcudnn_adv_infer.so.8" "$cudnn/libcudnn_adv_train.so.8"
    prune "$site" $(cd "$site" && ls nvidia/cuda_nvrtc/lib/*.alt.* 2>/dev/null) onnx/backend/test
    # the stand-ins travel in every pack (a few kB): run.sh's LIBS=stand-ins puts them first
    "$PY310" benchmarks/h200/stubs.py "$wheels/w310"/tensorrt-*.whl "$pack/stubs"
    if [ "$STANDINS" = 1 ]; then
        prune "$site" nvidia/cublas/lib/libcublas.so.12 nvidia/cublas/lib/libcublasLt.so.12 \
            "$cudnn/libcudnn.so.8" "$cudnn/libcudnn_ops_infer.so.8" "$cudnn/libcudnn_cnn_infer.so.8"
        cp "$pack/stubs"/libcublas*.so.12 "$site/nvidia/cublas/lib/"
        cp "$pack/stubs"/libcudnn.so.8 "$site/$cudnn/"
        echo "stand-ins" >"$pack/LIBRARIES"
    else
        echo "real" >"$pack/LIBRARIES"
    fi
}

stack312() {
    local carry=() wheel name keep project
    for wheel in "$wheels/w312"/*.whl; do
        name=$(basename "$wheel" | cut -d- -f1 | tr '_.' '--' | tr 'A-Z' 'a-z')
        keep=1
        for project in $IMAGE_HAS; do [ "$name" = "$project" ] && keep=0; done
        if [ "$keep" = 1 ]; then carry+=("$wheel"); else echo "site312/$name (the image's)" >>"$pack/PRUNED.txt"; fi
    done
    "$PY312" -m pip install -q --no-index --no-deps --no-compile --target "$pack/site312" "${carry[@]}"
    # pulp's solver binaries (run.sh runs Snakemake's greedy scheduler) and pandas' own tests
    prune "$pack/site312" pulp/solverdir pandas/tests
}

# $1 folder, $2 where its parts and MANIFEST go, $3 part size: one tar of the folder through xz,
# cut into parts, each part's sha256 in MANIFEST (run.sh receive checks them, unpack joins them)
make_parts() {
    mkdir -p "$2"
    tar -C "$1" -cf - . | xz -T0 "-$XZ_LEVEL" | split -b "$3" -d -a 2 - "$2/p"
    (cd "$2" && sha256sum p[0-9]* >MANIFEST)
}

case "${1:-}" in
    wheels) fetch_wheels; exit 0 ;;
    parts) make_parts "$2" "$3" "${4:-60M}"; exit 0 ;;
esac
rm -rf "$pack" "$out/parts" && mkdir -p "$pack" "$out/parts"
fetch_wheels
: >"$pack/PRUNED.txt"
[ "$WITH_TRT" = 1 ] && stack310
stack312
cp "$out"/lock3*.txt "$pack/"
make_parts "$pack" "$out/parts" 60M
du -sm "$pack" "$wheels" | sed 's/^/MB /'
parts=("$out"/parts/p[0-9]*)
echo "${#parts[@]} parts of 60 MiB in $out/parts ($(cat "$pack/LIBRARIES" 2>/dev/null || echo "no TensorRT") CUDA libraries)"
