"""Helpers of `tidemark-bench iceberg-inventory` and `iceberg-freshness`, with pyiceberg.
Prints JSON.

usage:
  iceberg_live.py scan CATALOG_DB TABLE WORKDIR [RUNS]
      median time of a full scan (to Arrow) of TABLE, and of the same rows appended by
      pyiceberg in one append to a fresh table (same schema, partitioning, zstd) in WORKDIR
  iceberg_live.py snapshots CATALOG_DB TABLE
      every snapshot: its timestamp (ms) and the log offsets its summary covers
"""

import json
import os
import statistics
import sys
import time

from pyiceberg.catalog.sql import SqlCatalog


def timed_scans(table, runs):
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = table.scan().to_arrow().num_rows
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def main():
    cmd, db, name = sys.argv[1], sys.argv[2], sys.argv[3]
    table = SqlCatalog("tidemark", uri=f"sqlite:///{db}").load_table(name)
    if cmd == "snapshots":
        out = []
        for s in table.snapshots():
            props = dict(s.summary.additional_properties) if s.summary else {}
            offsets = {
                k[len("tidemark.offsets."):]: int(v)
                for k, v in props.items()
                if k.startswith("tidemark.offsets.")
            }
            out.append({"ms": s.timestamp_ms, "offsets": offsets})
        json.dump(out, sys.stdout)
        return
    work = sys.argv[4]
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    ours, rows = timed_scans(table, runs)
    data = table.scan().to_arrow()
    os.makedirs(work, exist_ok=True)
    peer_catalog = SqlCatalog("peer", uri=f"sqlite:///{work}/peer.db", warehouse=f"file://{work}/wh")
    peer_catalog.create_namespace_if_not_exists("bench")
    peer = peer_catalog.create_table(
        "bench.inventory",
        schema=table.schema(),
        partition_spec=table.spec(),
        properties={"write.parquet.compression-codec": "zstd"},
    )
    peer.append(data)
    theirs, _ = timed_scans(peer, runs)
    json.dump(
        {
            "ours": ours,
            "peer": theirs,
            "rows": rows,
            "files_ours": len(table.inspect.files()),
            "files_peer": len(peer.inspect.files()),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
