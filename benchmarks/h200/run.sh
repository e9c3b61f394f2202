#!/usr/bin/env bash
# The TensorRT run of docs/results/h200.md, on this project's GPU machine (an NVIDIA H200
# with Python 3.12 and PyTorch but no Snakemake, TensorRT or Python 3.10, and no network).
# What it lacks travels in parts made by benchmarks/h200/pack.sh, one part per device call.
#
#   bash benchmarks/h200/run.sh receive           # keep the part(s) this call carried
#   bash benchmarks/h200/run.sh start             # unpack into /tmp, check, start the job
#   bash benchmarks/h200/run.sh collect [SECONDS] # wait for the job (at most SECONDS), results to $OUT
#
# The job: `snakemake --cores CORES --resources gpu=1` (CORES default all: a timed run holds
# every core, CPU steps such as calibration run side by side) on config/gpu.yaml with MODELS
# (default resnet50; LEVEL sets builder_optimization_level), TensorRT's interpreter a Python
# 3.10 holding TensorRT 8.6.0, and tactic sources limited to TensorRT's own kernels (the
# cuBLAS/cuDNN beside it are stand-ins: pack.sh); without TensorRT in the pack (WITH_TRT=0)
# its cells are left out. Then the idle ratio (benchmarks/idle_ratio.py); the side studies
# of SIDE (default 1): ONNX Runtime with CUDA graphs and torch.compile, resnet50 batch 8
# and 50 (SIDE=sync instead: ONNX Runtime's resnet50 cells at per_run_sync auto, after the
# efficiency checks); the harness-efficiency check of the PyTorch and ONNX Runtime cells of the models
# in EFFICIENCY (default MODELS) and of every TensorRT cell; then the builder-level study
# (batch 8, levels LEVELS, default 0-4, of the precisions in STUDY, default fp32 fp16 int8;
# STUDY= skips it); with ORT_DIAG=1 the ONNX Runtime harness diagnosis (ort_diag below).
# WORKFLOW=0 runs no workflow, only the Snakemake steps that make the weights and fp32/fp16
# ONNX files of MODELS, for an efficiency-only session (EFF_RUNTIMES: default torch onnxruntime).
# LATENCY=1 adds, after the workflow, benchmarks/latency_energy_check.py on each model of
# MODELS: the harness's p50 at batch 1 against a hand loop and the energy plausibility
# checks at batch 8 and 50, for PyTorch, ONNX Runtime and (when it travelled) TensorRT,
# fp32/fp16/int8 (into $RUN/latency-energy.md and latency-energy-*.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
SITE310=/tmp/site310 SITE312=/tmp/site312 RUN=/tmp/run TRTPY=/tmp/trtpy
PY310=/root/.pyenv/versions/3.10.13/bin/python3.10
MODELS=${MODELS:-resnet50}
LEVEL=${LEVEL:-}  # TensorRT builder optimisation level for the run (empty: the project's default)
LEVELS=${LEVELS:-0 1 2 3 4}
STUDY=${STUDY-fp32 fp16 int8}
CORES=${CORES:-all}
EFFICIENCY=${EFFICIENCY-$MODELS}
SIDE=${SIDE:-1}
WORKFLOW=${WORKFLOW:-1}  # 0: no workflow run, only the artifacts the efficiency checks time
EFF_RUNTIMES=${EFF_RUNTIMES:-torch onnxruntime}
LATENCY=${LATENCY:-0}
SOURCES=EDGE_MASK_CONVOLUTIONS,JIT_CONVOLUTIONS

receive() {
    mkdir -p /tmp/parts
    cp -n .devpack/parts/p* /tmp/parts/
    ls /tmp/parts | tr '\n' ' '
    du -sh /tmp/parts
}

start() {
    mkdir -p /tmp/pack "$RUN"
    cat /tmp/parts/p* | tar -x -C /tmp/pack
    if [ -e /tmp/pack/python310.tar.xz ]; then
        tar -xJf /tmp/pack/python310.tar.xz -C /
        python3 - "$SITE310" /tmp/pack/w310 <<'PY'
import glob, sys, zipfile
for wheel in sorted(glob.glob(sys.argv[2] + "/*.whl")):
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
PY
        mkdir -p "$SITE310/nvidia/cublas/lib" "$SITE310/nvidia/cudnn/lib"
        cp /tmp/pack/stubs/libcublas*.so.12 "$SITE310/nvidia/cublas/lib/"
        cp /tmp/pack/stubs/libcudnn.so.8 "$SITE310/nvidia/cudnn/lib/"
        printf '#!/bin/sh\nPYTHONPATH=%s exec %s "$@"\n' "$SITE310" "$PY310" >"$TRTPY"
        chmod +x "$TRTPY"
        "$TRTPY" -c 'import tensorrt, numpy, onnx; from cuda.bindings import runtime; print("TensorRT", tensorrt.__version__, "numpy", numpy.__version__, "onnx", onnx.__version__)'
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE312" /tmp/pack/w312/*.whl
    PYTHONPATH=$SITE312 python3 -m snakemake --version
    PYTHONPATH=$SITE312 python3 - "$MODELS" "$TRTPY" "$SOURCES" "$RUN/h200.yaml" "$LEVEL" <<'PY'
import os, sys, yaml
models, python, sources, out, level = sys.argv[1:]
config = yaml.safe_load(open("config/gpu.yaml"))
config["models"] = {m: config["models"][m] for m in models.split()}
if os.path.exists(python):
    config["runtimes"]["tensorrt"].update(python=python, tactic_sources=sources.split(","))
    if level:
        config["runtimes"]["tensorrt"]["builder_optimization_level"] = int(level)
else:
    print("TensorRT did not travel (WITH_TRT=0): its cells are left out")
    config["runtimes"].pop("tensorrt")
import onnxruntime
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    print(f"onnxruntime {onnxruntime.__version__} here has no CUDA provider: its cells are left out"
          " (pack with WITH_ORT=1 to carry onnxruntime-gpu)")
    config["runtimes"].pop("onnxruntime", None)
yaml.safe_dump(config, open(out, "w"), sort_keys=False)
PY
    setsid nohup bash benchmarks/h200/run.sh job >"$RUN/job.log" 2>&1 </dev/null &
    echo "job started"
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
        phase "workflow${LEVEL:+, level $LEVEL}"
        t0=$(date +%s)
        rc=0
        python3 -m snakemake --cores "$CORES" --resources gpu=1 --configfile "$RUN/h200.yaml" --scheduler greedy \
            >"$RUN/snakemake.log" 2>&1 || rc=$?
        wall=$(($(date +%s) - t0))
        echo "snakemake exit $rc, wall $wall s" | tee "$RUN/snakemake.rc"
        python3 benchmarks/idle_ratio.py results --wall "$wall" >"$RUN/idle.md" 2>&1 || true
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
    phase "harness efficiency"
    for model in $EFFICIENCY; do
        efficiency_torch_ort "$model"
    done
    if [ "$SIDE" = sync ]; then
        phase "side: ONNX Runtime per_run_sync auto"
        side
    fi
    if [ "$SIDE" = rounds ]; then
        phase "ONNX Runtime fp16 batch 8, per_run_sync each way, 11 rounds"
        sync_rounds
    fi
    if have_trt; then
        efficiency_trt
    fi
    if [ -n "${ORT_DIAG:-}" ]; then ort_diag; fi
    gpu_state
    if have_trt; then
        for precision in $STUDY; do
            onnx=$precision.onnx
            [ "$precision" = int8 ] && onnx=int8-s8s8.onnx
            phase "level study $precision"
            "$TRTPY" benchmarks/tensorrt_levels.py --onnx "results/onnx/$model/$onnx" --precision "$precision" \
                --batch-size 8 --levels $LEVELS --tactic-sources "$SOURCES" --budget-s 240 \
                --json "$RUN/levels-$precision.json" >>"$RUN/levels.md" 2>&1 || true
        done
    fi
    gpu_state
    phase "done"
    touch "$RUN/done"
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
    ls -l "$OUT"
    cat "$RUN/snakemake.rc" 2>/dev/null || tail -n 5 "$RUN/snakemake.log" 2>/dev/null || true
    cat results/tables/speed-bs*.md results/tables/energy-bs*.md results/tables/latency-bs*.md \
        results/tables/precision.md "$RUN/idle.md" 2>/dev/null || true
    grep -E '^(#|\||GPU|counter|energy not|skipped)' "$RUN/latency-energy.md" 2>/dev/null | cut -c1-200 | head -60 || true
    grep -E 'img/s|failed|rror' "$RUN/side.log" 2>/dev/null | head -20 || true
    grep -E '^## |^\| median|^[a-z]+: |rror' "$RUN/efficiency-torch-ort.md" "$RUN/efficiency.md" "$RUN/ort-diag.md" "$RUN/sync-rounds.md" 2>/dev/null | cut -c1-160 | head -80 || true
    cat "$RUN/levels.md" "$RUN/phases.txt" 2>/dev/null || true
    tail -n 5 "$RUN/job.log"
}

"$@"
