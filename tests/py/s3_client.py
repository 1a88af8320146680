"""Drive Tidemark's S3 API with boto3 (path-style); exit non-zero on the first surprise.

Usage: s3_client.py ENDPOINT ACCESS_KEY SECRET_KEY
"""
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
import urllib.request
import urllib.error

endpoint, access, secret = sys.argv[1:4]


def client(key=access, secret_key=secret):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


s3 = client()


def refused(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{fn.__name__}: expected {code}, got {got}: {e}"
        return
    raise AssertionError(f"{fn.__name__} succeeded; expected {code}")


# Buckets.
refused("InvalidBucketName", s3.create_bucket, Bucket="Bad_Name")
refused("NoSuchBucket", s3.put_object, Bucket="missing", Key="k", Body=b"x")
s3.create_bucket(Bucket="photos")
s3.create_bucket(Bucket="photos")  # owned already: 200, as in us-east-1
s3.head_bucket(Bucket="photos")
assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["photos"]

# Objects.
put = s3.put_object(Bucket="photos", Key="a/1.txt", Body=b"hello world", ContentType="text/plain",
                    Metadata={"team": "ml"}, Tagging="stage=raw")
assert put["ETag"] == '"5eb63bbbe01eeed093cb22bb8f5acdc3"', put["ETag"]
got = s3.get_object(Bucket="photos", Key="a/1.txt")
assert got["Body"].read() == b"hello world"
assert got["ContentType"] == "text/plain" and got["Metadata"] == {"team": "ml"}, got
part = s3.get_object(Bucket="photos", Key="a/1.txt", Range="bytes=6-10")
assert part["Body"].read() == b"world" and part["ContentRange"] == "bytes 6-10/11", part
refused("InvalidRange", s3.get_object, Bucket="photos", Key="a/1.txt", Range="bytes=50-60")
refused("PreconditionFailed", s3.get_object, Bucket="photos", Key="a/1.txt", IfMatch='"nope"')
s3.get_object(Bucket="photos", Key="a/1.txt", IfMatch=put["ETag"])
refused("304", s3.get_object, Bucket="photos", Key="a/1.txt", IfNoneMatch=put["ETag"])
head = s3.head_object(Bucket="photos", Key="a/1.txt")
assert head["ContentLength"] == 11, head
refused("404", s3.head_object, Bucket="photos", Key="nope")
refused("NoSuchKey", s3.get_object, Bucket="photos", Key="nope")
refused("KeyTooLongError", s3.put_object, Bucket="photos", Key="k" * 1025, Body=b"x")

# Tagging.
assert s3.get_object_tagging(Bucket="photos", Key="a/1.txt")["TagSet"] == [{"Key": "stage", "Value": "raw"}]
s3.put_object_tagging(Bucket="photos", Key="a/1.txt", Tagging={"TagSet": [{"Key": "stage", "Value": "done"}]})
assert s3.get_object_tagging(Bucket="photos", Key="a/1.txt")["TagSet"] == [{"Key": "stage", "Value": "done"}]
s3.delete_object_tagging(Bucket="photos", Key="a/1.txt")
assert s3.get_object_tagging(Bucket="photos", Key="a/1.txt")["TagSet"] == []

# Copy (metadata COPY, then REPLACE).
s3.copy_object(Bucket="photos", Key="a/2.txt", CopySource={"Bucket": "photos", "Key": "a/1.txt"})
assert s3.head_object(Bucket="photos", Key="a/2.txt")["Metadata"] == {"team": "ml"}
s3.copy_object(Bucket="photos", Key="b.txt", CopySource="photos/a/1.txt",
               MetadataDirective="REPLACE", Metadata={"team": "ops"}, ContentType="text/csv")
h = s3.head_object(Bucket="photos", Key="b.txt")
assert h["Metadata"] == {"team": "ops"} and h["ContentType"] == "text/csv", h
assert s3.get_object(Bucket="photos", Key="b.txt")["Body"].read() == b"hello world"

# Listing: a/1.txt a/2.txt b.txt
v2 = s3.list_objects_v2(Bucket="photos", Delimiter="/")
assert [c["Prefix"] for c in v2["CommonPrefixes"]] == ["a/"], v2
assert [o["Key"] for o in v2["Contents"]] == ["b.txt"], v2
keys, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    page = s3.list_objects_v2(Bucket="photos", MaxKeys=1, **kw)
    keys += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
assert keys == ["a/1.txt", "a/2.txt", "b.txt"], keys
assert [o["Key"] for o in s3.list_objects_v2(Bucket="photos", Prefix="a/", StartAfter="a/1.txt")["Contents"]] == ["a/2.txt"]
v1 = s3.list_objects(Bucket="photos", Marker="a/2.txt")
assert [o["Key"] for o in v1["Contents"]] == ["b.txt"], v1

# Auth: wrong secret, unknown key, expired presigned URL, anonymous.
refused("SignatureDoesNotMatch", client(secret_key="wrong").put_object, Bucket="photos", Key="evil", Body=b"x")
refused("InvalidAccessKeyId", client(key="NOPE").put_object, Bucket="photos", Key="evil", Body=b"x")
url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "b.txt"}, ExpiresIn=1)
assert urllib.request.urlopen(url).read() == b"hello world"
time.sleep(2)
try:
    urllib.request.urlopen(url)
    raise AssertionError("expired presigned URL accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403 and b"<Code>AccessDenied</Code>" in e.read(), e
try:
    urllib.request.urlopen(f"{endpoint}/photos/b.txt")
    raise AssertionError("anonymous request accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403 and b"AccessDenied" in e.read(), e

# Deletes.
refused("BucketNotEmpty", s3.delete_bucket, Bucket="photos")
s3.delete_object(Bucket="photos", Key="b.txt")
s3.delete_object(Bucket="photos", Key="never-there")
out = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "a/1.txt"}, {"Key": "a/2.txt"}]})
assert sorted(d["Key"] for d in out["Deleted"]) == ["a/1.txt", "a/2.txt"], out
assert s3.list_objects_v2(Bucket="photos")["KeyCount"] == 0
s3.delete_bucket(Bucket="photos")
refused("404", s3.head_bucket, Bucket="photos")
print("ok")
