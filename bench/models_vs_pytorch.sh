#!/usr/bin/env bash
# `shoal bench models` against the PyTorch anchor (`pytorch_bench.py`),
# interleaved in the same run at each thread count, then a table of the
# median step times over the rounds and their ratio (PyTorch / shoal: how
# many times faster shoal is). A second shoal binary (before/after a
# change) is measured beside the first when given.
# usage: bench/models_vs_pytorch.sh SHOAL_BINARY PYTHON [ROUNDS] [MODELS] [THREADS] [OTHER_SHOAL_BINARY] [ANCHORS_DIR]
set -euo pipefail
shoal=${1:?shoal binary}
python=${2:?python with torch}
rounds=${3:-3}
models=${4:-mlp,autoencoder,vae,gan,barlow_twins,mae,lstm,gru,qrnn,s4d,mamba,gcn}
threads=${5:-1 2}
other=${6:-}
anchors=${7:-$(dirname "$0")/../../shared/anchors}
out=$(mktemp -d)
for round in $(seq "$rounds"); do
  for t in $threads; do
    "$python" "$anchors/pytorch_bench.py" --threads "$t" --reps 10 --only "$models" >"$out/torch.$t.$round.json"
    "$shoal" bench models --threads "$t" --reps 10 --only "$models" 2>/dev/null >"$out/shoal.$t.$round.json"
    if [ -n "$other" ]; then
      "$other" bench models --threads "$t" --reps 10 --only "$models" 2>/dev/null >"$out/other.$t.$round.json"
    fi
  done
done
"$python" - "$out" "$threads" "$other" <<'PY'
import glob, json, statistics, sys
out, threads, other = sys.argv[1], sys.argv[2].split(), sys.argv[3]
def load(name, t):
    runs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{name}.{t}.*.json"))]
    return {m: statistics.median(r[m]["step_ms"] for r in runs) for m in runs[0] if not m.startswith("_")} if runs else {}
head = "| model | threads | PyTorch ms | shoal ms | PyTorch / shoal |"
if other:
    head += " other ms | PyTorch / other |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for t in threads:
    torch, shoal, second = load("torch", t), load("shoal", t), load("other", t)
    for model in shoal:
        row = f"| {model} | {t} | {torch[model]:.2f} | {shoal[model]:.2f} | {torch[model] / shoal[model]:.2f} |"
        if other:
            row += f" {second[model]:.2f} | {torch[model] / second[model]:.2f} |"
        print(row)
PY
rm -rf "$out"
