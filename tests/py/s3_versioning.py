"""S3 versioning through boto3 (path-style); exit non-zero on the first surprise.

Usage: s3_versioning.py ENDPOINT ACCESS_KEY SECRET_KEY before|after-restart
"""
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access, secret, phase = sys.argv[1:5]
s3 = boto3.client(
    "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)


def refused(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{fn.__name__}: expected {code}, got {got}: {e}"
        return
    raise AssertionError(f"{fn.__name__} succeeded; expected {code}")


def versions(bucket, key):
    """(versions, delete markers) of key, newest first, as ListObjectVersions shows them."""
    out = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return ([v for v in out.get("Versions", []) if v["Key"] == key],
            [m for m in out.get("DeleteMarkers", []) if m["Key"] == key])


if phase == "after-restart":
    assert s3.get_bucket_versioning(Bucket="docs")["Status"] == "Enabled"
    assert "Status" not in s3.get_bucket_versioning(Bucket="plain")
    vs, ms = versions("docs", "report.txt")
    assert len(vs) == 2 and len(ms) == 2 and ms[0]["IsLatest"], (vs, ms)
    v1 = vs[-1]["VersionId"]
    assert s3.get_object(Bucket="docs", Key="report.txt", VersionId=v1)["Body"].read() == b"first"
    print("ok")
    sys.exit(0)

s3.create_bucket(Bucket="docs")
s3.create_bucket(Bucket="plain")
assert "Status" not in s3.get_bucket_versioning(Bucket="docs")
refused("NoSuchBucket", s3.put_bucket_versioning, Bucket="missing",
        VersioningConfiguration={"Status": "Enabled"})
refused("MalformedXML", s3.put_bucket_versioning, Bucket="docs",
        VersioningConfiguration={"Status": "Sometimes"})
s3.put_bucket_versioning(Bucket="docs", VersioningConfiguration={"Status": "Enabled"})
assert s3.get_bucket_versioning(Bucket="docs")["Status"] == "Enabled"

# Two versions, each readable by its id with its own bytes and headers.
p1 = s3.put_object(Bucket="docs", Key="report.txt", Body=b"first", ContentType="text/plain")
p2 = s3.put_object(Bucket="docs", Key="report.txt", Body=b"second version",
                   Metadata={"rev": "2"})
vs, ms = versions("docs", "report.txt")
assert len(vs) == 2 and not ms, (vs, ms)
v2, v1 = vs[0]["VersionId"], vs[1]["VersionId"]
assert vs[0]["IsLatest"] and not vs[1]["IsLatest"], vs
assert vs[0]["ETag"] == p2["ETag"] and vs[1]["ETag"] == p1["ETag"], vs
assert vs[1]["Size"] == 5 and vs[0]["Size"] == 14, vs
g1 = s3.get_object(Bucket="docs", Key="report.txt", VersionId=v1)
assert g1["Body"].read() == b"first" and g1["VersionId"] == v1, g1
assert g1["ContentType"] == "text/plain" and g1["ETag"] == p1["ETag"], g1
g2 = s3.get_object(Bucket="docs", Key="report.txt", VersionId=v2)
assert g2["Body"].read() == b"second version" and g2["Metadata"] == {"rev": "2"}, g2
h1 = s3.head_object(Bucket="docs", Key="report.txt", VersionId=v1)
assert h1["ContentLength"] == 5 and h1["VersionId"] == v1, h1
cur = s3.get_object(Bucket="docs", Key="report.txt")
assert cur["Body"].read() == b"second version" and cur["VersionId"] == v2, cur
refused("NoSuchVersion", s3.get_object, Bucket="docs", Key="report.txt", VersionId="nope")
refused("404", s3.head_object, Bucket="docs", Key="report.txt", VersionId="nope")

# Delete: a marker; the key reads as missing, the old versions stay.
d = s3.delete_object(Bucket="docs", Key="report.txt")
assert d["DeleteMarker"] is True and d.get("VersionId"), d
marker = d["VersionId"]
refused("NoSuchKey", s3.get_object, Bucket="docs", Key="report.txt")
refused("404", s3.head_object, Bucket="docs", Key="report.txt")
assert s3.get_object(Bucket="docs", Key="report.txt", VersionId=v1)["Body"].read() == b"first"
refused("MethodNotAllowed", s3.get_object, Bucket="docs", Key="report.txt", VersionId=marker)
assert s3.list_objects_v2(Bucket="docs")["KeyCount"] == 0
vs, ms = versions("docs", "report.txt")
assert [v["VersionId"] for v in vs] == [v2, v1], vs
assert not any(v["IsLatest"] for v in vs), vs
assert [(m["VersionId"], m["IsLatest"]) for m in ms] == [(marker, True)], ms
# Deleting a key whose latest version is a marker stacks another marker, as S3 does.
again = s3.delete_object(Bucket="docs", Key="report.txt")
assert again["DeleteMarker"] and again["VersionId"] != marker, again
vs, ms = versions("docs", "report.txt")
assert [(m["VersionId"], m["IsLatest"]) for m in ms] == [(again["VersionId"], True), (marker, False)], ms
# A version id the key never had removes nothing.
s3.delete_object(Bucket="docs", Key="report.txt", VersionId="0" * 32)
assert s3.get_object(Bucket="docs", Key="report.txt", VersionId=v1)["Body"].read() == b"first"

# Listing pages by key and version: max-keys entries, resumed inside a key's versions.
s3.put_object(Bucket="docs", Key="z/a", Body=b"a")
s3.put_object(Bucket="docs", Key="z/b", Body=b"b")
page = s3.list_object_versions(Bucket="docs", MaxKeys=1)
assert [m["VersionId"] for m in page["DeleteMarkers"]] == [again["VersionId"]], page
assert page["IsTruncated"] and page["NextKeyMarker"] == "report.txt", page
assert page["NextVersionIdMarker"] == again["VersionId"], page
page = s3.list_object_versions(Bucket="docs", KeyMarker="report.txt", MaxKeys=3,
                               VersionIdMarker=page["NextVersionIdMarker"])
assert [m["VersionId"] for m in page["DeleteMarkers"]] == [marker], page
assert [v["VersionId"] for v in page["Versions"]] == [v2, v1], page
page = s3.list_object_versions(Bucket="docs", KeyMarker="report.txt", MaxKeys=1)
assert [v["Key"] for v in page["Versions"]] == ["z/a"] and page["IsTruncated"], page
page = s3.list_object_versions(Bucket="docs", Prefix="z/", KeyMarker="z/a")
assert [v["Key"] for v in page["Versions"]] == ["z/b"] and not page["IsTruncated"], page

# Unversioned bucket: as before, no version ids shown, deletes remove.
s3.put_object(Bucket="plain", Key="k", Body=b"x")
assert "VersionId" not in s3.get_object(Bucket="plain", Key="k")
d = s3.delete_object(Bucket="plain", Key="k")
assert "DeleteMarker" not in d, d
refused("NoSuchBucket", s3.list_object_versions, Bucket="missing")
print("ok")
