#!/usr/bin/env bash
# `shoal bench allreduce` against the gloo anchor (`gloo_allreduce.py`,
# torch.distributed over loopback TCP), interleaved in the same run, for 2
# and 4 workers at 16 and 64 MiB (issue 5), then a table of busbw medians
# over the rounds and their ratio. A second shoal binary (before/after a
# change) is measured beside the first when given.
# usage: bench/allreduce_vs_gloo.sh SHOAL_BINARY PYTHON [ROUNDS] [OTHER_SHOAL_BINARY] [ANCHORS_DIR]
set -euo pipefail
shoal=${1:?shoal binary}
python=${2:?python with torch}
rounds=${3:-3}
other=${4:-}
anchors=${5:-$(dirname "$0")/../../shared/anchors}
out=$(mktemp -d)
for round in $(seq "$rounds"); do
  "$python" "$anchors/gloo_allreduce.py" --world 2,4 --sizes-mib 16,64 --reps 10 >"$out/gloo.$round.json"
  for world in 2 4; do
    "$shoal" bench allreduce --workers "$world" --sizes-mib 16,64 --reps 10 --json >"$out/shoal.$world.$round.json"
    if [ -n "$other" ]; then
      "$other" bench allreduce --workers "$world" --sizes-mib 16,64 --reps 10 --json >"$out/other.$world.$round.json"
    fi
  done
done
"$python" - "$out" "$rounds" "$other" <<'PY'
import glob, json, statistics, sys
out, rounds, other = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rows(pattern):
    found = {}
    for path in sorted(glob.glob(f"{out}/{pattern}")):
        data = json.load(open(path))
        for row in data:
            found.setdefault((row["world"], round(row["mib"], 4)), []).append(row)
    return found
gloo, shoal = rows("gloo.*.json"), rows("shoal.*.json")
second = rows("other.*.json") if other else {}
head = "| world | size | gloo busbw GB/s | shoal busbw GB/s | shoal / gloo | shoal 4 KiB ms |"
if other:
    head += " other busbw GB/s | other / gloo |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for key in sorted(k for k in shoal if k[1] >= 1):
    world, mib = key
    med = lambda found, field="busbw_gbs": statistics.median(r[field] for r in found[key])
    g, s = med(gloo), med(shoal)
    latency = [r["ms"] for (w, m), rs in shoal.items() if w == world and m < 1 for r in rs]
    line = f"| {world} | {mib:g} MiB | {g:.3f} | {s:.3f} | {s / g:.2f} | {statistics.median(latency):.3f} |"
    if other:
        o = med(second)
        line += f" {o:.3f} | {o / g:.2f} |"
    print(line)
PY
echo "raw JSON: $out" >&2
