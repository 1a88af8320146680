"""The peer of `tidemark-bench iceberg`: pyiceberg's Table.append of the same rows as an Arrow
table, into a table with the same schema, partitioning, codec and level (zstd, the source
table's `write.parquet.compression-level`). Prints JSON.

usage: iceberg_append.py CATALOG_DB TABLE WORKDIR [RUNS]
  CATALOG_DB  Tidemark's SQL catalog file, to read the rows from (not timed)
  TABLE       the journal, e.g. tidemark.bench_journal
  WORKDIR     an empty directory for the peer's catalog and warehouse
"""

import json
import os
import statistics
import sys
import time

from pyiceberg.catalog.sql import SqlCatalog


def main():
    db, name, work = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    source = SqlCatalog("tidemark", uri=f"sqlite:///{db}").load_table(name)
    rows = source.scan().to_arrow()
    os.makedirs(work, exist_ok=True)
    peer = SqlCatalog("peer", uri=f"sqlite:///{work}/peer.db", warehouse=f"file://{work}/wh")
    peer.create_namespace_if_not_exists("bench")
    times, cpu = [], []
    for run in range(runs):
        table = peer.create_table(
            f"bench.append_{run}",
            schema=source.schema(),
            partition_spec=source.spec(),
            # The same codec and level as the source table's data files.
            properties={
                k: v for k, v in source.properties.items() if k.startswith("write.parquet.")
            },
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        table.append(rows)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    json.dump(
        {"rows": rows.num_rows, "seconds": times, "median": statistics.median(times), "cpu": cpu},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
