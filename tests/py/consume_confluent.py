"""An independent Kafka client: confluent-kafka (librdkafka 2.16) reads Tidemark's `objects`
topic, checks every value's Confluent header against our registry, decodes it with its
AvroDeserializer (schema fetched from our registry by id) and prints one JSON line per event.

Usage: python3 consume_confluent.py BROKERS REGISTRY_URL EXPECTED_COUNT
"""

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    brokers, registry_url, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "tidemark-interop",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    partitions = consumer.list_topics("objects", timeout=10).topics["objects"].partitions
    consumer.assign([TopicPartition("objects", p, 0) for p in partitions])
    registry = SchemaRegistryClient({"url": registry_url})
    deserialize = AvroDeserializer(registry)
    context = SerializationContext("objects", MessageField.VALUE)
    seen = 0
    deadline = time.time() + 60
    while seen < expected and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit(f"consume error: {msg.error()}")
        value = msg.value()
        assert value[0] == 0, f"offset {msg.offset()}: magic byte {value[0]}"
        schema_id = int.from_bytes(value[1:5], "big")
        schema = registry.get_schema(schema_id)
        assert schema.schema_type in (None, "AVRO"), schema.schema_type
        event = deserialize(value, context)
        key = msg.key().decode()
        assert key == f"{event['bucket']}/{event['key']}", (key, event["bucket"], event["key"])
        prev = event["previous"]
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "schema_id": schema_id,
            "event_id": str(event["event_id"]),
            "event_type": event["event_type"],
            "bucket": event["bucket"],
            "key": event["key"],
            "sequence": event["sequence"],
            "size": event["size"],
            "metadata": event["metadata"],
            "tags": event["tags"],
            "previous_sequence": prev["sequence"] if prev else None,
        }))
        seen += 1
    consumer.close()
    if seen < expected:
        raise SystemExit(f"read {seen} of {expected} events before the deadline")


if __name__ == "__main__":
    main()
