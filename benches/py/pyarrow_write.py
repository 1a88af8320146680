#!/usr/bin/env python3
"""The pyarrow peer of `tidemark bench lake`.

Reads a Parquet file (the rows Tidemark encoded) into a pyarrow Table, untimed, then times
`pyarrow.parquet.write_table` of that table into memory with the settings Tidemark's lake
writer uses, on one thread.

Two modes:

  pyarrow_write.py FILE [options] --runs N
      N timed writes; prints one JSON object: medians and the output size.

  pyarrow_write.py FILE [options] --stdin
      prints a JSON line once the table is loaded and a warm-up write is done, then one timed
      write per line read from stdin, answering each with a JSON line; at end of input a
      summary line (medians, output size, and per-column sizes of FILE and of pyarrow's
      file). The caller interleaves these writes with its own measurements.
"""

import argparse
import json
import statistics
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="Parquet file holding the rows to write")
    p.add_argument("--compression", choices=["zstd", "snappy", "none"], default="zstd")
    p.add_argument("--zstd-level", type=int, default=3)
    p.add_argument("--row-group-rows", type=int, default=128 * 1024)
    p.add_argument("--page-bytes", type=int, default=1024 * 1024)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--runs", type=int, help="timed writes; print the medians")
    mode.add_argument("--stdin", action="store_true", help="one timed write per input line")
    return p.parse_args()


def write_options(args):
    """What Tidemark's `ParquetOptions::writer_properties` sets, spelled out so a pyarrow
    upgrade changing a default cannot skew the comparison."""
    return dict(
        compression=args.compression,
        compression_level=args.zstd_level if args.compression == "zstd" else None,
        row_group_size=args.row_group_rows,
        data_page_size=args.page_bytes,
        # parquet-rs: at most 20,000 rows per data page, values handed over 1,024 at a time.
        max_rows_per_page=20_000,
        write_batch_size=1024,
        # Dictionaries on, falling back to plain encoding past a 1 MiB dictionary page.
        use_dictionary=True,
        dictionary_pagesize_limit=1024 * 1024,
        # Chunk statistics, and page statistics in the column index (parquet-rs's
        # `EnabledStatistics::Page` writes the column and offset indexes).
        write_statistics=True,
        write_page_index=True,
        data_page_version="1.0",
        version="2.6",
        store_schema=True,
    )


def column_sizes(metadata):
    """Compressed bytes per leaf column, summed over row groups."""
    sizes = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            sizes[col.path_in_schema] = sizes.get(col.path_in_schema, 0) + col.total_compressed_size
    return sizes


def main():
    args = parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    # One contiguous table, as Tidemark's writer gets one record batch.
    table = pq.read_table(args.input, use_threads=False).combine_chunks()
    options = write_options(args)

    def write_once():
        sink = pa.BufferOutputStream()
        start = time.perf_counter()
        pq.write_table(table, sink, **options)
        seconds = time.perf_counter() - start
        return seconds, sink.getvalue()

    def summary(times, out):
        s = statistics.median(times)
        ours = pq.ParquetFile(args.input).metadata
        theirs = pq.ParquetFile(pa.BufferReader(out)).metadata
        a, b = column_sizes(ours), column_sizes(theirs)
        return {
            "rows_per_s": table.num_rows / s,
            "mb_per_s": out.size / s / 1e6,
            "bytes": out.size,
            "seconds": s,
            "runs": [table.num_rows / t for t in times],
            "row_groups": theirs.num_row_groups,
            "footer_bytes": [ours.serialized_size, theirs.serialized_size],
            "columns": {k: [a.get(k, 0), b.get(k, 0)] for k in sorted(set(a) | set(b))},
        }

    warm_up, out = write_once()  # first-touch allocations, codec contexts
    if args.runs is not None:
        times = []
        for _ in range(args.runs):
            t, out = write_once()
            times.append(t)
        print(json.dumps(summary(times or [warm_up], out)))
        return
    print(
        json.dumps(
            {
                "ready": True,
                "rows": table.num_rows,
                "arrow_bytes": table.nbytes,
                "pyarrow": pa.__version__,
            }
        ),
        flush=True,
    )
    times = []
    while sys.stdin.readline():
        t, out = write_once()
        times.append(t)
        print(json.dumps({"seconds": t, "bytes": out.size}), flush=True)
    print(json.dumps(summary(times or [warm_up], out)), flush=True)


if __name__ == "__main__":
    main()
