"""A loopback stand-in for AWS Lambda's Invoke API (POST /2015-03-31/functions/NAME/invocations)
that checks every request's Signature Version 4 with botocore (code that shares nothing with
Tidemark's signer) before "running" the function.

  lambda_receiver.py --port P --out FILE --access-key AK --secret SK [--fail-first N]

An access key ending in `*` accepts every key with that prefix (temporary credentials handed
out by aws_credentials.py share one secret).

Functions: `missing` answers 404 ResourceNotFoundException; `flaky` raises (200 with
X-Amz-Function-Error: Unhandled) for its first N invocations; any other name succeeds.
`Event` invocations answer 202. Each request is one JSON line in FILE: n, function,
invocation_type, verified, region (of the credential scope), access_key, session_token,
status, function_error, payload.
"""

import argparse
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

args = None
lock = threading.Lock()
counter = {"n": 0, "flaky": 0}


def verify(handler, body):
    auth = handler.headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False, "no SigV4 authorization", None
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    access_key, day, region, service, term = parts["Credential"].split("/")
    if args.access_key.endswith("*"):
        known = access_key.startswith(args.access_key[:-1])
    else:
        known = access_key == args.access_key
    if not known or service != "lambda" or term != "aws4_request":
        return False, "credential scope %s" % parts["Credential"], region
    signed = parts["SignedHeaders"].split(";")
    headers = {h: handler.headers[h] for h in signed}
    request = AWSRequest(
        method=handler.command,
        url="http://%s%s" % (handler.headers["Host"], handler.path),
        headers=headers,
        data=body,
    )
    request.context["timestamp"] = handler.headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(access_key, args.secret), "lambda", region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != parts["Signature"]:
        return False, "signature mismatch", region
    if not handler.headers["X-Amz-Date"].startswith(day):
        return False, "date outside the credential scope", region
    return True, "", region


def key_of(handler):
    auth = handler.headers.get("Authorization", "")
    return auth.split("Credential=", 1)[-1].split("/", 1)[0] if "Credential=" in auth else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without this, Nagle holds the body back until
    # the client's delayed ACK of the headers (40 ms per keep-alive request).
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path.split("?")[0]
        prefix, suffix = "/2015-03-31/functions/", "/invocations"
        if not (path.startswith(prefix) and path.endswith(suffix)):
            return self.answer(404, b'{"message":"no such route"}')
        function = urllib.parse.unquote(path[len(prefix):-len(suffix)])
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        verified, why, region = verify(self, body)
        with lock:
            counter["n"] += 1
            n = counter["n"]
            function_error = False
            if not verified:
                status, headers = 403, [("x-amzn-ErrorType", "InvalidSignatureException")]
                reply = json.dumps({"message": "The request signature we calculated does not match: " + why})
            elif function.rsplit(":", 1)[-1] == "missing" or function.endswith("function:missing"):
                status, headers = 404, [("x-amzn-ErrorType", "ResourceNotFoundException")]
                reply = json.dumps({"message": "Function not found: " + function})
            elif "flaky" in function and counter["flaky"] < args.fail_first:
                counter["flaky"] += 1
                function_error = True
                status, headers = 200, [("X-Amz-Function-Error", "Unhandled")]
                reply = json.dumps({"errorMessage": "boom", "errorType": "Error"})
            elif kind == "Event":
                status, headers, reply = 202, [], ""
            else:
                status, headers, reply = 200, [], "null"
            record = {
                "n": n,
                "function": function,
                "invocation_type": kind,
                "verified": verified,
                "region": region,
                "access_key": key_of(self),
                "session_token": self.headers.get("X-Amz-Security-Token"),
                "status": status,
                "function_error": function_error,
                "payload": json.loads(body) if verified else None,
            }
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.answer(status, reply.encode(), headers + [("Content-Type", "application/json")])


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
