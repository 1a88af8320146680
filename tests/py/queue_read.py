"""Independent clients of the queue sinks' destinations, for the tests: redis-py for Redis
Streams, boto3 for SQS (against moto's server). Each command prints JSON lines. SQS calls sign
with `SQS_TEST_KEY` (`ID:SECRET`) when it is set, else `testing:testing`.

  queue_read.py redis-read PORT PATTERN [PASSWORD]       every entry of the streams PATTERN matches
  queue_read.py sqs-create ENDPOINT NAME                 create a queue (FIFO if NAME ends .fifo)
  queue_read.py sqs-role ENDPOINT NAME                   a queue, a role that may use it, a reader's key
  queue_read.py sqs-read ENDPOINT QUEUE_URL N [SECONDS]  receive and delete until N messages
  queue_read.py sqs-send ENDPOINT QUEUE_URL N SIZE       the benchmark's peer: N messages, batches of 10
  queue_read.py nats-stream PORT NAME SUBJECT            create a JetStream stream on SUBJECT
  queue_read.py nats-read PORT NAME                      every message of stream NAME, in order
  queue_read.py amqp-setup PORT EXCHANGE QUEUE BINDING   a durable topic exchange and queue, bound
  queue_read.py amqp-read PORT QUEUE                     take every message of QUEUE, in order
"""

import json
import os
import sys
import time


def redis_read(port, pattern, password=None):
    import redis

    r = redis.Redis(host="127.0.0.1", port=int(port), password=password)
    for stream in sorted(r.scan_iter(match=pattern, count=1000)):
        for entry_id, fields in r.xrange(stream):
            entry = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            entry["_stream"] = stream.decode()
            entry["_id"] = entry_id.decode()
            print(json.dumps(entry))


def sqs(service="sqs"):
    import boto3

    key, secret = os.environ.get("SQS_TEST_KEY", "testing:testing").split(":", 1)
    return boto3.client(
        service,
        endpoint_url=sys.argv[2],
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def sqs_role(name):
    """For moto started with INITIAL_NO_AUTH_ACTION_COUNT=7: these six requests and the
    sink's AssumeRoleWithWebIdentity go unchecked; later requests must be signed with keys
    moto issued: the role's session for the sink, the reader's key for the test."""
    url = sqs().create_queue(QueueName=name)["QueueUrl"]
    iam = sqs("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.test"},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}
    role = iam.create_role(RoleName="tidemark-sink", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="tidemark-sink", PolicyName="sqs", PolicyDocument=json.dumps(allow))
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="sqs", PolicyDocument=json.dumps(allow))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    print(
        json.dumps(
            {
                "queue_url": url,
                "role_arn": role["Role"]["Arn"],
                "reader_key": "%s:%s" % (key["AccessKeyId"], key["SecretAccessKey"]),
            }
        )
    )


def sqs_create(name):
    attrs = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    print(sqs().create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])


def sqs_read(url, n, seconds=60):
    """Until at least N messages arrived and the queue answers empty (duplicates count
    toward N, so an empty answer ends the read), or SECONDS passed."""
    client = sqs()
    deadline = time.time() + float(seconds)
    got = 0
    while time.time() < deadline:
        r = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        messages = r.get("Messages", [])
        for m in messages:
            print(
                json.dumps(
                    {
                        "body": json.loads(m["Body"]),
                        "attributes": {
                            k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()
                        },
                        "group": m["Attributes"].get("MessageGroupId"),
                        "dedupe": m["Attributes"].get("MessageDeduplicationId"),
                    }
                )
            )
            got += 1
        if not messages and got >= int(n):
            break
        if messages:
            client.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


def sqs_send(url, n, size):
    """The peer of `tidemark-bench queue --sink sqs`: the same number of messages of about the
    same size, SendMessageBatch of 10 from one boto3 client; prints messages per second."""
    client = sqs()
    body = "x" * int(size)
    n = int(n)
    start = time.perf_counter()
    for first in range(0, n, 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": body,
                "MessageAttributes": {
                    "tidemark_event_id": {"DataType": "String", "StringValue": "01a24939-8f5a-7466-b178-5584ecfcd1ec"},
                    "tidemark_event_type": {"DataType": "String", "StringValue": "ObjectCreated:Put"},
                    "tidemark_bucket": {"DataType": "String", "StringValue": "bench"},
                    "tidemark_key": {"DataType": "String", "StringValue": "k%07d" % (first + i)},
                },
            }
            for i in range(min(10, n - first))
        ]
        r = client.send_message_batch(QueueUrl=url, Entries=entries)
        if r.get("Failed"):
            raise SystemExit("failed entries: %s" % r["Failed"])
    print(json.dumps({"messages": n, "seconds": time.perf_counter() - start}))


def nats_run(port, work):
    import asyncio

    import nats

    async def main():
        nc = await nats.connect("nats://127.0.0.1:%s" % port)
        try:
            await work(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(main())


def nats_stream(port, name, subject):
    async def work(js):
        await js.add_stream(name=name, subjects=[subject])
        print(json.dumps({"stream": name}))

    nats_run(port, work)


def nats_read(port, name):
    async def work(js):
        info = await js.stream_info(name)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await js.get_msg(name, seq)
            print(
                json.dumps(
                    {
                        "seq": seq,
                        "subject": m.subject,
                        "headers": dict(m.headers or {}),
                        "data": m.data.decode("utf-8", "replace"),
                    }
                )
            )

    nats_run(port, work)


def amqp_channel(port):
    import pika

    params = pika.ConnectionParameters(host="127.0.0.1", port=int(port))
    return pika.BlockingConnection(params)


def amqp_setup(port, exchange, queue, binding):
    conn = amqp_channel(port)
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=queue, durable=True)
    ch.queue_bind(queue=queue, exchange=exchange, routing_key=binding)
    conn.close()
    print(json.dumps({"queue": queue}))


def amqp_read(port, queue):
    conn = amqp_channel(port)
    ch = conn.channel()
    while True:
        method, props, body = ch.basic_get(queue=queue, auto_ack=True)
        if method is None:
            break
        print(
            json.dumps(
                {
                    "routing_key": method.routing_key,
                    "message_id": props.message_id,
                    "type": props.type,
                    "content_type": props.content_type,
                    "delivery_mode": props.delivery_mode,
                    "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (props.headers or {}).items()},
                    "data": body.decode("utf-8", "replace"),
                }
            )
        )
    conn.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "redis-read":
        redis_read(*sys.argv[2:])
    elif cmd == "sqs-create":
        sqs_create(sys.argv[3])
    elif cmd == "sqs-role":
        sqs_role(sys.argv[3])
    elif cmd == "sqs-read":
        sqs_read(*sys.argv[3:])
    elif cmd == "sqs-send":
        sqs_send(*sys.argv[3:])
    elif cmd == "nats-stream":
        nats_stream(*sys.argv[2:])
    elif cmd == "nats-read":
        nats_read(*sys.argv[2:])
    elif cmd == "amqp-setup":
        amqp_setup(*sys.argv[2:])
    elif cmd == "amqp-read":
        amqp_read(*sys.argv[2:])
    else:
        raise SystemExit("unknown command %s" % cmd)
