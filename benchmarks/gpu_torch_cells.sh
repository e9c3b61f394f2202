#!/usr/bin/env bash
# The PyTorch cells of the seed matrix for resnet50 on a CUDA machine without Snakemake:
# the workflow's own step scripts, called by hand, in the order the rules run them.
# usage: bash benchmarks/gpu_torch_cells.sh OUTDIR   (random weights, synthetic images)
set -euo pipefail
out=${1:?usage: gpu_torch_cells.sh OUTDIR}
work=$(mktemp -d)
s=workflow/scripts
py=${PYTHON:-python3}
mkdir -p "$out"
$py $s/fetch_checkpoint.py --model resnet50 --arch resnet50 --random 0 --out $work/resnet50.pth
$py $s/convert_weights.py --arch resnet50 --checkpoint $work/resnet50.pth --out $work/resnet50.safetensors
$py $s/make_synthetic.py --images 200 --seed 0 --out $work/images
$py $s/index_dataset.py --root $work/images --labels $work/images/val_map.txt --images all \
    --out $work/index.tsv --labels-out $work/labels.npy
$py $s/preprocess.py --index $work/index.tsv --resize 256 --crop 224 --out $work/cache.npy --workers 8
timing='{"warmup_batches": 5, "timed_batches": 500, "windows": 3, "staged_batches": 4, "max_spread": 0.1}'
for precision in fp32 fp16; do
    cell="--runtime torch --model resnet50 --arch resnet50 --precision $precision --device cuda
          --artifact $work/resnet50.safetensors --crop 224 --cache $work/cache.npy"
    for graphs in true false; do
        for bs in 8 50; do
            $py $s/measure_speed.py $cell --batch-size $bs --timing "$timing" \
                --options "{\"device\": \"cuda\", \"cuda_graphs\": $graphs, \"allow_tf32\": false}" \
                --out "$out/speed-$precision-bs$bs-graphs-$graphs.json"
        done
    done
    $py $s/evaluate.py $cell --batch-size 50 --options '{"device": "cuda"}' --out $work/$precision.npz
done
for precision in fp32 fp16; do
    $py $s/score.py --predictions $work/$precision.npz --labels $work/labels.npy \
        --reference $work/fp32.npz --reference-name torch/fp32 --random-weights 1 \
        --out "$out/accuracy-$precision.json"
done
