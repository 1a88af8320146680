#!/usr/bin/env python3
"""Webhook endpoint that the Rust integration tests deliver to.

It checks deliveries with libraries that do not share code with Tidemark: `standardwebhooks`
for signatures and the `cloudevents` 2.x SDK for CloudEvents. Each request becomes one JSON line
in --out, so a test can assert on exactly what arrived on the wire.

  serve:  webhook_receiver.py [--port N] [--out PATH] [--secret whsec_..]... [--fail-first N]
          [--fail-status CODE] [--retry-after S] [--always-status CODE] [--delay-ms N]
          [--tolerance S] [--tls-cert PEM --tls-key PEM]   -> prints "listening <port>"
  verify: webhook_receiver.py verify --secret whsec_.. --id ID --timestamp T
          --signature "v1,.." --body-file F [--tolerance S]   -> exit 0 valid, 1 invalid

Status precedence: --always-status, then --fail-first, then 401 (bad signature), then 400
(bad CloudEvent), else 200. The record is written before answering, so a test that sees the
response can read the line at once.
"""
import argparse, base64, json, signal, ssl, sys, threading, time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings.common import get_event_factory_for_version
from cloudevents.core.bindings.http import HTTPMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

JSON_TYPE = JSONFormat.JSON_CONTENT_TYPE_PATTERN


def make_verifier(secret, tolerance):
    """Webhook for `secret`; `tolerance` (seconds) replaces the library's fixed 5 minutes."""
    if tolerance is None:
        return Webhook(secret)
    # standardwebhooks 1.1.0 has no tolerance option: the window is hard-coded in the private
    # Webhook.__verify_timestamp. Overriding its mangled name keeps verify() (and its HMAC
    # comparison) the library's own; the assert fails loudly if a new version renames it.
    assert hasattr(Webhook, "_Webhook__verify_timestamp"), "standardwebhooks internals changed"

    class TolerantWebhook(Webhook):
        def _Webhook__verify_timestamp(self, header):
            try:
                ts = datetime.fromtimestamp(float(header), tz=timezone.utc)
            except ValueError:
                raise WebhookVerificationError("Invalid Signature Headers")
            skew = (datetime.now(tz=timezone.utc) - ts).total_seconds()
            if skew > tolerance:
                raise WebhookVerificationError("Message timestamp too old")
            if skew < -tolerance:
                raise WebhookVerificationError("Message timestamp too new")
            return ts

    return TolerantWebhook(secret)


def verify(verifiers, body, headers):
    """(verified, error): verified when ANY secret matches, as during a key rotation."""
    errors = []
    for v in verifiers:
        try:
            # json_parse=False: the default parses the body after a match and would turn a
            # correctly signed non-JSON body into a JSONDecodeError.
            v.verify(body, headers, json_parse=False)
            return True, None
        except Exception as e:  # malformed headers raise ValueError/binascii.Error, not only
            msg = f"{type(e).__name__}: {e}"  # WebhookVerificationError
            if msg not in errors:
                errors.append(msg)
    return False, "; ".join(errors)


def strict_factory(attributes, data):
    # The SDK's CloudEvent constructor silently invents `id` (uuid4) and `time` (now) when they
    # are missing; a verifier must report a missing id instead of accepting a made-up one.
    missing = [a for a in ("specversion", "id", "source", "type") if a not in attributes]
    if missing:
        raise ValueError(f"missing required attribute(s): {', '.join(missing)}")
    return get_event_factory_for_version(attributes["specversion"])(attributes, data)


def event_record(event):
    rec = {"subject": None, "time": None, "sequence": None}
    for key, value in event.get_attributes().items():
        rec[key] = value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):  # data_base64 events or non-UTF-8 binary bodies
        rec["data"], rec["data_base64"] = None, base64.b64encode(data).decode()
    else:
        rec["data"] = data
    return rec


def parse_cloudevents(headers, body):
    """List of event records, or None when the request is not a CloudEvents message."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = JSONFormat()
    if "ce-specversion" in headers:
        # The SDK falls back to a plain string when a JSON-typed body does not parse; a
        # malformed payload must be an error here.
        if body and JSON_TYPE.match(ctype or "application/json"):
            json.loads(body)
        return [event_record(from_binary(HTTPMessage(headers, body), fmt, strict_factory))]
    if ctype == "application/cloudevents+json":
        return [event_record(from_structured(HTTPMessage(headers, body), fmt, strict_factory))]
    if ctype == "application/cloudevents-batch+json":
        # The 2.x SDK has no batch mode: split the array and read each member as structured.
        items = json.loads(body)
        if not isinstance(items, list):
            raise ValueError("batch body is not a JSON array")
        return [event_record(fmt.read(strict_factory, json.dumps(i).encode())) for i in items]
    return None


def s3_records(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
        return doc["Records"]
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse by the sender is exercised
    cfg = None  # set in serve()

    def log_request(self, code="-", size="-"):  # the JSON lines are the access log
        pass

    def read_body(self):
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def do_POST(self):
        cfg = self.cfg
        body = self.read_body()
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        with cfg.count_lock:
            cfg.count += 1
            n = cfg.count

        verified, verify_error = (verify(cfg.verifiers, body, headers) if cfg.verifiers
                                  else (None, None))
        try:
            events, ce_error = parse_cloudevents(headers, body), None
        except Exception as e:
            events, ce_error = None, f"{type(e).__name__}: {e}"

        injected = cfg.always_status or (cfg.fail_status if n <= cfg.fail_first else None)
        status = injected or (401 if verified is False else 400 if ce_error else 200)
        record = {"n": n, "path": self.path, "status": status, "headers": headers,
                  "body_b64": base64.b64encode(body).decode(),
                  "webhook_id": headers.get("webhook-id"),
                  "verified": verified, "verify_error": verify_error,
                  "cloudevents": events, "ce_error": ce_error, "records": s3_records(body)}
        if cfg.out:
            line = json.dumps(record, default=str) + "\n"
            with cfg.out_lock:
                cfg.out.write(line)
                cfg.out.flush()

        if cfg.delay_ms:
            time.sleep(cfg.delay_ms / 1000)
        reply = (verify_error or ce_error or "").encode() if status >= 400 else b""
        self.send_response(status)
        if injected and cfg.retry_after is not None:
            self.send_header("Retry-After", str(cfg.retry_after))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def serve(argv):
    p = argparse.ArgumentParser(description="webhook receiver for Tidemark integration tests")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out")
    p.add_argument("--secret", action="append", default=[])
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=500)
    p.add_argument("--retry-after", type=int)
    p.add_argument("--always-status", type=int)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--tolerance", type=float)
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    cfg = p.parse_args(argv)
    cfg.verifiers = [make_verifier(s, cfg.tolerance) for s in cfg.secret]  # bad secret: fail now
    cfg.out = open(cfg.out, "a", encoding="utf-8") if cfg.out else None
    cfg.count, cfg.count_lock, cfg.out_lock = 0, threading.Lock(), threading.Lock()
    Handler.cfg = cfg

    # allow_reuse_address (on by default) lets a restarted receiver take the same port at once.
    server = ThreadingHTTPServer(("127.0.0.1", cfg.port), Handler)
    server.daemon_threads = True
    if cfg.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever runs off the main thread: shutdown() called from a signal handler on the
    # serving thread would wait for itself.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    print(f"listening {server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    if cfg.out:
        cfg.out.close()
    return 0


def verify_one(argv):
    p = argparse.ArgumentParser(prog="webhook_receiver.py verify")
    p.add_argument("--secret", action="append", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--timestamp", required=True)
    p.add_argument("--signature", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--tolerance", type=float)
    a = p.parse_args(argv)
    with open(a.body_file, "rb") as f:
        body = f.read()
    headers = {"webhook-id": a.id, "webhook-timestamp": a.timestamp,
               "webhook-signature": a.signature}
    ok, err = verify([make_verifier(s, a.tolerance) for s in a.secret], body, headers)
    if not ok:
        print(err, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(verify_one(args[1:]) if args[:1] == ["verify"] else serve(args))
