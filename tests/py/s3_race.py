"""Race S3 and HTTP writers on the same few keys: DeleteObject, PutObjectTagging,
DeleteObjectTagging, CopyObject and PutObject through boto3, `tag` / `delete` / `put` through
`POST /v1/mutations`, from many threads at once. Every answer must be one the APIs document
(S3: 200/204, 404 NoSuchKey, 409, 412; HTTP: 200 with per-mutation `not_found` / `conflict`),
never a 5xx. Prints {"answers": {...counts...}, "bad": [...], "acked": [event ids]}.

Usage: s3_race.py S3_ENDPOINT HTTP_URL BUCKET OPS_PER_THREAD THREADS
"""
import json
import random
import sys
import threading

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, http_url, bucket = sys.argv[1:4]
ops_per_thread, threads = int(sys.argv[4]), int(sys.argv[5])
KEYS = [f"race/{i}" for i in range(4)]
S3_OK = {200, 204, 404, 409, 412}

lock = threading.Lock()
answers = {}
bad = []
acked = []


def client():
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="AKTEST", aws_secret_access_key="s3cr3t",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      max_pool_connections=4),
    )


def note(what, status, detail=""):
    with lock:
        answers[f"{what} {status}"] = answers.get(f"{what} {status}", 0) + 1
        if (isinstance(status, int) and status >= 500) or status not in S3_OK | {"ok"} | {
            "not_found", "conflict"}:
            bad.append(f"{what}: {status} {detail}")


def s3_op(s3, rng):
    key = rng.choice(KEYS)
    op = rng.choice(["delete", "tag", "untag", "copy", "put"])
    try:
        if op == "delete":
            r = s3.delete_object(Bucket=bucket, Key=key)
        elif op == "tag":
            r = s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={
                "TagSet": [{"Key": "t", "Value": str(rng.randint(0, 9))}]})
        elif op == "untag":
            r = s3.delete_object_tagging(Bucket=bucket, Key=key)
        elif op == "copy":
            # Onto another key (a copy onto itself that changes nothing is S3's 400).
            target = rng.choice([k for k in KEYS if k != key])
            r = s3.copy_object(Bucket=bucket, Key=target,
                               CopySource={"Bucket": bucket, "Key": key})
        else:
            r = s3.put_object(Bucket=bucket, Key=key, Body=b"x" * rng.randint(1, 64))
        note(f"s3 {op}", r["ResponseMetadata"]["HTTPStatusCode"])
    except ClientError as e:
        note(f"s3 {op}", e.response["ResponseMetadata"]["HTTPStatusCode"],
             e.response["Error"].get("Code", ""))


def http_op(session, rng):
    key = rng.choice(KEYS)
    op = rng.choice(["tag", "delete", "put"])
    m = {"op": op, "bucket": bucket, "key": key}
    if op == "tag":
        m["tags"] = {"h": str(rng.randint(0, 9))}
    if op == "put":
        m["size"] = 1
    r = session.post(http_url + "/v1/mutations", json={"mutations": [m]}, timeout=30)
    if r.status_code != 200:
        note(f"http {op}", r.status_code, r.text[:200])
        return
    result = r.json()["results"][0]
    if "event_id" in result:
        with lock:
            acked.append(result["event_id"])
        note(f"http {op}", "ok")
    else:
        note(f"http {op}", result["error"]["code"], result["error"]["message"])


def worker(seed):
    rng = random.Random(seed)
    s3 = client()
    session = requests.Session()
    for _ in range(ops_per_thread):
        if rng.random() < 0.6:
            s3_op(s3, rng)
        else:
            http_op(session, rng)


s3 = client()
s3.create_bucket(Bucket=bucket)
for k in KEYS:
    s3.put_object(Bucket=bucket, Key=k, Body=b"seed")
ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps({"answers": answers, "bad": bad, "acked": acked}))
