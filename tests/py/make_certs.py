#!/usr/bin/env python3
"""Make a throwaway CA and a server certificate it signed, for HTTPS webhook tests.

  make_certs.py DIR   -> DIR/ca.pem, DIR/server.pem, DIR/server.key (server: localhost, 127.0.0.1)
  make_certs.py DIR --self-signed-only   -> DIR/other-ca.pem only (a CA that signed nothing here)
  make_certs.py DIR --server NAME        -> DIR/NAME.pem, DIR/NAME.key: another server
                                            certificate from DIR/ca.key (a renewal)
  make_certs.py DIR --client             -> DIR/client.pem, DIR/client.key (client auth, mTLS)

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


def server(ca_key, ca_cert, usage=ExtendedKeyUsageOID.SERVER_AUTH, name="localhost"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
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
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write(out, name, data):
    open(os.path.join(out, name), "wb").write(data)


def load_ca(out):
    ca_cert = x509.load_pem_x509_certificate(open(os.path.join(out, "ca.pem"), "rb").read())
    ca_key = serialization.load_pem_private_key(
        open(os.path.join(out, "ca.key"), "rb").read(), password=None
    )
    return ca_key, ca_cert


def main(out, args):
    os.makedirs(out, exist_ok=True)
    if "--self-signed-only" in args:
        _, other = ca("Some Other CA")
        write(out, "other-ca.pem", pem(other))
        return
    if "--server" in args:
        name = args[args.index("--server") + 1]
        key, cert = server(*load_ca(out))
        write(out, name + ".pem", pem(cert))
        write(out, name + ".key", key_pem(key))
        return
    if "--client" in args:
        key, cert = server(*load_ca(out), usage=ExtendedKeyUsageOID.CLIENT_AUTH, name="client")
        write(out, "client.pem", pem(cert))
        write(out, "client.key", key_pem(key))
        return
    ca_key, ca_cert = ca("Tidemark Test CA")
    key, cert = server(ca_key, ca_cert)
    write(out, "ca.pem", pem(ca_cert))
    write(out, "ca.key", key_pem(ca_key))
    write(out, "server.pem", pem(cert))
    write(out, "server.key", key_pem(key))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
