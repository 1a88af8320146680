"""A bucket on an S3-compatible server (moto's, on loopback) that `tidemark sync` reads, changed
and listed with boto3.

    python3 s3_source.py mkbucket ENDPOINT BUCKET
    python3 s3_source.py apply ENDPOINT BUCKET OPS_JSON   # a list of changes, in order:
        {"put": KEY, "body": TEXT | "size": N, "content_type": T, "metadata": {K: V}}
        {"multipart": KEY, "parts": N}                     # N parts of 5 MiB
        {"replace_metadata": KEY, "content_type": T, "metadata": {K: V}}   # copy in place
        {"delete": KEY}
    python3 s3_source.py ls ENDPOINT BUCKET   # {KEY: {size, etag, content_type, metadata}}
    python3 s3_source.py auth ENDPOINT BUCKET # a server checking keys: a key pair (JSON)
"""

import json
import sys

import boto3

PART = 5 * 1024 * 1024


def client(endpoint, service="s3"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def apply(s3, bucket, ops):
    for op in ops:
        if "put" in op:
            body = op["body"].encode() if "body" in op else b"x" * op["size"]
            s3.put_object(
                Bucket=bucket,
                Key=op["put"],
                Body=body,
                ContentType=op.get("content_type", "binary/octet-stream"),
                Metadata=op.get("metadata", {}),
            )
        elif "multipart" in op:
            key = op["multipart"]
            upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            parts = []
            for n in range(1, op["parts"] + 1):
                part = s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                    Body=bytes([n]) * PART,
                )
                parts.append({"ETag": part["ETag"], "PartNumber": n})
            s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        elif "replace_metadata" in op:
            key = op["replace_metadata"]
            s3.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                MetadataDirective="REPLACE",
                ContentType=op["content_type"],
                Metadata=op.get("metadata", {}),
            )
        elif "delete" in op:
            s3.delete_object(Bucket=bucket, Key=op["delete"])
        else:
            raise SystemExit(f"unknown op {op}")


def ls(s3, bucket):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            head = s3.head_object(Bucket=bucket, Key=obj["Key"])
            out[obj["Key"]] = {
                "size": head["ContentLength"],
                "etag": head["ETag"].strip('"'),
                "content_type": head["ContentType"],
                "metadata": head["Metadata"],
            }
    return out


def auth(endpoint, bucket):
    # moto started with INITIAL_NO_AUTH_ACTION_COUNT=4 takes these four requests unchecked,
    # then refuses keys it did not issue.
    client(endpoint).create_bucket(Bucket=bucket)
    iam = client(endpoint, "iam")
    iam.create_user(UserName="sync")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="sync", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="sync")["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def main():
    cmd, endpoint, bucket = sys.argv[1:4]
    s3 = client(endpoint)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=bucket)
    elif cmd == "apply":
        apply(s3, bucket, json.loads(sys.argv[4]))
    elif cmd == "ls":
        print(json.dumps(ls(s3, bucket), sort_keys=True))
    elif cmd == "auth":
        print(json.dumps(auth(endpoint, bucket)))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
