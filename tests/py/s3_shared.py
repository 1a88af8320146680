"""Two Tidemark nodes sharing a content store, through their S3 APIs with boto3; exit non-zero
on the first surprise.

Usage:
  s3_shared.py ENDPOINT_A ENDPOINT_B ACCESS SECRET
      PutObject on A, GetObject and HeadObject on B; a multipart upload created on A with one
      part sent to each node, listed on B, completed on B, read back on A. Prints one JSON
      line: the multipart object's sha256.
"""
import hashlib
import json
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint_a, endpoint_b, access, secret = sys.argv[1:5]
MIB = 1 << 20


def client(endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      read_timeout=120),
    )


a, b = client(endpoint_a), client(endpoint_b)
BUCKET = "shared"
try:
    a.create_bucket(Bucket=BUCKET)
except ClientError as e:  # a retry of a create that went through
    assert e.response["Error"]["Code"] == "BucketAlreadyOwnedByYou", e


def on_b(fn, **kw):
    """B learns of the bucket and the object from the log; wait a little for it."""
    deadline = time.time() + 30
    while True:
        try:
            return fn(**kw)
        except ClientError as e:
            if time.time() > deadline or e.response["Error"]["Code"] not in (
                    "NoSuchBucket", "NoSuchKey", "404"):
                raise
            time.sleep(0.2)


# A single PUT on A; read and described on B.
body = b"stored through node a, served by node b\n" * 1000
put = a.put_object(Bucket=BUCKET, Key="one/object.txt", Body=body, ContentType="text/plain")
got = on_b(b.get_object, Bucket=BUCKET, Key="one/object.txt")
assert got["Body"].read() == body, "GET on b returned other bytes"
assert got["ETag"] == put["ETag"], (got["ETag"], put["ETag"])
head = b.head_object(Bucket=BUCKET, Key="one/object.txt")
assert head["ContentLength"] == len(body), head
assert head["ContentType"] == "text/plain", head
ranged = b.get_object(Bucket=BUCKET, Key="one/object.txt", Range="bytes=10-19")
assert ranged["Body"].read() == body[10:20]

# A multipart upload: created on A, part 1 on A, part 2 on B, listed and completed on B.
part1 = bytes((i * 7) % 251 for i in range(5 * MIB))
part2 = b"the last part, sent to node b"
up = a.create_multipart_upload(Bucket=BUCKET, Key="multi/object.bin")
upload_id = up["UploadId"]
e1 = a.upload_part(Bucket=BUCKET, Key="multi/object.bin", UploadId=upload_id, PartNumber=1,
                   Body=part1)["ETag"]
e2 = on_b(b.upload_part, Bucket=BUCKET, Key="multi/object.bin", UploadId=upload_id,
          PartNumber=2, Body=part2)["ETag"]
listed = b.list_parts(Bucket=BUCKET, Key="multi/object.bin", UploadId=upload_id)["Parts"]
assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, e1), (2, e2)], listed
uploads = b.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
assert [u["UploadId"] for u in uploads] == [upload_id], uploads
done = b.complete_multipart_upload(
    Bucket=BUCKET, Key="multi/object.bin", UploadId=upload_id,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
assert done["ETag"].strip('"').endswith("-2"), done
whole = part1 + part2
got = on_b(a.get_object, Bucket=BUCKET, Key="multi/object.bin")["Body"].read()
assert got == whole, "the completed object read on a differs"
assert not a.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), "the upload is gone"

# Another upload, its parts on both nodes, completed on A this time.
up = b.create_multipart_upload(Bucket=BUCKET, Key="multi/second.bin")
upload_id = up["UploadId"]
e1 = b.upload_part(Bucket=BUCKET, Key="multi/second.bin", UploadId=upload_id, PartNumber=1,
                   Body=part1)["ETag"]
e2 = on_b(a.upload_part, Bucket=BUCKET, Key="multi/second.bin", UploadId=upload_id,
          PartNumber=2, Body=b"second")["ETag"]
a.complete_multipart_upload(
    Bucket=BUCKET, Key="multi/second.bin", UploadId=upload_id,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
got = on_b(b.get_object, Bucket=BUCKET, Key="multi/second.bin")["Body"].read()
assert got == part1 + b"second"

print(json.dumps({"sha256": hashlib.sha256(whole).hexdigest()}))
