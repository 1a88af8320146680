"""A loopback stand-in for where AWS hands temporary credentials to a workload, written from
the AWS documentation: the EC2 instance metadata service (IMDSv2: a session token from
`PUT /latest/api/token`, required on every `GET /latest/meta-data/...`) and the container
credentials endpoint (`GET PATH` with the `Authorization` token).

  aws_credentials.py --port P --out FILE --secret SK --lifetime SECONDS [--auth TOKEN]

Every credentials answer hands out the next key, `ASIATEST<n>` with session token
`session-<n>`, all with secret SK, expiring LIFETIME seconds later. Each request is one JSON
line in FILE: method, path, status.
"""

import argparse
import datetime
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = None
lock = threading.Lock()
state = {"issued": 0, "tokens": set()}
ROLE = "tidemark-test-role"


def credentials():
    with lock:
        state["issued"] += 1
        n = state["issued"]
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=args.lifetime)
    return {
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIATEST%d" % n,
        "SecretAccessKey": args.secret,
        "Token": "session-%d" % n,
        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, body=b""):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with lock, open(args.out, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "status": status}) + "\n")

    def do_PUT(self):
        if self.path != "/latest/api/token":
            return self.answer(404)
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self.answer(400, "missing or invalid X-aws-ec2-metadata-token-ttl-seconds")
        with lock:
            token = "imds-token-%d" % (len(state["tokens"]) + 1)
            state["tokens"].add(token)
        self.answer(200, token)

    def do_GET(self):
        if self.path.startswith("/latest/"):
            # IMDSv2 only: a GET without a valid session token is refused.
            if self.headers.get("X-aws-ec2-metadata-token") not in state["tokens"]:
                return self.answer(401)
            base = "/latest/meta-data/iam/security-credentials/"
            if self.path == base:
                return self.answer(200, ROLE + "\n")
            if self.path == base + ROLE:
                return self.answer(200, credentials())
            return self.answer(404)
        if self.path == "/container/credentials":
            if self.headers.get("Authorization") != args.auth:
                return self.answer(401, {"message": "bad authorization token"})
            return self.answer(200, credentials())
        self.answer(404)


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--lifetime", type=int, required=True)
    p.add_argument("--auth", default="container-auth-token")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
