"""Read throughput of pyarrow on the columns a shoal task needs: the anchor
for `shoal bench data FILE --task TASK`.

usage: python bench/pyarrow_read.py FILE... --task TASK [--repeats N]

For each of three variants, reads every row group of the files `repeats`
times and prints one JSON line with the median pass:
  read_table          pq.read_table(files, columns=...) (pyarrow's default:
                      multithreaded)
  read_table_1thread  the same with use_threads=False (shoal reads on one
                      thread)
  to_numpy_1thread    one thread, and each column turned into the flat
                      float32/int64 numpy array a trainer needs (lists
                      flattened; ragged lists would need padding on top)
Column choice follows shoal's default mapping (datasets/src/task.rs).
"""

import argparse
import json
import statistics
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TASKS = {
    "classify": [["x", "pixels", "features"], ["label", "y"]],
    "vectors": [["x", "pixels", "features"]],
    "sequence": [["tokens"], ["targets"]],
    "graph-nodes": [["x", "pixels", "features"], ["label", "y"], ["train_mask"]],
    "graph-edges": [["src", "source"], ["dst", "target"]],
    "graphs": [["x", "pixels", "features"], ["label", "y"], ["train_mask"], ["src", "source"], ["dst", "target"]],
}


def columns_for(schema, task):
    names = set(schema.names)
    chosen = []
    for candidates in TASKS[task]:
        found = [name for name in candidates if name in names]
        if not found:
            raise SystemExit(f"no column among {candidates} in {schema.names}")
        chosen.append(found[0])
    return chosen


def flat(column):
    column = column.combine_chunks()
    while pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        column = column.flatten()
    array = column.to_numpy(zero_copy_only=False)
    return array.astype(np.float32 if pa.types.is_floating(column.type) else np.int64, copy=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--task", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    columns = columns_for(pq.read_schema(args.files[0]), args.task)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in args.files)

    def read(threads):
        tables = [pq.read_table(path, columns=columns, use_threads=threads) for path in args.files]
        return tables

    def to_numpy():
        nbytes = 0
        for table in read(False):
            for name in columns:
                nbytes += flat(table.column(name)).nbytes
        return nbytes

    variants = {
        "read_table": lambda: sum(table.nbytes for table in read(True)),
        "read_table_1thread": lambda: sum(table.nbytes for table in read(False)),
        "to_numpy_1thread": to_numpy,
    }
    for name, run in variants.items():
        run()  # warm-up (page cache, allocator)
        seconds = []
        nbytes = 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            nbytes = run()
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        print(json.dumps({
            "bench": "pyarrow_read",
            "variant": name,
            "pyarrow": pa.__version__,
            "task": args.task,
            "columns": columns,
            "rows": rows,
            "seconds_median": median,
            "rows_per_second": rows / median,
            "bytes": nbytes,
            "mb_per_second": nbytes / 1e6 / median,
        }))


if __name__ == "__main__":
    main()
