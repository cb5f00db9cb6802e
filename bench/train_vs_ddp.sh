#!/usr/bin/env bash
# The data-parallel training step of `shoal bench train` against PyTorch DDP
# (`pytorch_ddp_bench.py`, gloo over loopback TCP), interleaved in the same
# run, plus shoal's own single worker with all the threads, then a summary of
# medians over the rounds and the ratios issue 10 asks for.
# usage: bench/train_vs_ddp.sh SHOAL_BINARY PYTHON [ROUNDS] [REPS] [ANCHORS_DIR]
set -euo pipefail
shoal=${1:?shoal binary}
python=${2:?python with torch}
rounds=${3:-3}
reps=${4:-20}
anchors=${5:-$(dirname "$0")/../../shared/anchors}
out=$(mktemp -d)
for round in $(seq "$rounds"); do
  "$shoal" bench train --workers 2 --threads-per-worker 1 --reps "$reps" --json >"$out/shoal2x1.$round.json"
  "$python" "$anchors/pytorch_ddp_bench.py" --world 2 --threads-per-rank 1 --reps "$reps" >"$out/ddp2x1.$round.json"
  "$shoal" bench train --workers 1 --threads-per-worker 2 --reps "$reps" --json >"$out/shoal1x2.$round.json"
done
"$python" - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(kind):
    return [json.load(open(f"{out}/{kind}.{r}.json")) for r in range(1, rounds + 1)]
shoal, ddp, single = load("shoal2x1"), load("ddp2x1"), load("shoal1x2")
models = [m for m in shoal[0] if not m.startswith("_")]
print("| model | shoal 2x1 step ms | DDP 2x1 step ms | DDP / shoal | compute ms | exposed all-reduce ms | data wait ms | shoal 1x2 step ms | 2x1 / 1x2 throughput |")
print("|---|---|---|---|---|---|---|---|---|")
for m in models:
    med = lambda runs, key="step_ms": statistics.median(run[m][key] for run in runs)
    s, d, one = med(shoal), med(ddp), med(single)
    print(f"| {m} | {s:.3f} | {d:.3f} | {d / s:.2f} | {med(shoal, 'compute_ms'):.3f} | "
          f"{med(shoal, 'all_reduce_exposed_ms'):.3f} | {med(shoal, 'data_wait_ms'):.3f} | "
          f"{one:.3f} | {one / s:.2f} |")
PY
echo "raw JSON: $out" >&2
