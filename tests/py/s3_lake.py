"""A lake on an S3-compatible server (moto's, on loopback), seen with boto3.

    python3 s3_lake.py mkbucket ENDPOINT BUCKET
    python3 s3_lake.py auth ENDPOINT BUCKET   # a server checking keys: bucket, user, key (JSON)
    python3 s3_lake.py download ENDPOINT BUCKET PREFIX DIR   # then read DIR with lake_read.py
"""

import json
import os
import sys

import boto3


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def main():
    cmd, endpoint, bucket = sys.argv[1:4]
    s3 = client(endpoint)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=bucket)
    elif cmd == "auth":
        # moto started with INITIAL_NO_AUTH_ACTION_COUNT=4 takes these four requests
        # unsigned-checked, then refuses keys it did not issue.
        s3.create_bucket(Bucket=bucket)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        iam.create_user(UserName="lake")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="lake", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="lake")["AccessKey"]
        print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
    elif cmd == "download":
        prefix, target = sys.argv[4:6]
        paginator = s3.get_paginator("list_objects_v2")
        n = 0
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                path = os.path.join(target, os.path.relpath(key, prefix))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                s3.download_file(bucket, key, path)
                n += 1
        print(n)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
