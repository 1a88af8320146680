"""Read a Tidemark Iceberg table with pyiceberg (and polars and DuckDB through pyiceberg's
scan), independently of Tidemark; print what the tests compare as JSON.

usage: iceberg_read.py CATALOG TABLE [--rows]
  CATALOG     the SQLite catalog file (pyiceberg's SqlCatalog), or rest:URI for a REST
              catalog (Tidemark's own: rest:http://127.0.0.1:7700/iceberg)
  TABLE       namespace.table, e.g. tidemark.chg_journal
  --rows      also print every row's event id, bucket, key, sequence and record type
  --as-of MS  read the snapshot that was current at MS (milliseconds since the epoch)
  --s3 URL    the warehouse is on this S3 endpoint (moto's: any key, region us-east-1)
  --token T   the REST catalog's bearer token
"""

import json
import sys

from pyiceberg.catalog.sql import SqlCatalog


def main():
    where, name = sys.argv[1], sys.argv[2]
    if "--as-of" in sys.argv and "--rows" not in sys.argv:
        sys.argv.append("--rows")
    props = {}
    if "--s3" in sys.argv:
        props = {
            "s3.endpoint": sys.argv[sys.argv.index("--s3") + 1],
            "s3.access-key-id": "test",
            "s3.secret-access-key": "test",
            "s3.region": "us-east-1",
        }
    if "--token" in sys.argv:
        props["token"] = sys.argv[sys.argv.index("--token") + 1]
    if where.startswith("rest:"):
        from pyiceberg.catalog.rest import RestCatalog

        catalog = RestCatalog("tidemark", uri=where[len("rest:"):], **props)
    else:
        catalog = SqlCatalog("tidemark", uri=f"sqlite:///{where}", **props)
    table = catalog.load_table(name)
    scan = table.scan()
    if "--as-of" in sys.argv:
        at = int(sys.argv[sys.argv.index("--as-of") + 1])
        snap = table.snapshot_as_of_timestamp(at)
        if snap is None:
            raise SystemExit(f"no snapshot at {at}")
        scan = table.scan(snapshot_id=snap.snapshot_id)
    arrow = scan.to_arrow()
    names = arrow.schema.names
    ids = arrow.column("event_id").to_pylist() if "event_id" in names else []
    out = {
        "rows": arrow.num_rows,
        "distinct_event_ids": len(set(ids)),
        "columns": arrow.schema.names,
        "snapshots": [
            {
                "id": s.snapshot_id,
                "summary": dict(s.summary.additional_properties) if s.summary else {},
            }
            for s in table.snapshots()
        ],
        "partition_fields": [f.name for f in table.spec().fields],
        "live_files": sorted(table.inspect.files().column("file_path").to_pylist()),
        "manifests": len(table.current_snapshot().manifests(table.io)) if table.current_snapshot() else 0,
        "format_version": table.format_version,
        "field_ids": {f.name: f.field_id for f in table.schema().fields},
        "properties": dict(table.properties),
    }
    # Every snapshot pyiceberg lists can be read.
    out["snapshot_rows"] = [
        table.scan(snapshot_id=s.snapshot_id).to_arrow().num_rows for s in table.snapshots()
    ]
    try:
        import polars  # noqa: F401

        out["polars_rows"] = table.scan().to_polars().height
    except ImportError:
        out["polars_rows"] = None
    con = table.scan().to_duckdb(table_name="journal")
    out["duckdb_rows"] = con.execute("SELECT count(*) FROM journal").fetchone()[0]
    if ids:
        out["duckdb_distinct"] = con.execute(
            "SELECT count(DISTINCT event_id) FROM journal"
        ).fetchone()[0]
    if "--rows" in sys.argv:
        cols = [c for c in ["event_id", "bucket", "key", "sequence_number", "record_type",
                            "log_partition", "log_offset", "size", "e_tag", "version_id",
                            "content_type", "sha256", "storage_class", "user_metadata",
                            "object_tags", "user_agent"] if c in names]
        data = {c: arrow.column(c).to_pylist() for c in cols}
        out["row_list"] = [
            {c: data[c][i] for c in cols} for i in range(arrow.num_rows)
        ]
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
