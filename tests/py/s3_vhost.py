"""Virtual-host addressing against Tidemark's S3 API with boto3: BUCKET.DOMAIN names the
bucket. The test machine has no wildcard DNS, so every DOMAIN name resolves to loopback here.

Usage: s3_vhost.py DOMAIN PORT ACCESS_KEY SECRET_KEY
"""
import socket
import sys

import boto3
from botocore.config import Config

domain, port, access, secret = sys.argv[1:5]

real_getaddrinfo = socket.getaddrinfo


def loopback(host, *args, **kw):
    if host == domain or str(host).endswith("." + domain):
        host = "127.0.0.1"
    return real_getaddrinfo(host, *args, **kw)


socket.getaddrinfo = loopback


def client(style, endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}),
    )


vhost = client("virtual", f"http://{domain}:{port}")
sent = []
vhost.meta.events.register("before-send.s3", lambda request, **kw: sent.append(request.url))
vhost.create_bucket(Bucket="vhosted")
put = vhost.put_object(Bucket="vhosted", Key="v/1.txt", Body=b"by host")
got = vhost.get_object(Bucket="vhosted", Key="v/1.txt")
assert got["Body"].read() == b"by host", got
assert sent[-1] == f"http://vhosted.{domain}:{port}/v/1.txt", sent
assert [b["Name"] for b in vhost.list_buckets()["Buckets"]] == ["vhosted"]

# Path style keeps working, on the domain and on the address.
for endpoint in (f"http://{domain}:{port}", f"http://127.0.0.1:{port}"):
    path = client("path", endpoint)
    assert path.get_object(Bucket="vhosted", Key="v/1.txt")["Body"].read() == b"by host"
path.put_object(Bucket="vhosted", Key="p/2.txt", Body=b"by path")
listed = vhost.list_objects_v2(Bucket="vhosted")
assert [o["Key"] for o in listed["Contents"]] == ["p/2.txt", "v/1.txt"], listed
print("ok")
