"""Write through Tidemark's Iceberg REST catalog with pyiceberg's RestCatalog (an independent
client of the REST spec): create a namespace and a table, append twice, append once more from
a stale copy of the table (the catalog refuses that commit; pyiceberg re-reads and appends on
top), and read back. Prints what the test compares as JSON.

usage: iceberg_rest_write.py URI AUTH
  URI   the catalog, e.g. http://127.0.0.1:7700/iceberg
  AUTH  token:SECRET (a bearer token) or credential:ID:SECRET (OAuth2 client credentials)
"""

import json
import sys

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import CommitFailedException


def main():
    uri, auth = sys.argv[1], sys.argv[2]
    kind, _, value = auth.partition(":")
    props = {"token": value} if kind == "token" else {"credential": value}
    catalog = RestCatalog("tidemark", uri=uri, **props)
    catalog.create_namespace("analytics")
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])
    table = catalog.create_table("analytics.events", schema=schema)
    table.append(pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}, schema=schema))
    stale = catalog.load_table("analytics.events")
    table.append(pa.table({"id": [4, 5], "name": ["d", "e"]}, schema=schema))
    # `stale` still sees one snapshot: the catalog refuses its commit, and pyiceberg retries
    # the append on the current snapshot, so no snapshot is lost.
    try:
        stale.append(pa.table({"id": [99], "name": ["late"]}, schema=schema))
        race = "appended on top"
    except CommitFailedException:
        race = "CommitFailedException"
    again = catalog.load_table("analytics.events")
    snapshots = sorted(again.snapshots(), key=lambda s: s.sequence_number)
    linear = all(
        b.parent_snapshot_id == a.snapshot_id for a, b in zip(snapshots, snapshots[1:])
    )
    rows = again.scan().to_arrow()
    out = {
        "namespaces": [list(n) for n in catalog.list_namespaces()],
        "tables": [list(t) for t in catalog.list_tables("analytics")],
        "ids": sorted(rows.column("id").to_pylist()),
        "snapshots": len(snapshots),
        "linear": linear,
        "race": race,
        "location": again.location(),
        "metadata_location": again.metadata_location,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
