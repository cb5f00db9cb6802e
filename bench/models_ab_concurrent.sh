#!/usr/bin/env bash
# Before/after of two shoal binaries at one thread, measured at the same
# time: each round runs `shoal bench models` of binary A pinned to one core
# and of binary B pinned to the other, side by side, and swaps the cores
# every round. Noise from outside the machine (other tenants of the host)
# then slows both runs of a round alike, so the per-round ratio B / A is
# steadier than the ratio of runs taken one after the other. Both runs share
# the caches and the memory bus, so read the ratio, not the absolute times.
# The two cores need not be equally fast: the geometric mean of the ratios
# over an even number of rounds (each binary as often on each core) cancels
# a constant difference between them, where the median does not.
# usage: bench/models_ab_concurrent.sh BINARY_A BINARY_B [ROUNDS] [MODEL] [REPS]
set -euo pipefail
a=${1:?binary A}
b=${2:?binary B}
rounds=${3:-8}
[ $((rounds % 2)) = 0 ] || { echo "ROUNDS must be even (each binary as often on each core)" >&2; exit 1; }
model=${4:-qrnn}
reps=${5:-40}
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs two cores" >&2; exit 1; }
out=$(mktemp -d)
for round in $(seq "$rounds"); do
  core_a=$((round % 2)); core_b=$(((round + 1) % 2))
  taskset -c "$core_a" "$a" bench models --threads 1 --reps "$reps" --only "$model" 2>/dev/null >"$out/a.$round.json" &
  taskset -c "$core_b" "$b" bench models --threads 1 --reps "$reps" --only "$model" 2>/dev/null >"$out/b.$round.json" &
  wait
done
python3 - "$out" "$rounds" "$model" <<'PY'
import json, math, statistics, sys
out, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
step = lambda side, r: json.load(open(f"{out}/{side}.{r}.json"))[model]["step_ms"]
a = [step("a", r) for r in range(1, rounds + 1)]
b = [step("b", r) for r in range(1, rounds + 1)]
ratios = [y / x for x, y in zip(a, b)]
print(f"{model}, 1 thread, {rounds} rounds side by side")
print("A ms:", " ".join(f"{v:.2f}" for v in a), f"(median {statistics.median(a):.2f})")
print("B ms:", " ".join(f"{v:.2f}" for v in b), f"(median {statistics.median(b):.2f})")
geometric = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
print("B / A per round:", " ".join(f"{v:.3f}" for v in ratios))
print(f"B / A: geometric mean {geometric:.3f}, median {statistics.median(ratios):.3f}")
PY
rm -r "$out"
