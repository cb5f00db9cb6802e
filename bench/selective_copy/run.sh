#!/usr/bin/env bash
# Selective copying at length 256 (vocabulary 16, 16 data tokens: the
# generator's defaults), issue 3: the five sequence models on one budget
# (6,000 AdamW steps of 32 sequences, d_model 64, 2 layers, d_state 8), then
# their data-token accuracy on 512 held-out sequences through the PyTorch
# reference. Prints one line per model: kind, seconds, JSON.
# usage: bench/selective_copy/run.sh SHOAL_BINARY PYTHON_WITH_TORCH [OUT] [REFERENCE_DIR] [STEPS] [KINDS]
set -euo pipefail
shoal=${1:?shoal binary}
python=${2:?python with torch, safetensors and pyarrow}
out=${3:-/tmp/shoal-selective-copy}
reference=${4:-$(dirname "$0")/../../../shared/reference}
steps=${5:-6000}
kinds=${6:-mamba s4d qrnn lstm gru}
here=$(dirname "$0")
mkdir -p "$out"
"$shoal" data gen selective-copy --out "$out/train.parquet" --rows 16384 --seed 1 >/dev/null
"$shoal" data gen selective-copy --out "$out/test.parquet" --rows 512 --seed 99 >/dev/null
for kind in $kinds; do
  sed -e "s/KIND/$kind/g" -e "s#TRAIN#$out/train.parquet#" -e "s/^steps = .*/steps = $steps/" "$here/job.toml" >"$out/$kind.toml"
  start=$(date +%s)
  "$shoal" run "$out/$kind.toml" --out "$out/$kind" --workers 1 >"$out/$kind.log" 2>&1
  echo "$kind $(( $(date +%s) - start )) s $("$python" "$here/evaluate.py" "$kind" "$out/$kind/checkpoint.safetensors" "$out/test.parquet" "$reference")"
done
