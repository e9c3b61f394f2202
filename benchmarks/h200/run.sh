#!/usr/bin/env bash
# The H200 runs of docs/results/h200.md, on this project's GPU machine (an NVIDIA H200 with
# Python 3.12 and PyTorch but no Snakemake, TensorRT or Python 3.10, and no network). What it
# lacks travels in the parts benchmarks/h200/pack.sh makes, one part per device call, back to
# back; each call carries .devpack/parts/pNN and .devpack/parts/MANIFEST:
#
#   bash benchmarks/h200/run.sh receive           # keep this call's part (sha256-checked); a
#                                                 # background unpacker (started by the first
#                                                 # call) decompresses each part as it arrives
#   bash benchmarks/h200/run.sh start             # wait for the unpacker, check, start the job
#   bash benchmarks/h200/run.sh collect [SECONDS] # wait for the job (at most SECONDS); results,
#                                                 # and run.json (the run's summary), to $OUT
#
# start puts TensorRT's Python 3.10 together (site310, with the CUDA libraries the pack
# carried: LIBRARIES real or stand-ins), checks which cuBLAS/cuDNN/NVRTC libraries a small
# TensorRT build opens (benchmarks/h200/libcheck.py) and that the image's packages meet every
# requirement of what travelled for its Python 3.12 (wheels.py satisfied). LIBS=stand-ins
# runs a pack of real libraries with the stand-ins instead (they travel in every pack).
# The job: `snakemake --cores CORES --resources gpu=1` (CORES default all: a timed run holds
# every core, CPU steps such as calibration run side by side) on config/gpu.yaml with MODELS
# (default all four; LEVEL sets builder_optimization_level, default the project's), TensorRT's
# interpreter the Python 3.10 of the pack: with the real libraries TensorRT's default tactic
# sources, with stand-ins only its own kernels (EDGE_MASK_CONVOLUTIONS, JIT_CONVOLUTIONS);
# without TensorRT in the pack (WITH_TRT=0) its cells are left out. Then the idle ratio
# (benchmarks/idle_ratio.py) and run.json (benchmarks/h200/summary.py: date, command, COMMIT
# (set it: the machine gets no .git), versions, Snakemake's exit status and wall seconds, the
# timed seconds, every engine's build seconds); the side studies of SIDE (default 0;
# 1: ONNX Runtime with CUDA graphs and torch.compile, resnet50 batch 8 and 50; sync: ONNX
# Runtime's resnet50 cells at per_run_sync auto); the harness-efficiency check of the PyTorch
# and ONNX Runtime cells of the models in EFFICIENCY (default none) and, with TRT_EFFICIENCY=1,
# of every TensorRT cell; the builder-level study (batch 8, levels LEVELS, default 0-4, of the
# precisions in STUDY, default none); with BISECT=1 (before the workflow),
# benchmarks/tensorrt_bisect.py on inception_v3's int8 ONNX as the workflow exports it (the
# graph TensorRT 8.6 fails on); with ORT_DIAG=1 the ONNX Runtime harness diagnosis (ort_diag below).
# WORKFLOW=0 runs no workflow, only the Snakemake steps that make the weights and fp32/fp16
# ONNX files of MODELS, for an efficiency-only session (EFF_RUNTIMES: default torch onnxruntime).
# LATENCY=1 adds, after the workflow, benchmarks/latency_energy_check.py on each model of
# MODELS: the harness's p50 at batch 1 against a hand loop and the energy plausibility
# checks at batch 8 and 50, for PyTorch, ONNX Runtime and (when it travelled) TensorRT,
# fp32/fp16/int8 (into $RUN/latency-energy.md and latency-energy-*.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=${PACK:-/tmp/pack} PARTS=${PARTS:-/tmp/parts} RUN=${RUN:-/tmp/run} TRTPY=${TRTPY:-/tmp/trtpy}
UNPACK_WAIT_S=${UNPACK_WAIT_S:-1800}  # the unpacker gives up on a part that has not come by then
SITE310=$PACK/site310 SITE312=$PACK/site312
PY310=/root/.pyenv/versions/3.10.13/bin/python3.10
MODELS=${MODELS:-alexnet vgg16 resnet50 inception_v3}
LEVEL=${LEVEL:-}  # TensorRT builder optimisation level for the run (empty: the project's default)
LEVELS=${LEVELS:-0 1 2 3 4}
STUDY=${STUDY-}
CORES=${CORES:-all}
EFFICIENCY=${EFFICIENCY-}
TRT_EFFICIENCY=${TRT_EFFICIENCY:-0}
SIDE=${SIDE:-0}
WORKFLOW=${WORKFLOW:-1}  # 0: no workflow run, only the artifacts the efficiency checks time
EFF_RUNTIMES=${EFF_RUNTIMES:-torch onnxruntime}
BISECT=${BISECT:-0}
LATENCY=${LATENCY:-0}
# RUNTIMES: the cells of these runtimes only, one Snakemake run per model in MODELS' order
# (a model's engines, then its cells), so a session that ends early keeps whole models;
# empty: the whole config in one run. LATENCY_CELLS=0 leaves the config's latency cells out.
RUNTIMES=${RUNTIMES:-}
LATENCY_CELLS=${LATENCY_CELLS:-1}
# ORT_STUDY: "model:precision ..." timed first by benchmarks/ort_cuda_options.py (ONNX
# Runtime's prefer_nhwc x cudnn_conv_algo_search, batch 8 and 50), after Snakemake made
# their ONNX files
ORT_STUDY=${ORT_STUDY:-}
# IMPORT: folders of an earlier part's result files (docs/results/h200/<part>/results),
# copied into results/ by start; with FINAL=1, after the RUNTIMES runs, they are touched (the
# steps this session redid upstream, such as the tensor cache, must not count as newer than
# them: the tables check each result against the current config, not Snakemake) and the
# whole config runs once more, which then makes only what is missing and the tables
IMPORT=${IMPORT:-}
FINAL=${FINAL:-0}
STANDIN_SOURCES=EDGE_MASK_CONVOLUTIONS,JIT_CONVOLUTIONS

# how many parts are here, of how many
parts_here() {
    local count=0 part
    for part in "$PARTS"/p[0-9]*; do [ -e "$part" ] && count=$((count + 1)); done
    echo "$count of $(wc -l <"$PARTS/MANIFEST")"
}

# what one call carried: its part(s) into $PARTS (checked against MANIFEST), and the
# background unpacker started if it is not running yet
receive() {
    mkdir -p "$PARTS" "$PACK"
    [ -e .devpack/parts/MANIFEST ] || { echo "infbench: .devpack/parts/MANIFEST did not come with this call; carry it with every part"; exit 2; }
    cp .devpack/parts/MANIFEST "$PARTS/MANIFEST"
    local part name
    for part in .devpack/parts/p[0-9]*; do
        [ -e "$part" ] || continue
        name=$(basename "$part")
        [ -e "$PARTS/$name" ] && continue
        if ! grep -q "^$(sha256sum <"$part" | cut -d' ' -f1)  $name\$" "$PARTS/MANIFEST"; then
            echo "infbench: $name arrived damaged or is not in MANIFEST (sha256 differs); send it again"
            exit 2
        fi
        cp "$part" "$PARTS/.$name" && mv "$PARTS/.$name" "$PARTS/$name"  # whole, or not there
    done
    if [ ! -e "$PARTS/unpacker.pid" ] || ! kill -0 "$(cat "$PARTS/unpacker.pid")" 2>/dev/null; then
        [ -e "$PACK.done" ] || { setsid nohup bash benchmarks/h200/run.sh unpack >"$PARTS/unpack.log" 2>&1 </dev/null &
            echo $! >"$PARTS/unpacker.pid"; }
    fi
    echo "parts here: $(parts_here); unpacked so far: $(du -sm "$PACK" | cut -f1) MB"
}

# the background unpacker: each part in MANIFEST's order, as it arrives, through xz and tar
unpack() {
    local names
    names=$(awk '{print $2}' "$PARTS/MANIFEST")
    if (for name in $names; do
        waited=0
        while [ ! -e "$PARTS/$name" ]; do
            [ "$waited" -ge "$UNPACK_WAIT_S" ] && { echo "no $name after $waited s" >&2; exit 1; }
            sleep 1
            waited=$((waited + 1))
        done
        cat "$PARTS/$name"
    done) | xz -dc -T0 | tar -x -C "$PACK"; then
        touch "$PACK.done"
    else
        echo "unpacking failed: $(tail -n 1 "$PARTS/unpack.log")" >"$PACK.failed"
    fi
}

# the Python 3.10 of TensorRT, with the CUDA libraries of LIBS (default: what the pack carried)
trt_python() {
    local libraries=${LIBS:-$(cat "$PACK/LIBRARIES")} preload=""
    [ "$libraries" = stand-ins ] && [ "$(cat "$PACK/LIBRARIES")" = real ] && preload="LD_LIBRARY_PATH=$PACK/stubs "
    printf '#!/bin/sh\n%sPYTHONPATH=%s exec %s "$@"\n' "$preload" "$SITE310" "$PY310" >"$TRTPY"
    chmod +x "$TRTPY"
    echo "$libraries" >"$RUN/libraries"
}

start() {
    mkdir -p "$RUN"
    local waited=0
    while [ ! -e "$PACK.done" ] && [ ! -e "$PACK.failed" ] && [ "$waited" -lt "${START_WAIT_S:-600}" ]; do
        sleep 1
        waited=$((waited + 1))
    done
    if [ ! -e "$PACK.done" ]; then
        echo "infbench: the pack is not unpacked ($(parts_here) parts here; $(cat "$PACK.failed" 2>/dev/null || echo "still unpacking")): receive the rest, or see $PARTS/unpack.log"
        exit 2
    fi
    date -u +%Y-%m-%dT%H:%M:%SZ >"$RUN/started"
    if [ -e "$PACK/python310.tar" ]; then
        tar -xf "$PACK/python310.tar" -C /
        trt_python
        "$TRTPY" benchmarks/h200/summary.py versions tensorrt numpy onnx ml-dtypes cuda-python cuda-bindings \
            nvidia-cublas-cu12 nvidia-cudnn-cu12 nvidia-cuda-nvrtc-cu12 >"$RUN/versions-tensorrt.json"
        cat "$RUN/versions-tensorrt.json"; echo " (libraries: $(cat "$RUN/libraries"))"
        # which CUDA libraries a small build opens, and that it builds (a missing cuDNN part shows
        # here, in seconds); the stand-ins answer every call with an error: their run's sources only
        local sources=() rc=0
        [ "$(cat "$RUN/libraries")" = stand-ins ] && sources=(--tactic-sources "$STANDIN_SOURCES")
        LD_DEBUG=files "$TRTPY" benchmarks/h200/libcheck.py "${sources[@]}" 2>"$RUN/libcheck-ld.log" >"$RUN/libcheck.txt" || rc=$?
        grep -oE 'opening file=[^ ]*(cublas|cudnn|nvrtc)[^ ]*' "$RUN/libcheck-ld.log" | sort -u | sed 's/opening file=/opened /' >>"$RUN/libcheck.txt" || true
        grep -E 'cannot open shared object|Could not load library|^infbench' "$RUN/libcheck-ld.log" | head -5 >>"$RUN/libcheck.txt" || true
        cat "$RUN/libcheck.txt"
        if [ "$rc" != 0 ]; then
            echo "infbench: a small TensorRT build failed with the $(cat "$RUN/libraries") CUDA libraries of the pack (above; exit $rc, $RUN/libcheck-ld.log); LIBS=stand-ins bash benchmarks/h200/run.sh start runs with the stand-ins that travelled with them"
            exit 2
        fi
    fi
    if ! PYTHONPATH=$SITE312 python3 benchmarks/h200/wheels.py satisfied "$SITE312" 2>"$RUN/satisfied.txt"; then
        cat "$RUN/satisfied.txt"
        echo "infbench: the image's packages do not meet what travelled for its Python 3.12 (above); pack again with those names out of IMAGE_HAS (benchmarks/h200/pack.sh)"
        exit 2
    fi
    PYTHONPATH=$SITE312 python3 benchmarks/h200/summary.py versions snakemake pandas tabulate onnxconverter-common \
        onnxruntime onnxruntime-gpu onnx numpy torch torchvision >"$RUN/versions-main.json"
    cat "$RUN/versions-main.json"; echo
    # one nvidia-smi answer as the clock probe asks for it, recorded (tests/test_gpu.py)
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,clocks_throttle_reasons.active \
        --format=csv,noheader,nounits -i 0 >"$RUN/nvidia-smi-reading.txt" 2>&1 || true
    LATENCY_CELLS=$LATENCY_CELLS PYTHONPATH=$SITE312 python3 - "$MODELS" "$TRTPY" "$RUN/h200.yaml" "$LEVEL" "$(cat "$RUN/libraries" 2>/dev/null)" "$STANDIN_SOURCES" <<'PY'
import os, sys, yaml
models, python, out, level, libraries, standin_sources = sys.argv[1:]
config = yaml.safe_load(open("config/gpu.yaml"))
config["models"] = {m: config["models"][m] for m in models.split()}
if os.path.exists(python):
    config["runtimes"]["tensorrt"]["python"] = python
    if libraries == "stand-ins":  # the stand-ins answer every call with an error: TensorRT's own kernels only
        config["runtimes"]["tensorrt"]["tactic_sources"] = standin_sources.split(",")
    if level:
        config["runtimes"]["tensorrt"]["builder_optimization_level"] = int(level)
else:
    print("TensorRT did not travel (WITH_TRT=0): its cells are left out")
    config["runtimes"].pop("tensorrt")
if os.environ.get("LATENCY_CELLS") == "0":
    config["latency"] = {"batch_sizes": []}
import onnxruntime
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    print(f"onnxruntime {onnxruntime.__version__} here has no CUDA provider: its cells are left out"
          " (pack with WITH_ORT=1 to carry onnxruntime-gpu)")
    config["runtimes"].pop("onnxruntime", None)
yaml.safe_dump(config, open(out, "w"), sort_keys=False)
print("runtimes:", {name: {k: v for k, v in block.items() if k != "precisions"} for name, block in config["runtimes"].items()})
PY
    local folder
    for folder in $IMPORT; do
        cp -r "$folder"/. results/
        (cd "$folder" && find . -type f) | sed 's|^\./|results/|' >>"$RUN/imported.txt"
        echo "imported $(find "$folder" -type f | wc -l) result files from $folder"
    done
    setsid nohup bash benchmarks/h200/run.sh job >"$RUN/job.log" 2>&1 </dev/null &
    echo "job started"
}

# the speed and accuracy result files of RUNTIMES' cells of model $1 (from h200.yaml), less
# those IMPORT brought (an earlier part measured them; FINAL's whole-config run keeps them)
cell_targets() {
    PYTHONPATH=$SITE312 python3 - "$RUN/h200.yaml" "$1" "$RUNTIMES" "$RUN/imported.txt" <<'PY'
import os, sys, yaml
config, model, runtimes = yaml.safe_load(open(sys.argv[1])), sys.argv[2], sys.argv[3].split()
imported = set(open(sys.argv[4]).read().split()) if os.path.exists(sys.argv[4]) else set()
for runtime in runtimes:
    for precision in config["runtimes"].get(runtime, {}).get("precisions", []):
        files = [f"results/accuracy/{runtime}/{model}/{precision}.json"]
        files += [f"results/speed/{runtime}/{model}/{precision}-bs{bs}.json" for bs in config["batch_sizes"]]
        print("\n".join(f for f in files if f not in imported))
PY
}

# ORT_STUDY: ONNX Runtime's CUDA options on the workflow's own ONNX files
ort_study() {
    local item files=()
    for item in $ORT_STUDY; do files+=("results/onnx/${item%%:*}/${item##*:}.onnx"); done
    phase "ONNX files for the ONNX Runtime options study"
    python3 -m snakemake --cores "$CORES" --configfile "$RUN/h200.yaml" --scheduler greedy "${files[@]}" \
        >"$RUN/snakemake-study.log" 2>&1 || echo "study: snakemake failed" | tee -a "$RUN/ort-options.md"
    phase "ONNX Runtime options study"
    python3 benchmarks/ort_cuda_options.py --device cuda --onnx "${files[@]}" --batch-size 8 50 --timed 100 \
        >>"$RUN/ort-options.md" 2>&1 || echo "study failed" >>"$RUN/ort-options.md"
}

gpu_state() {
    nvidia-smi --query-gpu=timestamp,name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
        --format=csv,noheader >>"$RUN/gpu.csv" || true
}

phase() {
    echo "$(date -u +%H:%M:%S) $*" | tee -a "$RUN/phases.txt"
}

have_trt() {
    [ -x "$TRTPY" ]
}

# the TensorRT tactic sources of the run's libraries, as tensorrt_levels.py takes them
level_sources() {
    [ "$(cat "$RUN/libraries" 2>/dev/null)" = stand-ins ] && echo "--tactic-sources $STANDIN_SOURCES"
    return 0
}

job() {
    export PYTHONPATH=$SITE312 PYTHONUNBUFFERED=1
    local model=${MODELS%% *}
    gpu_state
    if [ "$WORKFLOW" = 0 ]; then
        # the workflow's weights and fp32/fp16 ONNX files only (int8: harness_efficiency
        # calibrates its own from the fp32 file, same graph, minmax ranges)
        phase "artifacts"
        local targets=() m
        for m in $MODELS; do
            targets+=("results/weights/$m.safetensors" "results/onnx/$m/fp32.onnx" "results/onnx/$m/fp16.onnx")
        done
        [ "$SIDE" = sync ] && targets+=(results/cache/synthetic/256-224.npy)
        python3 -m snakemake --cores "$CORES" --configfile "$RUN/h200.yaml" --scheduler greedy "${targets[@]}" \
            >"$RUN/snakemake.log" 2>&1 || echo "artifacts: snakemake failed" | tee "$RUN/snakemake.rc"
    else
        [ -n "$ORT_STUDY" ] && ort_study
        if have_trt && [ "$BISECT" = 1 ]; then
            phase "bisect: inception_v3 int8, as the workflow exports it"
            bisect_int8
        fi
        phase "workflow${LEVEL:+, level $LEVEL}${RUNTIMES:+, the cells of $RUNTIMES model by model}"
        local base="snakemake --cores $CORES --resources gpu=1 --configfile $RUN/h200.yaml --scheduler greedy"
        local command=$base t0 rc=0 wall one m targets
        t0=$(date +%s)
        if [ -z "$RUNTIMES" ]; then
            python3 -m $base >"$RUN/snakemake.log" 2>&1 || rc=$?
            echo "snakemake exit $rc, wall $(($(date +%s) - t0)) s" | tee "$RUN/snakemake.rc"
        else
            for m in $MODELS; do
                phase "workflow: $m"
                one=0
                targets=$(cell_targets "$m")
                if [ -z "${targets//[[:space:]]/}" ]; then
                    echo "snakemake $m: nothing to do (IMPORT brought every cell of $RUNTIMES)" | tee -a "$RUN/snakemake.rc"
                    continue
                fi
                # shellcheck disable=SC2086  # one target per word
                python3 -m $base $targets >>"$RUN/snakemake.log" 2>&1 || one=$?
                [ "$rc" = 0 ] && rc=$one
                echo "snakemake $m: exit $one, at $(($(date +%s) - t0)) s" | tee -a "$RUN/snakemake.rc"
            done
            command="$command <the speed and accuracy files of $RUNTIMES, one run per model: $MODELS>"
            if [ "$FINAL" = 1 ]; then
                phase "workflow: the whole config"
                [ -s "$RUN/imported.txt" ] && xargs -a "$RUN/imported.txt" -d '\n' touch -c
                one=0
                python3 -m $base >>"$RUN/snakemake.log" 2>&1 || one=$?
                [ "$rc" = 0 ] && rc=$one
                echo "snakemake (the whole config): exit $one, at $(($(date +%s) - t0)) s" | tee -a "$RUN/snakemake.rc"
                command="$command; then $base (the whole config)"
            fi
        fi
        wall=$(($(date +%s) - t0))
        python3 benchmarks/idle_ratio.py results --wall "$wall" --json "$RUN/idle.json" >"$RUN/idle.md" 2>&1 || true
        python3 benchmarks/h200/summary.py run --run "$RUN" --snakemake-rc "$rc" --wall "$wall" \
            --started "$(cat "$RUN/started")" --finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
            --command "MODELS='$MODELS' LEVEL='$LEVEL' LIBS='$(cat "$RUN/libraries" 2>/dev/null)' bash benchmarks/h200/run.sh start; $command (h200.yaml: config/gpu.yaml with MODELS, LEVEL and TensorRT's interpreter set by run.sh)" \
            --commit "${COMMIT:-}" --libraries "$(cat "$RUN/libraries" 2>/dev/null || echo none)" --locks "$PACK"/lock3*.txt \
            >"$RUN/run.json" 2>"$RUN/summary.log" || cat "$RUN/summary.log"
    fi
    gpu_state
    if [ "$LATENCY" = 1 ]; then
        phase "latency and energy checks"
        latency_energy
    fi
    if [ "$SIDE" = 1 ]; then
        phase "side studies"
        side
    fi
    [ -n "$EFFICIENCY" ] && phase "harness efficiency"
    for model in $EFFICIENCY; do
        efficiency_torch_ort "$model"
    done
    model=${MODELS%% *}
    if [ "$SIDE" = sync ]; then
        phase "side: ONNX Runtime per_run_sync auto"
        side
    fi
    if [ "$SIDE" = rounds ]; then
        phase "ONNX Runtime fp16 batch 8, per_run_sync each way, 11 rounds"
        sync_rounds
    fi
    if have_trt && [ "$TRT_EFFICIENCY" = 1 ]; then
        phase "harness efficiency, TensorRT"
        efficiency_trt
    fi
    if [ -n "${ORT_DIAG:-}" ]; then ort_diag; fi
    gpu_state
    if have_trt; then
        for precision in $STUDY; do
            onnx=$precision.onnx
            [ "$precision" = int8 ] && onnx=int8-s8s8.onnx
            phase "level study $precision"
            # shellcheck disable=SC2046  # level_sources is empty or two words
            "$TRTPY" benchmarks/tensorrt_levels.py --onnx "results/onnx/$model/$onnx" --precision "$precision" \
                --batch-size 8 --levels $LEVELS $(level_sources) --budget-s 240 \
                --json "$RUN/levels-$precision.json" >>"$RUN/levels.md" 2>&1 || true
        done
    fi
    gpu_state
    phase "done"
    touch "$RUN/done"
}

# BISECT=1 (first, before the workflow): inception_v3 exported as the workflow exports it (its
# input transform folded into the first convolution), calibrated (minmax, 8 random images: the
# workflow's Q/DQ graph, other ranges), and the first node whose inclusion fails TensorRT's
# int8 build, by bisection within BISECT_S seconds (default 150)
bisect_int8() {
    local work=results/bench/bisect weights=results/weights/inception_v3.safetensors
    mkdir -p "$work"
    [ -e "$weights" ] || python3 -m snakemake "$weights" --cores "$CORES" --configfile "$RUN/h200.yaml" >>"$RUN/bisect.log" 2>&1
    python3 - "$weights" "$work" >>"$RUN/bisect.log" 2>&1 <<'PY' || true
import sys
sys.path.insert(0, "workflow/scripts")
import numpy as np
from infbench.precision import calibrate_int8, export_fp32
weights, work = sys.argv[1:]
export_fp32("inception_v3", weights, 299, f"{work}/fp32.onnx")
cache = np.random.default_rng(0).integers(0, 256, (16, 299, 299, 3), dtype=np.uint8)
np.save(f"{work}/cache.npy", cache)
rows = [(f"random{i}", 0) for i in range(16)]
print(calibrate_int8(f"{work}/fp32.onnx", f"{work}/cache.npy", rows, 8, "minmax",
                     f"{work}/int8-s8s8.onnx", f"{work}/int8-u8s8.onnx", f"{work}/calibration.tsv"))
PY
    # shellcheck disable=SC2046
    "$TRTPY" benchmarks/tensorrt_bisect.py --onnx "$work/int8-s8s8.onnx" --precision int8 --batch-size 8 \
        $(level_sources) --budget-s "${BISECT_S:-150}" --json "$RUN/bisect.json" 2>>"$RUN/bisect.log" | tee -a "$RUN/bisect.md" || true
}

# the step script by hand on resnet50 at batch 8 and 50, with an option the workflow's run did not use
side_cell() {
    local runtime=$1 precision=$2 artifact=$3 options=$4 name=$5
    python3 workflow/scripts/measure_speed.py --runtime "$runtime" --model resnet50 --arch resnet50 \
        --precision "$precision" --device cuda --crop 224 --artifact "$artifact" --batch-size 8 50 \
        --cache results/cache/synthetic/256-224.npy --options "$options" \
        --timing '{"warmup_batches": 5, "timed_batches": 500, "windows": 3, "staged_batches": 4, "max_spread": 0.1}' \
        --out "$RUN/side/$name-bs8.json" "$RUN/side/$name-bs50.json" >>"$RUN/side.log" 2>&1 || echo "$name failed" >>"$RUN/side.log"
}

side() {
    mkdir -p "$RUN/side"
    if [ "$SIDE" = sync ]; then
        # ONNX Runtime's cells of resnet50 as the workflow runs them (per_run_sync: auto),
        # the choice and both timings in each result's runtime block
        for precision in fp32 fp16 int8; do
            local onnx=results/onnx/resnet50/$precision.onnx
            [ "$precision" = int8 ] && onnx=results/bench/resnet50/resnet50-224-int8-s8s8.onnx
            side_cell onnxruntime $precision "$onnx" '{"device": "cuda", "allow_tf32": false}' "ort-auto-$precision"
        done
        return
    fi
    for precision in fp32 fp16; do
        side_cell onnxruntime $precision results/onnx/resnet50/$precision.onnx \
            '{"device": "cuda", "allow_tf32": false, "cuda_graphs": true}' "ort-graphs-$precision"
    done
    side_cell torch fp16 results/weights/resnet50.safetensors \
        '{"device": "cuda", "allow_tf32": false, "compile": true}' "torch-compile-fp16"
}

# each runtime as the workflow runs it: PyTorch with its CUDA graphs against a hand loop of
# captured graphs, ONNX Runtime without (its default) against run_with_iobinding; windows of
# about 2,000 images (200 batches of 8, 40 of 50), 5 alternating rounds
efficiency_torch_ort() {
    local model=$1 crop=224 int8 runtime timed
    [ "$model" = inception_v3 ] && crop=299
    int8=$(python3 -c 'import sys; sys.path.insert(0, "workflow/scripts"); from infbench.runtimes import int8_form; print(int8_form("onnxruntime", "cuda"))')
    for precision in fp32 fp16 int8; do
        for bs in 8 50; do
            timed=$((bs == 8 ? 200 : 40))
            for runtime in $EFF_RUNTIMES; do
                local artifact=results/onnx/$model/$precision.onnx graphs=false made
                [ "$runtime" = torch ] && artifact=results/weights/$model.safetensors && graphs=true
                [ "$precision" = int8 ] && artifact=results/onnx/$model/int8-$int8.onnx
                [ "$precision" = int8 ] && [ "$runtime" = torch ] && continue
                made=(--artifact "{\"$runtime\": \"$artifact\"}")
                # without the workflow's int8 file (WORKFLOW=0): calibrated here from its fp32 file
                [ -e "$artifact" ] || made=(--weights "results/weights/$model.safetensors"
                    --onnx "results/onnx/$model/fp32.onnx" --work-dir "results/bench/$model")
                echo "## $model $precision bs$bs $runtime cuda_graphs=$graphs" >>"$RUN/efficiency-torch-ort.md"
                python3 benchmarks/harness_efficiency.py --runtime $runtime --device cuda --arch "$model" --crop "$crop" \
                    --precision "$precision" --batch-size "$bs" "${made[@]}" \
                    --options "{\"cuda_graphs\": $graphs, \"allow_tf32\": false}" \
                    --warmup 5 --timed "$timed" --windows 1 --rounds 5 >>"$RUN/efficiency-torch-ort.md" 2>&1 || true
            done
        done
    done
}

# SIDE=rounds: the ONNX Runtime cells of MODELS at fp16 batch 8 (the ones below 0.98 of the
# plain loop in session 5, their rounds 0.90-1.29 apart) with per_run_sync auto, true and
# false, in windows of 500 batches and 11 alternating rounds
sync_rounds() {
    local model crop sync
    for model in $MODELS; do
        crop=224
        [ "$model" = inception_v3 ] && crop=299
        for sync in '"auto"' true false; do
            echo "## $model fp16 bs8 onnxruntime per_run_sync=$sync" >>"$RUN/sync-rounds.md"
            python3 benchmarks/harness_efficiency.py --runtime onnxruntime --device cuda --arch "$model" --crop "$crop" \
                --precision fp16 --batch-size 8 --artifact "{\"onnxruntime\": \"results/onnx/$model/fp16.onnx\"}" \
                --options "{\"cuda_graphs\": false, \"allow_tf32\": false, \"per_run_sync\": $sync}" \
                --warmup 5 --timed 500 --windows 1 --rounds 11 2>&1 | grep -v -e cudnn_fe_call -e 'W:onnxruntime' >>"$RUN/sync-rounds.md" || true
        done
    done
}

# ORT_DIAG=1: ONNX Runtime fp16 resnet50 batch 8 (0.833 of the plain loop in run 3), the
# hand loop made like the session in one respect at a time
ort_diag() {
    phase "ONNX Runtime harness diagnosis"
    for hand in '{}' '{"per_run_sync": false}' '{"preallocated_output": true}' '{"inter_op_threads": 1}' \
        '{"per_run_sync": false, "preallocated_output": true, "inter_op_threads": 1}'; do
        echo "## resnet50 fp16 bs8 onnxruntime hand=$hand" >>"$RUN/ort-diag.md"
        python3 benchmarks/harness_efficiency.py --runtime onnxruntime --device cuda --arch resnet50 --crop 224 \
            --precision fp16 --batch-size 8 --artifact '{"onnxruntime": "results/onnx/resnet50/fp16.onnx"}' \
            --options '{"cuda_graphs": false, "allow_tf32": false}' --hand "$hand" \
            --warmup 5 --timed 200 --windows 1 --rounds 5 >>"$RUN/ort-diag.md" 2>&1 || true
    done
}

efficiency_trt() {
    for model in $MODELS; do
        for precision in fp32 fp16 int8; do
            for bs in 8 50; do
                for graphs in false true; do
                    # the engine as the workflow built it (harness_efficiency reads its options from the sidecar)
                    echo "## $model $precision bs$bs cuda_graphs=$graphs" >>"$RUN/efficiency.md"
                    "$TRTPY" benchmarks/harness_efficiency.py --runtime tensorrt --device cuda --arch "$model" \
                        --precision "$precision" --batch-size "$bs" --engine "results/engines/$model/$precision-bs$bs.plan" \
                        --options "{\"cuda_graphs\": $graphs}" \
                        --warmup 5 --timed 200 --windows 1 --rounds 3 2>&1 | grep -v '^tensorrt: ' >>"$RUN/efficiency.md" || true
                done
            done
        done
    done
}

# the harness's latency p50 against a hand loop, and each speed cell's energy against
# nvidia-smi's power.draw sampled every 100 ms beside it (benchmarks/latency_energy_check.py)
latency_energy() {
    local model crop
    for model in $MODELS; do
        crop=224
        [ "$model" = inception_v3 ] && crop=299
        echo "# $model" >>"$RUN/latency-energy.md"
        python3 benchmarks/latency_energy_check.py --runtime torch onnxruntime --device cuda --arch "$model" \
            --crop "$crop" --precision fp32 fp16 int8 --weights "results/weights/$model.safetensors" \
            --onnx "results/onnx/$model/fp32.onnx" --work-dir "results/bench/$model" --options '{"allow_tf32": false}' \
            --json "$RUN/latency-energy-$model.json" >>"$RUN/latency-energy.md" 2>&1 || echo "$model: check failed" >>"$RUN/latency-energy.md"
        if have_trt; then
            "$TRTPY" benchmarks/latency_energy_check.py --runtime tensorrt --device cuda --arch "$model" \
                --crop "$crop" --precision fp32 fp16 int8 --engine "results/engines/$model/{precision}-bs{bs}.plan" \
                --json "$RUN/latency-energy-$model-tensorrt.json" >>"$RUN/latency-energy.md" 2>&1 ||
                echo "$model tensorrt: check failed" >>"$RUN/latency-energy.md"
        fi
    done
}

collect() {
    local end=$(($(date +%s) + ${1:-0}))
    while [ ! -e "$RUN/done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
    [ -e "$RUN/done" ] && echo "job done" || echo "job still running"
    tar -czf "$OUT/results.tar.gz" --exclude='*.npz' --exclude='*.plan' --exclude='*.onnx' --exclude='*.npy' \
        --exclude='results/datasets' --exclude='results/weights' results logs "$RUN" 2>/dev/null || true
    [ -s "$RUN/run.json" ] && cp "$RUN/run.json" "$OUT/run.json"
    # the cells' prediction files, so that a later session can resume the matrix from these
    # results without evaluating (and building engines for) these cells again: in parts of
    # 15 MiB (a file that comes back holds at most 16)
    if [ -n "$(find results/accuracy -name '*.npz' 2>/dev/null | head -1)" ]; then
        find results/accuracy -name '*.npz' -print0 | tar -cf - --null -T - | split -b 15M -d -a 1 - "$OUT/predictions.tar."
    fi
    ls -l "$OUT"
    cat "$RUN/libcheck.txt" "$RUN/nvidia-smi-reading.txt" "$RUN/ort-options.md" 2>/dev/null || true
    cat "$RUN/snakemake.rc" 2>/dev/null || tail -n 5 "$RUN/snakemake.log" 2>/dev/null || true
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("engines (build s):", {k: v["build_seconds"] for k, v in r["engines"].items()}); print("failed:", r["engines_failed"])' "$RUN/run.json" 2>/dev/null || true
    cat results/tables/speed-bs*.md results/tables/energy-bs*.md results/tables/latency-bs*.md \
        results/tables/precision.md "$RUN/idle.md" 2>/dev/null || true
    grep -E '^(#|\||GPU|counter|energy not|skipped)' "$RUN/latency-energy.md" 2>/dev/null | cut -c1-200 | head -60 || true
    grep -E 'img/s|failed|rror' "$RUN/side.log" 2>/dev/null | head -20 || true
    grep -E '^## |^\| median|^[a-z]+: |rror' "$RUN/efficiency-torch-ort.md" "$RUN/efficiency.md" "$RUN/ort-diag.md" "$RUN/sync-rounds.md" 2>/dev/null | cut -c1-160 | head -80 || true
    cat "$RUN/levels.md" "$RUN/bisect.md" "$RUN/phases.txt" 2>/dev/null || true
    tail -n 5 "$RUN/job.log"
}

"$@"
