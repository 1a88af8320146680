#!/usr/bin/env python3
"""Independent TLS clients for the tests of `serve --tls-cert`: the `requests` package and
boto3, each verifying the server against a given CA file. Prints one JSON object.

  tls_client.py requests URL CA_FILE           GET URL; {"status": ..., "body": ...} or {"error": ...}
  tls_client.py boto3 ENDPOINT CA_FILE         create a bucket, put and get an object over S3
  tls_client.py peer-cert HOST PORT            the PEM certificate the server presents (unverified)
"""
import json
import socket
import ssl
import sys


def main(args):
    kind = args[0]
    if kind == "requests":
        import requests

        url, ca = args[1], args[2]
        try:
            r = requests.get(url, verify=ca, timeout=10)
            return {"status": r.status_code, "body": r.text}
        except requests.exceptions.SSLError as e:
            return {"error": "ssl", "detail": str(e)}
    if kind == "boto3":
        import boto3
        from botocore.config import Config

        endpoint, ca = args[1], args[2]
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="AKTEST",
            aws_secret_access_key="s3cr3t",
            region_name="us-east-1",
            verify=ca,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        s3.create_bucket(Bucket="tls-bucket")
        s3.put_object(Bucket="tls-bucket", Key="hello.txt", Body=b"over tls")
        body = s3.get_object(Bucket="tls-bucket", Key="hello.txt")["Body"].read()
        return {"body": body.decode()}
    if kind == "peer-cert":
        host, port = args[1], int(args[2])
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=10) as sock:
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        return {"pem": ssl.DER_cert_to_PEM_cert(der)}
    raise SystemExit("unknown kind " + kind)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
