"""An independent decoder: reads `tidemark log tail --raw` lines on stdin, fetches each record's
writer schema from the registry by the id in its Confluent header, decodes it with fastavro and
prints one JSON line per event.

Usage: tidemark log tail --raw ... | python3 decode_fastavro.py http://127.0.0.1:PORT
"""

import io
import json
import struct
import sys
import urllib.request

import fastavro


def main():
    registry = sys.argv[1].rstrip("/")
    schemas = {}
    for line in sys.stdin:
        raw = bytes.fromhex(json.loads(line)["value_hex"])
        magic, schema_id = struct.unpack(">bI", raw[:5])
        assert magic == 0, f"bad magic byte {magic}"
        if schema_id not in schemas:
            with urllib.request.urlopen(f"{registry}/schemas/ids/{schema_id}") as resp:
                assert resp.headers["Content-Type"].startswith("application/vnd.schemaregistry.v1+json")
                schemas[schema_id] = fastavro.parse_schema(json.loads(json.load(resp)["schema"]))
        event = fastavro.schemaless_reader(io.BytesIO(raw[5:]), schemas[schema_id], None)
        prev = event["previous"]
        print(json.dumps({
            "event_id": str(event["event_id"]),
            "event_type": event["event_type"],
            "event_time_us": int(event["event_time"].timestamp() * 1_000_000),
            "bucket": event["bucket"],
            "key": event["key"],
            "sequence": event["sequence"],
            "size": event["size"],
            "metadata": event["metadata"],
            "tags": event["tags"],
            "previous_sequence": prev["sequence"] if prev else None,
        }))


if __name__ == "__main__":
    main()
