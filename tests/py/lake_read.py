"""Read a Tidemark Parquet lake with independent readers and print what they see, as JSON.

    python3 lake_read.py LAKE_DIR

DuckDB reads `LAKE_DIR/**/*.parquet` with Hive partitioning (and `union_by_name`, so files
written with an older schema read alongside newer ones); pyarrow reads the directory as a
Hive-partitioned dataset. Printed: row counts and distinct event ids from both, duplicate
ids, per object the latest event (highest sequence) as DuckDB sees it, the partition columns,
the rows of the largest file (from its footer, by pyarrow), and any file a reader could see
that is not a committed Parquet file.
"""

import glob as globlib
import json
import os
import sys

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def stray_files(root):
    """Files a reader could trip over: anything but committed, visible Parquet files."""
    stray = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".parquet") or f.startswith("."):
                stray.append(os.path.relpath(os.path.join(dirpath, f), root))
    return stray


def main():
    root = sys.argv[1]
    glob = os.path.join(root, "**", "*.parquet")
    files = globlib.glob(glob, recursive=True)
    if not files:
        print(json.dumps({"duckdb_rows": 0, "duckdb_distinct_ids": 0, "duplicate_ids": [],
                          "pyarrow_rows": 0, "pyarrow_distinct_ids": 0, "columns": [],
                          "largest_file_rows": 0, "latest": [],
                          "not_parquet": stray_files(root)}))
        return
    con = duckdb.connect()
    src = f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
    rows, distinct = con.execute(f"select count(*), count(distinct event_id) from {src}").fetchone()
    duplicates = [
        r[0]
        for r in con.execute(
            f"select event_id from {src} group by event_id having count(*) > 1 limit 20"
        ).fetchall()
    ]
    latest = con.execute(
        f"""select bucket, key, event_type, sequence, size, etag
            from (select *, row_number() over (partition by bucket, key order by sequence desc) n
                  from {src})
            where n = 1"""
    ).fetchall()
    columns = [r[0] for r in con.execute(f"describe select * from {src}").fetchall()]

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table(
        columns=["event_id"]
    )
    pa_rows = table.num_rows
    pa_distinct = len(set(table.column("event_id").to_pylist()))
    largest = max(pq.ParquetFile(f).metadata.num_rows for f in files)

    stray = stray_files(root)
    print(
        json.dumps(
            {
                "duckdb_rows": rows,
                "duckdb_distinct_ids": distinct,
                "duplicate_ids": duplicates,
                "pyarrow_rows": pa_rows,
                "pyarrow_distinct_ids": pa_distinct,
                "columns": columns,
                "largest_file_rows": largest,
                "latest": [
                    {
                        "bucket": b,
                        "key": k,
                        "event_type": t,
                        "sequence": s,
                        "size": z,
                        "etag": e,
                    }
                    for (b, k, t, s, z, e) in latest
                ],
                "not_parquet": stray,
            }
        )
    )


if __name__ == "__main__":
    main()
