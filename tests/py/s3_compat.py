"""S3 behaviour real clients rely on, driven with boto3 and written from the S3 API reference;
each scenario asserts what S3 answers and exits non-zero on the first surprise, printing one
JSON line of facts for the Rust test to check against the log.

Usage: s3_compat.py ENDPOINT ACCESS_KEY SECRET_KEY SCENARIO
"""
import json
import sys
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access, secret, scenario = sys.argv[1:5]


def client(**config):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


s3 = client()


def refused(code, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"{fn.__name__}: expected {code}, got {got}: {e}"
        return e.response
    raise AssertionError(f"{fn.__name__} succeeded; expected {code}")


def listing():
    """The bucket `tree` holds 990 keys in 300 prefixes `pNNN/` and 10 top-level keys `topN`
    (written by the test). Paged with a delimiter and max-keys 7, v1 and v2 end, and return
    each prefix and top-level key once."""
    want_prefixes = {"p%03d/" % i for i in range(300)}
    want_top = {"top%d" % i for i in range(10)}
    for version in ("v1", "v2"):
        prefixes, keys, pages, token = [], [], 0, None
        while True:
            pages += 1
            assert pages < 200, f"{version}: still paging after {pages} pages"
            if version == "v2":
                kw = {"ContinuationToken": token} if token else {}
                r = s3.list_objects_v2(Bucket="tree", Delimiter="/", MaxKeys=7, **kw)
                assert r["KeyCount"] == len(r.get("Contents", [])) + len(r.get("CommonPrefixes", []))
                token = r.get("NextContinuationToken")
            else:
                kw = {"Marker": token} if token else {}
                r = s3.list_objects(Bucket="tree", Delimiter="/", MaxKeys=7, **kw)
                assert r["Marker"] == (token or ""), r
                token = r.get("NextMarker")
            got = len(r.get("Contents", [])) + len(r.get("CommonPrefixes", []))
            assert got <= 7, r
            prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            keys += [o["Key"] for o in r.get("Contents", [])]
            if not r["IsTruncated"]:
                assert token is None, r
                break
            assert token, f"{version}: truncated without a token: {r}"
        assert sorted(prefixes) == sorted(want_prefixes), f"{version}: {len(prefixes)} prefixes"
        assert sorted(keys) == sorted(want_top), f"{version}: {keys}"
        assert pages == (310 + 6) // 7, f"{version}: {pages} pages"

    # v1 without a delimiter: no NextMarker, the last key is the marker.
    r = s3.list_objects(Bucket="tree", MaxKeys=5)
    assert r["IsTruncated"] and "NextMarker" not in r, r
    r2 = s3.list_objects(Bucket="tree", MaxKeys=5, Marker=r["Contents"][-1]["Key"])
    assert r2["Contents"][0]["Key"] > r["Contents"][-1]["Key"]
    # v1 names each object's owner; v2 only with fetch-owner.
    assert "Owner" in r["Contents"][0], r["Contents"][0]
    r = s3.list_objects_v2(Bucket="tree", MaxKeys=2)
    assert "Owner" not in r["Contents"][0], r
    r = s3.list_objects_v2(Bucket="tree", MaxKeys=2, FetchOwner=True)
    assert r["Contents"][0]["Owner"]["ID"], r

    # An empty delimiter is no delimiter, and is not echoed.
    raw = client()
    seen = {}
    raw.meta.events.register("after-call.s3.ListObjectsV2", lambda http_response, **kw: seen.update(body=http_response.content))
    raw.list_objects_v2(Bucket="tree", Delimiter="", MaxKeys=3)
    assert b"<Delimiter" not in seen["body"], seen["body"]
    assert b"<CommonPrefixes" not in seen["body"], seen["body"]

    # encoding-type=url: names come back percent-encoded (botocore leaves them so when the
    # caller asked; it asks itself, and decodes, when the caller did not).
    odd = "odd dir/é+&<x>.txt"
    s3.put_object(Bucket="tree", Key=odd, Body=b"x")
    r = s3.list_objects_v2(Bucket="tree", Prefix="odd", EncodingType="url")
    assert r["EncodingType"] == "url", r
    assert urllib.parse.unquote(r["Contents"][0]["Key"]) == odd, r
    assert "%2B" in r["Contents"][0]["Key"], r
    r = s3.list_objects_v2(Bucket="tree", Prefix="odd", Delimiter="/", EncodingType="url")
    assert r["CommonPrefixes"] == [{"Prefix": "odd%20dir/"}], r
    r = s3.list_objects(Bucket="tree", Prefix="odd", EncodingType="url")
    assert urllib.parse.unquote(r["Contents"][0]["Key"]) == odd, r
    r = s3.list_objects_v2(Bucket="tree", Prefix="odd")
    assert r["Contents"][0]["Key"] == odd, r
    refused("InvalidArgument", s3.list_objects_v2, Bucket="tree", EncodingType="base64")
    return {}


def raw_request(method, path, headers=None, body=b""):
    """A request with no SDK in between: (status, headers, body)."""
    import http.client

    u = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out


def basics():
    """Request ids, 304s with the ETag, the tag count, DeleteObjects' 1000-key ceiling,
    presigned URLs' seven days, SigV4 signed with `Date`, CreateBucket of an owned bucket."""
    s3.create_bucket(Bucket="basics")
    s3.create_bucket(Bucket="basics")  # us-east-1: owned already, 200
    put = s3.put_object(Bucket="basics", Key="a.txt", Body=b"hello", Tagging="x=1&y=2")
    rid = put["ResponseMetadata"]["HTTPHeaders"].get("x-amz-request-id")
    assert rid and len(rid) == 16, put["ResponseMetadata"]
    seen = {}
    watched = client()
    watched.meta.events.register("after-call.s3.GetObject", lambda http_response, **kw: seen.update(body=http_response.content, headers=http_response.headers))
    refused("NoSuchKey", watched.get_object, Bucket="basics", Key="missing")
    rid = seen["headers"]["x-amz-request-id"]
    assert ("<RequestId>%s</RequestId>" % rid).encode() in seen["body"], seen
    # A 304 carries the ETag.
    try:
        s3.get_object(Bucket="basics", Key="a.txt", IfNoneMatch=put["ETag"])
        raise AssertionError("If-None-Match on the current ETag did not answer 304")
    except ClientError as err:
        r = err.response
        assert r["Error"]["Code"] == "304", r
        assert r["ResponseMetadata"]["HTTPHeaders"].get("etag") == put["ETag"], r
    got = s3.get_object(Bucket="basics", Key="a.txt")
    assert got["TagCount"] == 2, got
    # DeleteObjects names at most 1000 keys.
    keys = [{"Key": "k%d" % i} for i in range(1001)]
    refused("MalformedXML", s3.delete_objects, Bucket="basics", Delete={"Objects": keys})
    s3.delete_objects(Bucket="basics", Delete={"Objects": keys[:1000]})
    # Presigned URLs: seven days at most.
    import urllib.request

    v4 = client(signature_version="s3v4")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": "basics", "Key": "a.txt"}, ExpiresIn=3600)
    assert "X-Amz-Expires=3600" in url, url
    assert urllib.request.urlopen(url).read() == b"hello"
    url = v4.generate_presigned_url("get_object", Params={"Bucket": "basics", "Key": "a.txt"}, ExpiresIn=8 * 86400)
    status, headers, body = raw_request("GET", url[len(endpoint):])
    assert status == 400 and b"AuthorizationQueryParametersError" in body, (status, body)
    assert b"<RequestId>" in body, body
    # SigV4 signed with a Date header and no x-amz-date.
    import datetime
    import hashlib
    import email.utils

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = datetime.datetime.now(datetime.timezone.utc)
    host = urllib.parse.urlsplit(endpoint).netloc
    headers = {
        "Host": host,
        "Date": email.utils.format_datetime(now, usegmt=True),
        "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(),
    }
    req = AWSRequest(method="GET", url=endpoint + "/basics/a.txt", headers=headers)
    req.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    signer = SigV4Auth(Credentials(access, secret), "s3", "us-east-1")
    canonical = signer.canonical_request(req)
    signature = signer.signature(signer.string_to_sign(req, canonical), req)
    signed = ";".join(signer.signed_headers(signer.headers_to_sign(req)).split(";"))
    assert "date" in signed and "x-amz-date" not in signed, signed
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/s3/aws4_request, SignedHeaders=%s, Signature=%s" % (
        access, now.strftime("%Y%m%d"), signed, signature)
    status, _, body = raw_request("GET", "/basics/a.txt", headers)
    assert status == 200 and body == b"hello", (status, body)
    headers["Authorization"] = headers["Authorization"][:-4] + "0000"
    status, _, body = raw_request("GET", "/basics/a.txt", headers)
    assert status == 403 and b"SignatureDoesNotMatch" in body, (status, body)
    return {}


def signed_raw(method, path, headers, body):
    """A request signed with SigV4 by botocore, sent as given (no SDK body handling)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=endpoint + path, headers=dict(headers), data=body)
    SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(req)
    return raw_request(method, path, dict(req.headers.items()), body)


def integrity():
    """Content-MD5 and flexible checksums, as headers and as an aws-chunked trailer: a
    mismatch is refused with nothing stored."""
    import base64
    import hashlib

    s3.create_bucket(Bucket="sums")
    md5 = lambda b: base64.b64encode(hashlib.md5(b).digest()).decode()
    s3.put_object(Bucket="sums", Key="keep.txt", Body=b"original", ContentMD5=md5(b"original"))
    refused("BadDigest", s3.put_object, Bucket="sums", Key="keep.txt", Body=b"replaced", ContentMD5=md5(b"other"))
    refused("InvalidDigest", s3.put_object, Bucket="sums", Key="bad-md5.txt", Body=b"x", ContentMD5="not-base64!")
    refused("BadDigest", s3.put_object, Bucket="sums", Key="bad-md5.txt", Body=b"x", ContentMD5=md5(b"y"))
    assert s3.get_object(Bucket="sums", Key="keep.txt")["Body"].read() == b"original"
    # The SDK's own checksum, computed and sent; the answer carries the server's.
    put = s3.put_object(Bucket="sums", Key="sha.txt", Body=b"hello", ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"hello").digest()).decode(), put
    put = s3.put_object(Bucket="sums", Key="crc.txt", Body=b"hello")
    assert put.get("ChecksumCRC32") == "NhCmhg==", put
    # A checksum header that does not match the body.
    corrupt = client()

    def tamper(request, **kw):
        for name in list(request.headers.keys()):
            if name.lower().startswith("x-amz-checksum-"):
                request.headers.replace_header(name, "AAAAAA==")
    corrupt.meta.events.register("before-sign.s3.PutObject", tamper)
    refused("BadDigest", corrupt.put_object, Bucket="sums", Key="bad-crc.txt", Body=b"hello")
    refused("InvalidRequest", s3.put_object, Bucket="sums", Key="bad-crc.txt", Body=b"hello",
            ChecksumCRC32="short")
    # aws-chunked with the checksum as a trailer (what the SDKs send over TLS).
    for key, crc, status in (("trailer.txt", "NhCmhg==", 200), ("bad-trailer.txt", "AAAAAA==", 400)):
        body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % crc.encode()
        got, _, answer = signed_raw("PUT", "/sums/" + key, {
            "Content-Encoding": "aws-chunked",
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "X-Amz-Decoded-Content-Length": "5",
            "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "Content-Length": str(len(body)),
        }, body)
        assert got == status, (key, got, answer)
        if status == 400:
            assert b"<Code>BadDigest</Code>" in answer, answer
    assert s3.get_object(Bucket="sums", Key="trailer.txt")["Body"].read() == b"hello"
    for key in ("bad-md5.txt", "bad-crc.txt", "bad-trailer.txt"):
        refused("404", s3.head_object, Bucket="sums", Key=key)
    # A part whose digest does not match leaves the part before it in place.
    up = s3.create_multipart_upload(Bucket="sums", Key="parts.bin")["UploadId"]
    first = s3.upload_part(Bucket="sums", Key="parts.bin", UploadId=up, PartNumber=1, Body=b"a" * 10)
    refused("BadDigest", s3.upload_part, Bucket="sums", Key="parts.bin", UploadId=up, PartNumber=1,
            Body=b"b" * 10, ContentMD5=md5(b"c"))
    parts = s3.list_parts(Bucket="sums", Key="parts.bin", UploadId=up)["Parts"]
    assert [p["ETag"] for p in parts] == [first["ETag"]], parts
    s3.abort_multipart_upload(Bucket="sums", Key="parts.bin", UploadId=up)
    return {"refused": ["bad-md5.txt", "bad-crc.txt", "bad-trailer.txt"]}


def conditional():
    """Conditional writes (If-None-Match: *, If-Match) on PutObject and
    CompleteMultipartUpload, two writers racing on each key, CompleteMultipartUpload retried,
    and a copy's conditions on its source."""
    import datetime
    import threading

    s3.create_bucket(Bucket="cond")
    first = s3.put_object(Bucket="cond", Key="once.txt", Body=b"1", IfNoneMatch="*")
    refused("PreconditionFailed", s3.put_object, Bucket="cond", Key="once.txt", Body=b"2", IfNoneMatch="*")
    second = s3.put_object(Bucket="cond", Key="once.txt", Body=b"3", IfMatch=first["ETag"])
    refused("PreconditionFailed", s3.put_object, Bucket="cond", Key="once.txt", Body=b"4", IfMatch=first["ETag"])
    refused("NoSuchKey", s3.put_object, Bucket="cond", Key="never.txt", Body=b"5", IfMatch=first["ETag"])
    assert s3.get_object(Bucket="cond", Key="once.txt")["Body"].read() == b"3"

    # Two writers race to create each key: exactly one wins.
    winners = {}
    lock = threading.Lock()

    def writer(name, key, barrier):
        c = client()
        barrier.wait()
        try:
            c.put_object(Bucket="cond", Key=key, Body=name.encode(), IfNoneMatch="*")
            with lock:
                winners.setdefault(key, []).append(name)
        except ClientError as e:
            code = e.response["Error"]["Code"]
            assert code in ("PreconditionFailed", "ConditionalRequestConflict"), code
    races = ["race-%02d" % i for i in range(20)]
    for key in races:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=writer, args=(n, key, barrier)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners.get(key, [])) == 1, (key, winners.get(key))
        body = s3.get_object(Bucket="cond", Key=key)["Body"].read().decode()
        assert body == winners[key][0], (key, body, winners[key])

    # CompleteMultipartUpload: conditional, and retried after it succeeded.
    def upload(key):
        up = s3.create_multipart_upload(Bucket="cond", Key=key)["UploadId"]
        part = s3.upload_part(Bucket="cond", Key=key, UploadId=up, PartNumber=1, Body=b"m" * 100)
        return up, {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    up, parts = upload("once.txt")
    refused("PreconditionFailed", s3.complete_multipart_upload, Bucket="cond", Key="once.txt",
            UploadId=up, MultipartUpload=parts, IfNoneMatch="*")
    s3.abort_multipart_upload(Bucket="cond", Key="once.txt", UploadId=up)  # it was kept
    up, parts = upload("multi.bin")
    done = s3.complete_multipart_upload(Bucket="cond", Key="multi.bin", UploadId=up, MultipartUpload=parts, IfNoneMatch="*")
    again = s3.complete_multipart_upload(Bucket="cond", Key="multi.bin", UploadId=up, MultipartUpload=parts)
    assert again["ETag"] == done["ETag"], (done, again)

    # A copy's conditions on its source.
    src = {"Bucket": "cond", "Key": "once.txt"}
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    earlier = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    for kw in ({"CopySourceIfMatch": first["ETag"]}, {"CopySourceIfNoneMatch": second["ETag"]},
               {"CopySourceIfModifiedSince": later}, {"CopySourceIfUnmodifiedSince": earlier}):
        refused("PreconditionFailed", s3.copy_object, Bucket="cond", Key="copy.txt", CopySource=src, **kw)
    s3.copy_object(Bucket="cond", Key="copy.txt", CopySource=src, CopySourceIfMatch=second["ETag"],
                   CopySourceIfModifiedSince=earlier)
    return {"races": races}


def versioning():
    """Delete markers stack (also on keys that never held an object), a read that hits one
    says so, ListObjectVersions pages by key and version and rolls prefixes, and a bucket
    holding only markers cannot be deleted."""
    s3.create_bucket(Bucket="ver")
    s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="ver", Key="k", Body=b"one")["VersionId"]
    m1 = s3.delete_object(Bucket="ver", Key="k")
    m2 = s3.delete_object(Bucket="ver", Key="k")
    assert m1["DeleteMarker"] and m2["DeleteMarker"] and m1["VersionId"] != m2["VersionId"], (m1, m2)
    out = s3.list_object_versions(Bucket="ver", Prefix="k")
    markers = out.get("DeleteMarkers", [])
    assert [m["VersionId"] for m in markers] == [m2["VersionId"], m1["VersionId"]], out
    assert [m["IsLatest"] for m in markers] == [True, False], markers
    assert [v["VersionId"] for v in out["Versions"]] == [v1], out
    ghost = s3.delete_object(Bucket="ver", Key="ghost")
    assert ghost["DeleteMarker"] and ghost["VersionId"], ghost
    many = s3.delete_objects(Bucket="ver", Delete={"Objects": [{"Key": "ghost2"}]})
    d = many["Deleted"][0]
    assert d["DeleteMarker"] and d["DeleteMarkerVersionId"], many
    # Reads that hit the marker say so.
    for read in (s3.get_object, s3.head_object):
        try:
            read(Bucket="ver", Key="k")
            raise AssertionError("a read of a deleted key succeeded")
        except ClientError as e:
            h = e.response["ResponseMetadata"]["HTTPHeaders"]
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, e.response
            assert h.get("x-amz-delete-marker") == "true", h
            assert h.get("x-amz-version-id") == m2["VersionId"], h
    try:
        s3.get_object(Bucket="ver", Key="k", VersionId=m1["VersionId"])
        raise AssertionError("reading a delete marker by id succeeded")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "MethodNotAllowed", e.response
        assert e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker") == "true"
    assert s3.get_object(Bucket="ver", Key="k", VersionId=v1)["Body"].read() == b"one"

    # Paging by key and version.
    want = set()
    for key, n in (("v/a", 3), ("v/b", 2), ("w", 2)):
        for i in range(n):
            want.add((key, s3.put_object(Bucket="ver", Key=key, Body=b"%d" % i)["VersionId"]))
    got, kw, pages = [], {}, 0
    while True:
        pages += 1
        assert pages < 50, "ListObjectVersions does not end"
        r = s3.list_object_versions(Bucket="ver", MaxKeys=2, **kw)
        entries = r.get("Versions", []) + r.get("DeleteMarkers", [])
        assert len(entries) <= 2, r
        got += [(e["Key"], e["VersionId"]) for e in entries]
        if not r["IsTruncated"]:
            break
        assert r["NextKeyMarker"] and r["NextVersionIdMarker"], r
        kw = {"KeyMarker": r["NextKeyMarker"], "VersionIdMarker": r["NextVersionIdMarker"]}
    assert len(got) == len(set(got)), got
    assert want <= set(got), (want - set(got))
    assert len(got) == len(want) + 5, got  # k: one version, two markers; ghost, ghost2: a marker each
    # A delimiter rolls keys into prefixes.
    r = s3.list_object_versions(Bucket="ver", Delimiter="/")
    assert r.get("CommonPrefixes") == [{"Prefix": "v/"}], r
    assert {v["Key"] for v in r.get("Versions", [])} == {"k", "w"}, r

    # Only markers left: still not empty.
    s3.create_bucket(Bucket="markers")
    s3.put_bucket_versioning(Bucket="markers", VersioningConfiguration={"Status": "Enabled"})
    s3.delete_object(Bucket="markers", Key="nothing")
    refused("BucketNotEmpty", s3.delete_bucket, Bucket="markers")
    return {}


def suspended():
    """A suspended bucket writes the `null` version, each write replacing the previous one
    (a delete too, as a `null` marker); versions from before stay."""
    s3.create_bucket(Bucket="susp")
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="susp", Key="k", Body=b"enabled")["VersionId"]
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Suspended"})
    p1 = s3.put_object(Bucket="susp", Key="k", Body=b"null one")
    assert p1.get("VersionId") == "null", p1
    s3.put_object(Bucket="susp", Key="k", Body=b"null two")

    def listing():
        r = s3.list_object_versions(Bucket="susp", Prefix="k")
        return ([(v["VersionId"], v["IsLatest"]) for v in r.get("Versions", [])],
                [(m["VersionId"], m["IsLatest"]) for m in r.get("DeleteMarkers", [])])
    assert listing() == ([("null", True), (v1, False)], []), listing()
    assert s3.get_object(Bucket="susp", Key="k", VersionId="null")["Body"].read() == b"null two"
    d = s3.delete_object(Bucket="susp", Key="k")
    assert d["DeleteMarker"] and d["VersionId"] == "null", d
    assert listing() == ([(v1, False)], [("null", True)]), listing()
    refused("MethodNotAllowed", s3.get_object, Bucket="susp", Key="k", VersionId="null")
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Enabled"})
    v3 = s3.put_object(Bucket="susp", Key="k", Body=b"again")["VersionId"]
    assert v3 != "null"
    assert listing() == ([(v3, True), (v1, False)], [("null", False)]), listing()
    assert s3.get_object(Bucket="susp", Key="k", VersionId=v1)["Body"].read() == b"enabled"
    return {}


def part_copy():
    """UploadPartCopy: parts copied from a range of an object and whole objects assemble
    into the same bytes; a range outside the source and a failed source condition are refused."""
    import hashlib
    import os

    s3.create_bucket(Bucket="partcopy")
    data = os.urandom(6 * 1024 * 1024 + 123)
    src = s3.put_object(Bucket="partcopy", Key="src.bin", Body=data)
    small = s3.put_object(Bucket="partcopy", Key="small.bin", Body=b"tail!")
    up = s3.create_multipart_upload(Bucket="partcopy", Key="joined.bin")["UploadId"]
    split = 5 * 1024 * 1024
    p1 = s3.upload_part_copy(Bucket="partcopy", Key="joined.bin", UploadId=up, PartNumber=1,
                             CopySource={"Bucket": "partcopy", "Key": "src.bin"},
                             CopySourceRange="bytes=0-%d" % (split - 1))
    p2 = s3.upload_part_copy(Bucket="partcopy", Key="joined.bin", UploadId=up, PartNumber=2,
                             CopySource={"Bucket": "partcopy", "Key": "src.bin"},
                             CopySourceIfMatch=src["ETag"])
    p3 = s3.upload_part_copy(Bucket="partcopy", Key="joined.bin", UploadId=up, PartNumber=3,
                             CopySource={"Bucket": "partcopy", "Key": "small.bin"})
    assert p1["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(data[:split]).hexdigest(), p1
    refused("InvalidRange", s3.upload_part_copy, Bucket="partcopy", Key="joined.bin", UploadId=up,
            PartNumber=4, CopySource={"Bucket": "partcopy", "Key": "small.bin"}, CopySourceRange="bytes=3-10")
    refused("PreconditionFailed", s3.upload_part_copy, Bucket="partcopy", Key="joined.bin", UploadId=up,
            PartNumber=4, CopySource={"Bucket": "partcopy", "Key": "small.bin"}, CopySourceIfMatch=src["ETag"])
    parts = [{"PartNumber": i + 1, "ETag": p["CopyPartResult"]["ETag"]} for i, p in enumerate((p1, p2, p3))]
    s3.complete_multipart_upload(Bucket="partcopy", Key="joined.bin", UploadId=up, MultipartUpload={"Parts": parts})
    got = s3.get_object(Bucket="partcopy", Key="joined.bin")["Body"].read()
    assert got == data[:split] + data + b"tail!", (len(got), len(data))
    return {}


def headers_parts():
    """Standard headers kept, copied and replaced; checksums returned when asked; reads by
    part of a 3-part upload."""
    import base64
    import datetime
    import hashlib
    import os

    s3.create_bucket(Bucket="hdrs")
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    kw = dict(CacheControl="max-age=60", ContentDisposition='attachment; filename="a.txt"',
              ContentEncoding="gzip", ContentLanguage="en-GB", Expires=expires)
    s3.put_object(Bucket="hdrs", Key="a.txt", Body=b"hello", ContentType="text/plain", **kw)
    for read in (s3.head_object, s3.get_object):
        r = read(Bucket="hdrs", Key="a.txt")
        for name, want in kw.items():
            got = r.get(name)
            assert got == want, (name, got, want)
    s3.copy_object(Bucket="hdrs", Key="copy.txt", CopySource={"Bucket": "hdrs", "Key": "a.txt"})
    r = s3.head_object(Bucket="hdrs", Key="copy.txt")
    assert r["CacheControl"] == "max-age=60" and r["ContentLanguage"] == "en-GB", r
    s3.copy_object(Bucket="hdrs", Key="copy.txt", CopySource={"Bucket": "hdrs", "Key": "a.txt"},
                   MetadataDirective="REPLACE", CacheControl="no-cache")
    r = s3.head_object(Bucket="hdrs", Key="copy.txt")
    assert r["CacheControl"] == "no-cache" and "ContentLanguage" not in r, r

    # The checksum the upload was verified with, returned when asked for.
    s3.put_object(Bucket="hdrs", Key="sum.txt", Body=b"hello", ChecksumAlgorithm="SHA256")
    want = base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    r = s3.head_object(Bucket="hdrs", Key="sum.txt", ChecksumMode="ENABLED")
    assert r.get("ChecksumSHA256") == want, r
    r = s3.get_object(Bucket="hdrs", Key="sum.txt", ChecksumMode="ENABLED")
    assert r.get("ChecksumSHA256") == want and r["Body"].read() == b"hello", r
    assert "ChecksumSHA256" not in s3.head_object(Bucket="hdrs", Key="sum.txt")
    # A range is not the whole object: no checksum (the SDK would check it against the range).
    r = s3.get_object(Bucket="hdrs", Key="sum.txt", Range="bytes=1-3", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" not in r and r["Body"].read() == b"ell", r

    # Reads by part.
    sizes = [5 * 1024 * 1024, 5 * 1024 * 1024, 1024]
    parts_data = [os.urandom(n) for n in sizes]
    up = s3.create_multipart_upload(Bucket="hdrs", Key="parts.bin", CacheControl="private")["UploadId"]
    etags = [s3.upload_part(Bucket="hdrs", Key="parts.bin", UploadId=up, PartNumber=i + 1, Body=d)["ETag"]
             for i, d in enumerate(parts_data)]
    s3.complete_multipart_upload(Bucket="hdrs", Key="parts.bin", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    assert s3.head_object(Bucket="hdrs", Key="parts.bin")["CacheControl"] == "private"
    start = 0
    for i, d in enumerate(parts_data):
        r = s3.get_object(Bucket="hdrs", Key="parts.bin", PartNumber=i + 1)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206, r["ResponseMetadata"]
        assert r["PartsCount"] == 3, r
        assert r["ContentRange"] == "bytes %d-%d/%d" % (start, start + len(d) - 1, sum(sizes)), r
        assert r["Body"].read() == d
        h = s3.head_object(Bucket="hdrs", Key="parts.bin", PartNumber=i + 1)
        assert h["ContentLength"] == len(d) and h["PartsCount"] == 3, h
        start += len(d)
    refused("InvalidPartNumber", s3.get_object, Bucket="hdrs", Key="parts.bin", PartNumber=4)
    r = s3.get_object(Bucket="hdrs", Key="a.txt", PartNumber=1)
    assert r["Body"].read() == b"hello" and "PartsCount" not in r, r
    refused("InvalidPartNumber", s3.get_object, Bucket="hdrs", Key="a.txt", PartNumber=2)
    return {}


def version_deletes():
    """Removing versions for good: the current one (the one before becomes current), an older
    one, a delete marker (the object comes back); then emptying a versioned bucket as tools
    do (every version and marker in one DeleteObjects) lets it be deleted."""
    s3.create_bucket(Bucket="vdel")
    s3.put_bucket_versioning(Bucket="vdel", VersioningConfiguration={"Status": "Enabled"})
    v = [s3.put_object(Bucket="vdel", Key="k", Body=b"v%d" % i, CacheControl="c%d" % i)["VersionId"]
         for i in range(3)]

    def ids():
        r = s3.list_object_versions(Bucket="vdel", Prefix="k")
        return ([x["VersionId"] for x in r.get("Versions", [])],
                [x["VersionId"] for x in r.get("DeleteMarkers", [])])
    d = s3.delete_object(Bucket="vdel", Key="k", VersionId=v[2])
    assert d["VersionId"] == v[2] and "DeleteMarker" not in d, d
    cur = s3.get_object(Bucket="vdel", Key="k")
    assert cur["Body"].read() == b"v1" and cur["VersionId"] == v[1], cur
    assert cur["CacheControl"] == "c1", cur
    refused("NoSuchVersion", s3.get_object, Bucket="vdel", Key="k", VersionId=v[2])
    s3.delete_object(Bucket="vdel", Key="k", VersionId=v[0])
    assert ids() == ([v[1]], []), ids()
    refused("NoSuchVersion", s3.get_object, Bucket="vdel", Key="k", VersionId=v[0])
    # A marker removed: the object is back.
    m = s3.delete_object(Bucket="vdel", Key="k")["VersionId"]
    refused("NoSuchKey", s3.get_object, Bucket="vdel", Key="k")
    d = s3.delete_object(Bucket="vdel", Key="k", VersionId=m)
    assert d["DeleteMarker"] and d["VersionId"] == m, d
    assert s3.get_object(Bucket="vdel", Key="k")["Body"].read() == b"v1"
    assert ids() == ([v[1]], []), ids()
    # The last version removed: the key is gone, and lists nowhere.
    s3.delete_object(Bucket="vdel", Key="k", VersionId=v[1])
    assert ids() == ([], []), ids()
    assert s3.list_objects_v2(Bucket="vdel")["KeyCount"] == 0
    refused("NoSuchKey", s3.get_object, Bucket="vdel", Key="k")

    # Emptying a bucket as tools do, then deleting it.
    for i in range(5):
        s3.put_object(Bucket="vdel", Key="many/%d" % (i % 2), Body=b"x")
    s3.delete_object(Bucket="vdel", Key="many/0")
    r = s3.list_object_versions(Bucket="vdel")
    everything = [{"Key": x["Key"], "VersionId": x["VersionId"]}
                  for x in r.get("Versions", []) + r.get("DeleteMarkers", [])]
    assert len(everything) == 6, r
    out = s3.delete_objects(Bucket="vdel", Delete={"Objects": everything})
    assert len(out.get("Deleted", [])) == 6 and not out.get("Errors"), out
    assert sum(1 for x in out["Deleted"] if x.get("DeleteMarker")) == 1, out
    s3.delete_bucket(Bucket="vdel")
    refused("404", s3.head_bucket, Bucket="vdel")
    # On an unversioned bucket only `null` is a version.
    s3.create_bucket(Bucket="plainv")
    s3.put_object(Bucket="plainv", Key="k", Body=b"x")
    refused("InvalidArgument", s3.delete_object, Bucket="plainv", Key="k", VersionId=v[0])
    s3.delete_object(Bucket="plainv", Key="k", VersionId="null")
    refused("NoSuchKey", s3.get_object, Bucket="plainv", Key="k")
    return {"removed": [v[2], v[0], m, v[1]]}


def uploads():
    """ListMultipartUploads with a delimiter rolls keys into prefixes, and pages over them
    once each."""
    s3.create_bucket(Bucket="ups")
    ids = {k: s3.create_multipart_upload(Bucket="ups", Key=k)["UploadId"]
           for k in ("a/1", "a/2", "b/x/1", "top")}
    r = s3.list_multipart_uploads(Bucket="ups", Delimiter="/")
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["a/", "b/"], r
    assert [u["Key"] for u in r["Uploads"]] == ["top"], r
    seen, kw = [], {}
    for _ in range(10):
        r = s3.list_multipart_uploads(Bucket="ups", Delimiter="/", MaxUploads=1, **kw)
        seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        seen += [u["Key"] for u in r.get("Uploads", [])]
        if not r["IsTruncated"]:
            break
        kw = {"KeyMarker": r["NextKeyMarker"]}
        if r.get("NextUploadIdMarker"):
            kw["UploadIdMarker"] = r["NextUploadIdMarker"]
    assert seen == ["a/", "b/", "top"], seen
    r = s3.list_multipart_uploads(Bucket="ups", Prefix="a/")
    assert sorted(u["UploadId"] for u in r["Uploads"]) == sorted([ids["a/1"], ids["a/2"]]), r
    return {}


if __name__ == "__main__":
    facts = globals()[scenario]()
    print(json.dumps(facts or {}))
