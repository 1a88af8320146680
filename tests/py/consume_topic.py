"""An independent Kafka client (confluent-kafka) reads a topic from the start and prints one
JSON line per record: partition, offset, key, headers, and the value (JSON decoded when the
value is JSON; for `--avro REGISTRY_URL`, decoded with confluent-kafka's AvroDeserializer,
the schema fetched from that registry by the record's schema id).

usage: consume_topic.py BROKERS TOPIC EXPECTED_COUNT [--avro REGISTRY_URL]
       (reads at least EXPECTED_COUNT records, then on until a poll of a second finds none)
       consume_topic.py create BROKERS TOPIC PARTITIONS
"""

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def create(brokers, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)


def main():
    if sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    brokers, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deserialize = None
    if "--avro" in sys.argv:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        registry = SchemaRegistryClient({"url": sys.argv[sys.argv.index("--avro") + 1]})
        avro = AvroDeserializer(registry)
        context = SerializationContext(topic, MessageField.VALUE)
        deserialize = lambda v: avro(v, context)  # noqa: E731
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "tidemark-sink-check",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen = 0
    deadline = time.time() + 60
    # Past EXPECTED_COUNT, read on until the topic is quiet: repeats count toward it.
    while time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None and seen >= expected:
            break
        if msg is None or msg.error():
            continue
        value = msg.value()
        if deserialize:
            decoded = deserialize(value)
            decoded = {k: (str(v) if k == "event_id" else v) for k, v in decoded.items()
                       if k in ("event_id", "bucket", "key", "sequence", "event_type")}
        else:
            decoded = json.loads(value)
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": msg.key().decode(),
            "headers": headers,
            "value": decoded,
        }, default=str))
        seen += 1
    consumer.close()


if __name__ == "__main__":
    main()
