"""A journal table as an older Tidemark (event schema version 1) left it, made with pyiceberg
from a current one: the same columns but the later versions' (`user_agent`,
`removed_version_id`), the same partitioning, and its rows.

usage: iceberg_evolve.py CATALOG_DB SOURCE TARGET
  SOURCE  a current journal, e.g. tidemark.src_journal
  TARGET  the table to create, e.g. tidemark.old_journal
prints {"rows": N, "last_column_id": ID}
"""

import json
import sys

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema


def main():
    db, source_name, target_name = sys.argv[1:4]
    catalog = SqlCatalog("tidemark", uri=f"sqlite:///{db}")
    source = catalog.load_table(source_name)
    later = ["user_agent", "removed_version_id"]
    fields = [f for f in source.schema().fields if f.name not in later]
    # Beside the source, as Tidemark lays tables out (<warehouse>/<namespace>.db/<table>).
    location = source.location().rsplit("/", 1)[0] + "/" + target_name.split(".")[-1]
    table = catalog.create_table(
        target_name,
        location=location,
        schema=Schema(*fields),
        partition_spec=source.spec(),
        properties={
            "write.parquet.compression-codec": "zstd",
            "tidemark.managed": "true",
        },
    )
    rows = source.scan().to_arrow().drop_columns(later)
    table.append(rows)
    json.dump(
        {"rows": rows.num_rows, "last_column_id": table.metadata.last_column_id},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
