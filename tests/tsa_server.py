"""A minimal RFC 3161 time-stamp authority on 127.0.0.1 for the tests: no remote service is ever asked.

Built from the RFC with asn1crypto (the ASN.1 structures) and cryptography (the keys): a ``TimeStampReq`` is answered
with a granted ``TimeStampResp`` whose token is a CMS ``SignedData`` over a ``TSTInfo`` (the request's message
imprint and nonce, the current time), signed by a time-stamping certificate issued by the test's CA.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import itertools
import threading
from typing import Any

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NO_USAGE = dict.fromkeys(
    (
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ),
    False,
)


def certificate(
    subject: str,
    key: Any,
    issuer: tuple[Any, Any] | None = None,
    *,
    ca: bool = False,
    usage: Any = None,
    lifetime: datetime.timedelta = datetime.timedelta(days=30),
) -> x509.Certificate:
    """A certificate for ``key``: self-signed (``issuer=None``) or issued by ``(issuer_certificate, issuer_key)``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, subject), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tests")]
    )
    issuer_certificate, issuer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_certificate.subject if issuer_certificate is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=not ca, **{**_NO_USAGE, "key_cert_sign": ca, "crl_sign": ca}),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usage is not None:
        # RFC 3161: a time-stamping certificate's extended key usage is critical.
        critical = usage == ExtendedKeyUsageOID.TIME_STAMPING
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=critical)
    if issuer_certificate is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _response(body: bytes, tsa_certificate: x509.Certificate, tsa_key: Any, serial: int) -> bytes:
    request = tsp.TimeStampReq.load(body)
    info = {
        "version": "v1",
        "policy": "1.2.3.4.1",
        "message_imprint": request["message_imprint"],
        "serial_number": serial,
        "gen_time": datetime.datetime.now(datetime.timezone.utc),
    }
    if request["nonce"].native is not None:
        info["nonce"] = request["nonce"].native
    tst_info = tsp.TSTInfo(info)
    der = tsa_certificate.public_bytes(serialization.Encoding.DER)
    attributes = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "message_digest", "values": [hashlib.sha256(tst_info.dump()).digest()]},
            {"type": "signing_certificate_v2", "values": [{"certs": [{"cert_hash": hashlib.sha256(der).digest()}]}]},
        ]
    )
    certificate_asn1 = asn1_x509.Certificate.load(der)
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": certificate_asn1.issuer,
                        "serial_number": certificate_asn1.serial_number,
                    }
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attributes,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            # RFC 5652: the signature covers the DER of the attributes as a SET, not as the [0]-tagged field.
            "signature": tsa_key.sign(attributes.dump(), ec.ECDSA(hashes.SHA256())),
        }
    )
    signed = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "tst_info", "content": tst_info},
            "certificates": [certificate_asn1],
            "signer_infos": [signer],
        }
    )
    token = cms.ContentInfo({"content_type": "signed_data", "content": signed})
    return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()


def serve_tsa(ca_certificate: x509.Certificate, ca_key: Any) -> tuple[http.server.HTTPServer, str, list[str]]:
    """Starts a TSA with a time-stamping certificate issued by the CA; returns the server, its URL and its requests."""
    key = ec.generate_private_key(ec.SECP256R1())
    tsa_certificate = certificate("test TSA", key, (ca_certificate, ca_key), usage=ExtendedKeyUsageOID.TIME_STAMPING)
    serials, requests = itertools.count(1), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests.append(self.path)
            data = _response(body, tsa_certificate, key, next(serials))
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/tsa", requests
