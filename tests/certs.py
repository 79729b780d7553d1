"""TLS certificates for the tests, made with the `cryptography` package (a dev dependency, and esptool's) as the
tests once made them with the openssl command: so `make test` needs no openssl on the machine.

`cert(d, "server", sans=["localhost", "127.0.0.1"])` writes d/server.pem and d/server-key.pem: an EC P-256 key
(PKCS#8 PEM, unencrypted, like `openssl req -nodes`) and a certificate valid for two days, self-signed or signed
by the key of an earlier `cert(d, issuer, ...)`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _general_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)


def cert(d: Path, name: str, *, cn: str | None = None, sans: Sequence[str] = (), issuer: str | None = None,
         ca: bool | None = True, ca_key_usage: bool = False, server_client: bool = False) -> Path:
    """Write d/NAME.pem and d/NAME-key.pem; return the certificate's path.

    issuer: sign with d/ISSUER-key.pem (and name d/ISSUER.pem as the issuer) instead of self-signing.
    ca: basicConstraints CA:TRUE (critical, as `openssl req -x509` writes it), CA:FALSE, or None for none.
    ca_key_usage: keyUsage keyCertSign, cRLSign (critical). server_client: extendedKeyUsage serverAuth, clientAuth.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or name)])
    if issuer is None:
        issuer_name, signer, issuer_pub = subject, key, key.public_key()
    else:
        issuer_cert = x509.load_pem_x509_certificate((d / f"{issuer}.pem").read_bytes())
        loaded = serialization.load_pem_private_key((d / f"{issuer}-key.pem").read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        issuer_name, signer, issuer_pub = issuer_cert.subject, loaded, loaded.public_key()
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=ca)
    if ca_key_usage:
        b = b.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    if server_client:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False)
    (d / f"{name}-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    path = d / f"{name}.pem"
    path.write_bytes(b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path
