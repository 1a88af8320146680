"""The peers of `tidemark-bench queue`: the same messages Tidemark delivered, produced by the
destination's Python client from PyPI against the same server. Each command copies the first
message Tidemark wrote to SOURCE, sends it N times to TARGET, and prints
{"messages": N, "seconds": S}.

  queue_peer.py redis PORT SOURCE_STREAM TARGET_STREAM N BATCH     XADD, pipelines of BATCH
  queue_peer.py nats PORT SOURCE_STREAM TARGET_SUBJECT N BATCH     JetStream publish, BATCH in flight
  queue_peer.py sqs ENDPOINT SOURCE_URL TARGET_URL N               SendMessageBatch of 10
  queue_peer.py kafka BROKERS SOURCE_TOPIC TARGET_TOPIC N          idempotent producer, one flush
  queue_peer.py amqp PORT SOURCE_QUEUE EXCHANGE ROUTING_KEY N BATCH persistent, BATCH confirms in flight
  queue_peer.py lambda ENDPOINT RECORD_FILE SOURCE FUNCTION THREADS
                          boto3 Invoke (RequestResponse) of every payload RECORD_FILE shows Tidemark
                          sent to SOURCE, from THREADS threads
"""

import json
import sys
import time


def done(n, start):
    print(json.dumps({"messages": n, "seconds": time.perf_counter() - start}))


def redis_peer(port, source, target, n, batch):
    import redis

    r = redis.Redis(host="127.0.0.1", port=int(port))
    (_, fields), = r.xrange(source, count=1)
    n, batch = int(n), int(batch)
    start = time.perf_counter()
    for first in range(0, n, batch):
        p = r.pipeline(transaction=False)
        for _ in range(min(batch, n - first)):
            p.xadd(target, fields)
        p.execute()
    done(n, start)


def nats_peer(port, source, subject, n, batch):
    import asyncio

    import nats

    async def main():
        nc = await nats.connect("nats://127.0.0.1:%s" % port)
        js = nc.jetstream()
        info = await js.stream_info(source)
        m = await js.get_msg(source, info.state.first_seq)
        headers = dict(m.headers or {})
        count, size = int(n), int(batch)
        start = time.perf_counter()
        for first in range(0, count, size):
            pubs = []
            for i in range(first, min(first + size, count)):
                h = dict(headers)
                h["Nats-Msg-Id"] = "peer-%d" % i
                pubs.append(js.publish(subject, m.data, headers=h))
            await asyncio.gather(*pubs)
        done(count, start)
        await nc.close()

    asyncio.run(main())


def sqs_peer(endpoint, source, target, n):
    import boto3

    client = boto3.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    m = client.receive_message(QueueUrl=source, MaxNumberOfMessages=1,
                               MessageAttributeNames=["All"], VisibilityTimeout=0)["Messages"][0]
    attrs = {k: {"DataType": v["DataType"], "StringValue": v["StringValue"]}
             for k, v in m["MessageAttributes"].items()}
    n = int(n)
    start = time.perf_counter()
    for first in range(0, n, 10):
        entries = [{"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": attrs}
                   for i in range(min(10, n - first))]
        r = client.send_message_batch(QueueUrl=target, Entries=entries)
        if r.get("Failed"):
            raise SystemExit("failed entries: %s" % r["Failed"])
    done(n, start)


def kafka_peer(brokers, source, target, n):
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "peer",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(source, timeout=10).topics[source].partitions
    consumer.assign([TopicPartition(source, p, 0) for p in parts])
    msg = None
    while msg is None or msg.error():
        msg = consumer.poll(1.0)
    consumer.close()
    # The same producer settings as Tidemark's sink (and the same Tansu workaround).
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                         "partitioner": "murmur2_random", "batch.num.messages": 1})
    failed = []
    n = int(n)
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(target, msg.value(), key=msg.key(), headers=msg.headers(),
                                 on_delivery=lambda e, _m: e and failed.append(e))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    if failed:
        raise SystemExit("failed deliveries: %s" % failed[:3])
    done(n, start)


def amqp_peer(port, source, exchange, routing_key, n, batch):
    """aio-pika in publisher-confirm mode, BATCH publishes in flight, persistent and
    mandatory like Tidemark's."""
    import asyncio

    import aio_pika

    async def main():
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:%s/" % port)
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.get_queue(source, ensure=False)
        first = await queue.get(no_ack=False)
        target = await ch.get_exchange(exchange, ensure=False)
        message = aio_pika.Message(
            first.body, headers=first.headers, content_type=first.content_type,
            message_id=first.message_id, type=first.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        count, size = int(n), int(batch)
        start = time.perf_counter()
        for lo in range(0, count, size):
            await asyncio.gather(*[
                target.publish(message, routing_key=routing_key, mandatory=True)
                for _ in range(min(size, count - lo))
            ])
        done(count, start)
        await conn.close()

    asyncio.run(main())


def lambda_peer(endpoint, record_file, source, function, threads):
    """boto3's Lambda client invoking the stand-in with every payload Tidemark sent to
    function SOURCE (the same invocations: same records per call), from THREADS threads (one
    client each, as boto3 advises); the rate is in events (records) per second."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    payloads = []
    with open(record_file) as f:
        for line in f:
            r = json.loads(line)
            if r["function"] == source and r["status"] == 200:
                payloads.append(json.dumps(r["payload"]).encode())
    events = sum(len(json.loads(p)["Records"]) for p in payloads)

    def work(share):
        c = boto3.client(
            "lambda", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="AKIDTIDEMARKTEST", aws_secret_access_key="tidemark/secret+key",
            config=Config(max_pool_connections=4, retries={"max_attempts": 0}),
        )
        for payload in share:
            r = c.invoke(FunctionName=function, InvocationType="RequestResponse", Payload=payload)
            if r.get("FunctionError") or r["StatusCode"] != 200:
                raise SystemExit("invoke failed: %s" % r)

    t = int(threads)
    start = time.perf_counter()
    with ThreadPoolExecutor(t) as pool:
        list(pool.map(work, [payloads[i::t] for i in range(t)]))
    print(json.dumps({"messages": events, "seconds": time.perf_counter() - start,
                      "invocations": len(payloads)}))


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    peers = {"redis": redis_peer, "nats": nats_peer, "sqs": sqs_peer, "kafka": kafka_peer,
             "amqp": amqp_peer, "lambda": lambda_peer}
    peers[kind](*args)
