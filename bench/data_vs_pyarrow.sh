#!/usr/bin/env bash
# Read throughput of `shoal bench data` against pyarrow (bench/pyarrow_read.py)
# on generated datasets, interleaved in the same run; prints JSON lines.
# usage: bench/data_vs_pyarrow.sh SHOAL_BINARY PYTHON [DIR] [ROUNDS]
# Environment: REPEATS (passes per call, default 5); BASELINE (a second shoal
# binary, e.g. the build before a change, run just before SHOAL_BINARY in
# every round, its lines marked "binary": "baseline").
set -euo pipefail
shoal=${1:?shoal binary}
python=${2:?python with pyarrow}
dir=${3:-/tmp/shoal-data-bench}
rounds=${4:-3}
repeats=${REPEATS:-5}
baseline=${BASELINE:-}
here=$(dirname "$0")
mkdir -p "$dir"
"$shoal" data gen selective-copy --out "$dir/selective-copy.parquet" --rows 32768 >/dev/null
"$shoal" data gen gaussian-ring --out "$dir/gaussian-ring.parquet" --rows 1000000 >/dev/null
"$shoal" data gen digits --out "$dir/digits.parquet" >/dev/null
"$shoal" data gen sbm-graph --out "$dir/sbm.parquet" --rows 200000 >/dev/null
for _ in $(seq "$rounds"); do
  for spec in "selective-copy sequence" "gaussian-ring vectors" "digits classify" "sbm graph-nodes"; do
    set -- $spec
    if [ -n "$baseline" ]; then
      "$baseline" bench data "$dir/$1.parquet" --task "$2" --repeats "$repeats" |
        sed 's/^{/{"binary":"baseline",/'
    fi
    "$shoal" bench data "$dir/$1.parquet" --task "$2" --repeats "$repeats"
    "$python" "$here/pyarrow_read.py" "$dir/$1.parquet" --task "$2" --repeats "$repeats"
  done
done
