"""Multipart uploads against Tidemark's S3 API with boto3; exit non-zero on the first surprise.

Usage:
  s3_multipart.py ENDPOINT ACCESS SECRET big SCRATCH_DIR SIZE_MIB
      upload_file/download_file of a SIZE_MIB file made in SCRATCH_DIR, forced multipart;
      prints one JSON line: sha256, seconds up/down.
  s3_multipart.py ENDPOINT ACCESS SECRET api
      ListParts/ListMultipartUploads/Abort, refused completions, duplicate content; leaves one
      upload open and prints its id (JSON).
  s3_multipart.py ENDPOINT ACCESS SECRET resume UPLOAD_ID
      after a restart: the open upload is still listed and completes.
"""
import hashlib
import json
import os
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access, secret, mode = sys.argv[1:5]
s3 = boto3.client(
    "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                  read_timeout=300),
)
MIB = 1 << 20
BUCKET = "big"


def refused(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{fn.__name__}: expected {code}, got {got}: {e}"
        return
    raise AssertionError(f"{fn.__name__} succeeded; expected {code}")


def s3_etag(parts):
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def upload(key, parts, **kw):
    """Create an upload of `key` and send `parts` (1, 2, ...); returns (id, [{PartNumber, ETag}])."""
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **kw)["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=body)["ETag"]
        assert etag == f'"{hashlib.md5(body).hexdigest()}"', etag
        done.append({"PartNumber": n, "ETag": etag})
    return uid, done


def complete(key, uid, parts):
    return s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": parts})


def big(scratch, size_mib):
    s3.create_bucket(Bucket=BUCKET)
    src, dst = os.path.join(scratch, "src.bin"), os.path.join(scratch, "dst.bin")
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            h.update(block)
            f.write(block)
    cfg = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=64 * MIB,
                         max_concurrency=4)
    t0 = time.monotonic()
    s3.upload_file(src, BUCKET, "one.bin", Config=cfg, ExtraArgs={"ContentType": "application/x-big"})
    up = time.monotonic() - t0
    os.remove(src)
    head = s3.head_object(Bucket=BUCKET, Key="one.bin")
    assert head["ContentLength"] == size_mib * MIB, head
    assert head["ETag"].strip('"').endswith(f"-{-(-size_mib // 64)}"), head["ETag"]
    assert head["ContentType"] == "application/x-big", head
    t0 = time.monotonic()
    s3.download_file(BUCKET, "one.bin", dst, Config=cfg)
    down = time.monotonic() - t0
    d = hashlib.sha256()
    with open(dst, "rb") as f:
        while block := f.read(8 * MIB):
            d.update(block)
    os.remove(dst)
    assert d.hexdigest() == h.hexdigest(), "the download differs from the upload"
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == [], "parts left behind"
    print(json.dumps({"sha256": h.hexdigest(), "etag": head["ETag"].strip('"'),
                      "upload_s": round(up, 2), "download_s": round(down, 2)}))


def api():
    s3.create_bucket(Bucket=BUCKET)
    five = os.urandom(5 * MIB)
    tail = b"the end"

    # Duplicate content: two keys, identical bytes, one blob. Metadata and tags kept.
    uid, parts = upload("dup/a", [five, tail], Metadata={"team": "ml"}, Tagging="stage=raw")
    out = complete("dup/a", uid, parts)
    assert out["ETag"] == f'"{s3_etag([five, tail])}"', out
    uid, parts = upload("dup/b", [five, tail])
    complete("dup/b", uid, parts)
    a = s3.get_object(Bucket=BUCKET, Key="dup/a")
    assert a["Body"].read() == five + tail and a["Metadata"] == {"team": "ml"}, a
    assert s3.get_object_tagging(Bucket=BUCKET, Key="dup/a")["TagSet"] == [{"Key": "stage", "Value": "raw"}]
    refused("NoSuchUpload", s3.list_parts, Bucket=BUCKET, Key="dup/a", UploadId=uid)

    # ListParts, ListMultipartUploads, re-sent part, Abort.
    uid, parts = upload("x/aborted", [five, b"small"])
    s3.upload_part(Bucket=BUCKET, Key="x/aborted", UploadId=uid, PartNumber=2, Body=b"smaller")
    listed = s3.list_parts(Bucket=BUCKET, Key="x/aborted", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MIB), (2, 7)], listed
    page = s3.list_parts(Bucket=BUCKET, Key="x/aborted", UploadId=uid, MaxParts=1)
    assert page["IsTruncated"] and [p["PartNumber"] for p in page["Parts"]] == [1], page
    uploads = s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("x/aborted", uid)], uploads
    s3.abort_multipart_upload(Bucket=BUCKET, Key="x/aborted", UploadId=uid)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    refused("NoSuchUpload", s3.list_parts, Bucket=BUCKET, Key="x/aborted", UploadId=uid)
    refused("NoSuchUpload", s3.abort_multipart_upload, Bucket=BUCKET, Key="x/aborted", UploadId=uid)

    # Refused completions; each leaves the upload (and its parts) as they were.
    uid, parts = upload("refused", [five, b"tiny", tail])
    refused("InvalidPartOrder", complete, "refused", uid, [parts[1], parts[0]])
    refused("EntityTooSmall", complete, "refused", uid, parts)
    refused("InvalidPart", complete, "refused", uid,
            [parts[0], {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}])
    refused("InvalidPart", complete, "refused", uid, [parts[0], {"PartNumber": 9, "ETag": parts[1]["ETag"]}])
    refused("NoSuchUpload", complete, "refused", "0" * 32, parts)
    refused("NoSuchUpload", s3.upload_part, Bucket=BUCKET, Key="refused", UploadId="nope",
            PartNumber=1, Body=b"x")
    refused("404", s3.head_object, Bucket=BUCKET, Key="refused")
    assert len(s3.list_parts(Bucket=BUCKET, Key="refused", UploadId=uid)["Parts"]) == 3
    print(json.dumps({"open_upload": uid}))


def resume(uid):
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="ref")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("refused", uid)], uploads
    parts = s3.list_parts(Bucket=BUCKET, Key="refused", UploadId=uid)["Parts"]
    first, last = parts[0], parts[2]
    # Parts 1 and 3: the small part 2 is left out, so every part but the last is big enough.
    out = complete("refused", uid, [{"PartNumber": 1, "ETag": first["ETag"]},
                                    {"PartNumber": 3, "ETag": last["ETag"]}])
    assert out["ETag"].strip('"').endswith("-2"), out
    assert s3.get_object(Bucket=BUCKET, Key="refused")["ContentLength"] == first["Size"] + last["Size"]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    print(json.dumps({"completed": uid}))


if mode == "big":
    big(sys.argv[5], int(sys.argv[6]))
elif mode == "api":
    api()
elif mode == "resume":
    resume(sys.argv[5])
else:
    sys.exit(f"unknown mode {mode}")
