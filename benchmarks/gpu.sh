#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md, for a lent H100/H200 (torch, timm, typer, rich, pandas, tabulate,
# safetensors preinstalled; no package registry, no dataset, no weights). Sized for 5 minutes.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # figures -> OUT_DIR/gpu.md (default $OUT, else benchmarks/out)
#
# peftbench runs from source: the package is staged with its methods/ and tasks/ folders where an
# install would put them, and PYTHONPATH points there. Every figure is `peftbench bench` on synthetic
# inputs with random ViT-B/16 weights; `--suite vtab` turns the rates into the full VTAB-1k time for
# one seed (19 tasks x 1,000 training images x epochs, plus one pass over every test split).
# DEVICE=cpu MODEL=vit_micro_patch4_32 QUICK=1 dry-runs the script on a CPU.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-$repo/benchmarks/out}}
device=${DEVICE:-cuda}
model=${MODEL:-vit_base_patch16_224}
mkdir -p "$out"
stage=$(bash "$repo/scripts/stage_package.sh")
trap 'rm -rf "$stage"' EXIT
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"

if [[ -n "${QUICK:-}" ]]; then steps=(--steps 2 --warmup 1 --eval-batches 1); else steps=(--steps 50 --warmup 10 --eval-batches 8); fi
report="$out/gpu.md"
bench() {  # one titled table
  local title=$1; shift
  local command="peftbench bench --device $device --model $model --suite vtab ${steps[*]} $*"
  echo "### $title" | tee -a "$report"
  printf '\n`%s`\n\n' "$command" | tee -a "$report"
  python -m peftbench bench --device "$device" --model "$model" --suite vtab "${steps[@]}" "$@" | tee -a "$report"
  echo | tee -a "$report"
}

{
  echo "# peftbench GPU benchmark"
  echo
  echo "$(date -u +%FT%TZ); $(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo 'no nvidia-smi'); $(python -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'); peftbench $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo 'source')"
  echo
} | tee "$report"

bench "One run on the GPU: VTAB-1k settings (batch 64, 100 epochs)" \
  --method linear --method lora --method ssf --method adapter --method vpt_deep --batch-size 64 --eval-batch-size 512
bench "RLRR, its paper recipe (batch 32, 100 + 10 cool-down epochs)" \
  --method rlrr --batch-size 32 --epochs 110 --eval-batch-size 512
bench "Four runs packed on the GPU (--runs-per-gpu 4)" \
  --method lora --method ssf --batch-size 64 --eval-batch-size 512 --runs-per-gpu 4
bench "RLRR, four runs packed" \
  --method rlrr --batch-size 32 --epochs 110 --eval-batch-size 512 --runs-per-gpu 4
bench "torch.compile (--compile), one run" \
  --method lora --batch-size 64 --eval-batch-size 512 --compile
{
  echo "### Evaluation batches from the mapped cache to the device at 224 px (before: a fresh tensor per batch; after: Staging)"
  echo
  echo "\`python benchmarks/staging.py --device $device\`"
  echo
  echo "| device | split | measured | before (images/s) | after (images/s) | check |"
  echo "|:--|:--|:--|--:|--:|:--|"
  python "$repo/benchmarks/staging.py" --device "$device" ${QUICK:+--images 1024}
  echo
} | tee -a "$report"
echo "figures written to $report"
