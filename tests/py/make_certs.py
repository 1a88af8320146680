#!/usr/bin/env python3
"""Make a throwaway CA and a server certificate it signed, for HTTPS webhook tests.

  make_certs.py DIR   -> DIR/ca.pem, DIR/server.pem, DIR/server.key (server: localhost, 127.0.0.1)
  make_certs.py DIR --self-signed-only   -> DIR/other-ca.pem only (a CA that signed nothing here)

Uses the `cryptography` package, so the tests need no openssl binary.
"""
import datetime, ipaddress, os, sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server(ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def main(out, self_signed_only):
    os.makedirs(out, exist_ok=True)
    if self_signed_only:
        _, other = ca("Some Other CA")
        open(os.path.join(out, "other-ca.pem"), "wb").write(pem(other))
        return
    ca_key, ca_cert = ca("Tidemark Test CA")
    key, cert = server(ca_key, ca_cert)
    open(os.path.join(out, "ca.pem"), "wb").write(pem(ca_cert))
    open(os.path.join(out, "server.pem"), "wb").write(pem(cert))
    open(os.path.join(out, "server.key"), "wb").write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], "--self-signed-only" in sys.argv[2:])
