"""fastavro's encode + decode of ObjectEvent, the peer `tidemark bench codec` compares against.

Usage: python3 bench_fastavro.py SCHEMA.avsc EVENTS
Prints one JSON line: {"events": N, "seconds": S, "events_per_s": R}.
Events have the same shape as tidemark_core::event::sample_event (a put with metadata, tags
and the previous state).
"""

import io
import json
import sys
import time

import fastavro


def sample_event(i):
    metadata = {"camera": f"cam-{i % 17}", "team": "ml"}
    prev_seq = i % 1000 + 1
    prev_lm = 1_795_356_000_000_000 + i
    previous = {
        "version_id": f"{(i * 0x9E3779B97F4A7C15) % (1 << 64):032x}",
        "sequence": prev_seq,
        "size": 1_048_576 + i % 4096,
        "etag": f'"{i ^ 0xABCDEF:032x}"',
        "content_type": "image/jpeg",
        "sha256": None,
        "metadata": metadata,
        "tags": {},
        "storage_class": "STANDARD",
        "last_modified": prev_lm,
    }
    return {
        "event_id": f"01900000-0000-7000-8000-{i:012x}",
        "event_type": "ObjectCreated:Put",
        "event_time": prev_lm + 60_000_000,
        "bucket": "photos",
        "key": f"raw/2026/11/22/img-{i:08}.jpg",
        "version_id": f"{(i * 0x2545F4914F6CDD1D) % (1 << 64):032x}",
        "sequence": prev_seq + 1,
        "size": 2_097_152 + i % 8192,
        "etag": f'"{i ^ 0x123456:032x}"',
        "content_type": "image/jpeg",
        "sha256": None,
        "metadata": metadata,
        "tags": {"project": "tidemark"},
        "storage_class": "STANDARD",
        "requester": "arn:aws:iam::123456789012:user/ingest",
        "source_ip": "10.1.2.3",
        "request_id": f"req-{i:016x}",
        "region": "eu-west-1",
        "node": "node-1",
        "previous": previous,
    }


def main():
    schema = fastavro.parse_schema(json.load(open(sys.argv[1])))
    n = int(sys.argv[2])
    events = [sample_event(i) for i in range(1000)]
    buf = io.BytesIO()
    start = time.perf_counter()
    for i in range(n):
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, schema, events[i % 1000])
        buf.seek(0)
        fastavro.schemaless_reader(buf, schema, schema)
    seconds = time.perf_counter() - start
    print(json.dumps({"events": n, "seconds": seconds, "events_per_s": n / seconds}))


if __name__ == "__main__":
    main()
