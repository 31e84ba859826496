"""The signing identity of Content Credentials: who signs the files we write, and whom we trust.

The identity lives under ``$DIFFUSERS_REPRO_HOME`` (default: the platform's user config folder for diffusers-repro):
``identity/`` holds a local CA certificate (``ca.pem``), a signer certificate issued by it with the extensions c2pa-rs
requires, followed by the CA (``signer-chain.pem``), and the signer's private key (``signer-key.pem``, mode 0600).
The CA's own key is thrown away once the signer certificate is issued. It is made on first use (with a one-line
notice) or by ``diffusers-repro keys init``; the certificates name a random id, never the user or the host. A user
with a real certificate chain passes it instead (`SigningIdentity.from_files`, ``--cert``/``--key``). A signature
carries the chain below the root (`SigningIdentity.signature_chain_pem`): the root is the trust anchor a reader holds
(``ca.pem``, ``--trust``), never shipped in a file.

Trust anchors: this machine's ``ca.pem``, every ``*.pem`` under ``$DIFFUSERS_REPRO_HOME/trust/``, and the files a
reader is given (``--trust``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .signing import CredentialsError, check_can_sign

__all__ = [
    "HOME_ENV",
    "SETTINGS_FILE",
    "SigningIdentity",
    "configured_tsa_url",
    "default_identity",
    "identity_home",
    "init_identity",
    "trust_anchors",
    "TrustAnchor",
    "trust_bundle",
    "trust_certificates",
]

logger = logging.getLogger("diffusers_repro")

HOME_ENV = "DIFFUSERS_REPRO_HOME"
"""Environment variable naming the folder of the signing identity and extra trust anchors."""

IDENTITY_DIR = "identity"
_TRUST_DIR = "trust"
_CA_FILE = "ca.pem"
_CHAIN_FILE = "signer-chain.pem"
_KEY_FILE = "signer-key.pem"
_lock = threading.Lock()
_identity_cache: dict[tuple[str, int], SigningIdentity] = {}


# ----------------------------------------------------------------------------------------------------------------
# Identity


def identity_home() -> Path:
    """The folder of the signing identity and trust anchors: ``$DIFFUSERS_REPRO_HOME``, else the platform's user
    config folder for diffusers-repro (``~/.config/diffusers-repro`` on Linux).

    Example:

    ```py
    >>> import os
    >>> from diffusers_repro.credentials import identity_home
    >>> os.environ["DIFFUSERS_REPRO_HOME"] = "/tmp/repro-home"
    >>> str(identity_home())
    '/tmp/repro-home'
    ```
    """
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("diffusers-repro", appauthor=False))


def _signing_algorithm(key: Any, path: Path) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithms = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in algorithms:
            return algorithms[key.curve.name]
        raise CredentialsError(f"{path}: EC key on curve {key.curve.name}; C2PA signs with P-256, P-384 or P-521")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise CredentialsError(f"{path}: a {type(key).__name__}; expected an EC (P-256/384/521), Ed25519 or RSA key")


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CredentialsError(f"{what} {str(path)!r}: no such file") from None
    except OSError as error:
        raise CredentialsError(f"{what} {str(path)!r}: cannot read it: {error.strerror or error}") from None


@dataclasses.dataclass(frozen=True)
class SigningIdentity:
    """Who signs the Content Credentials of the files we write: a PEM certificate chain and its private key.

    Args:
        chain_pem (`bytes`): The signer certificate first, then its issuers (PEM).
        key_pem (`bytes`): The signer's private key (PEM, unencrypted).
        algorithm (`str`): The C2PA signing algorithm, from the key type (``es256`` for P-256).
        signer (`str`): The signer certificate's subject common name (or whole subject).
        issuer (`str`): The issuing certificate's subject common name.
        chain_path (`pathlib.Path` or `None`), key_path (`pathlib.Path` or `None`): Where they were read from.
        tsa_url (`str` or `None`): An RFC 3161 time-stamp authority that time-stamps every signature, so a file stays
            valid after the signer's certificate expires (`with_tsa`; ``--tsa``; ``tsa_url`` in
            ``$DIFFUSERS_REPRO_HOME/settings.json`` for this machine's identity).
    """

    chain_pem: bytes = dataclasses.field(repr=False)
    key_pem: bytes = dataclasses.field(repr=False)
    algorithm: str
    signer: str
    issuer: str
    chain_path: Path | None = None
    key_path: Path | None = None
    tsa_url: str | None = None

    @classmethod
    def from_files(
        cls, chain: str | os.PathLike, key: str | os.PathLike, tsa_url: str | None = None
    ) -> SigningIdentity:
        """Reads a certificate chain and its private key, checking that they parse and belong together.

        Args:
            chain (`str` or `os.PathLike`): PEM file with the signer certificate first, then its issuers.
            key (`str` or `os.PathLike`): PEM file with the signer's unencrypted private key.
            tsa_url (`str`, *optional*): An RFC 3161 time-stamp authority (``http://`` or ``https://``) that
                time-stamps each signature.

        Raises:
            `CredentialsError` (a `ValueError`): a missing or unreadable file, no certificate, a key that does not
                parse, is encrypted or does not match the certificate, a time-stamp authority that fails (the trial
                signature asks it). The message names the file.

        Example:

        ```py
        >>> from diffusers_repro.credentials import SigningIdentity
        >>> identity = SigningIdentity.from_files("chain.pem", "key.pem")  # doctest: +SKIP
        >>> identity.signer  # doctest: +SKIP
        'Example Corp image signer'
        ```
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        chain_path, key_path = Path(chain), Path(key)
        chain_pem = read_file(chain_path, "certificate chain")
        key_pem = read_file(key_path, "private key")
        try:
            certificates = x509.load_pem_x509_certificates(chain_pem)
        except ValueError:
            raise CredentialsError(
                f"certificate chain {str(chain_path)!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ) from None
        try:
            private_key = serialization.load_pem_private_key(key_pem, password=None)
        except TypeError:
            raise CredentialsError(
                f"private key {str(key_path)!r} is encrypted; give an unencrypted PEM key"
            ) from None
        except ValueError:
            raise CredentialsError(f"private key {str(key_path)!r} is not a PEM private key") from None
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if private_key.public_key().public_bytes(serialization.Encoding.DER, public) != certificates[
            0
        ].public_key().public_bytes(serialization.Encoding.DER, public):
            raise CredentialsError(
                f"private key {str(key_path)!r} does not belong to the first certificate of {str(chain_path)!r}"
            )
        algorithm = _signing_algorithm(private_key, key_path)
        identity = cls(
            chain_pem=chain_pem,
            key_pem=key_pem,
            algorithm=algorithm,
            signer=_common_name(certificates[0].subject),
            # The name the signer's certificate gives its issuer: right whether or not the chain holds the issuer.
            issuer=_common_name(certificates[0].issuer),
            chain_path=chain_path,
            key_path=key_path,
            tsa_url=_checked_tsa_url(tsa_url),
        )
        check_can_sign(identity)
        return identity

    def with_tsa(self, tsa_url: str | None) -> SigningIdentity:
        """This identity with every signature time-stamped by ``tsa_url`` (`None`: no time-stamp).

        Example:

        ```py
        >>> from diffusers_repro.credentials import default_identity
        >>> default_identity().with_tsa("http://timestamp.example/tsa").tsa_url  # doctest: +SKIP
        'http://timestamp.example/tsa'
        ```
        """
        return dataclasses.replace(self, tsa_url=_checked_tsa_url(tsa_url))

    @property
    def signature_chain_pem(self) -> bytes:
        """The certificates a signature carries: the chain without the self-signed root(s) at its end.

        C2PA (like X.509 practice) says the chain in a signature ends below the root: the root is the trust anchor a
        reader holds (``ca.pem``, ``--trust``), and a root shipped inside the file vouches for nothing. A chain of one
        self-signed certificate is kept as it is (c2pa refuses it as a signer anyway).

        Example:

        ```py
        >>> from diffusers_repro.credentials import default_identity
        >>> default_identity().signature_chain_pem.count(b"BEGIN CERTIFICATE")  # doctest: +SKIP
        1
        ```
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certificates = x509.load_pem_x509_certificates(self.chain_pem)
        while len(certificates) > 1 and _is_self_signed(certificates[-1]):
            certificates.pop()
        return b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates)

    def describe(self) -> str:
        """One line: who signs, issued by whom, from which files."""
        where = f" ({self.chain_path})" if self.chain_path is not None else ""
        return f"{self.signer!r}, issued by {self.issuer!r}, {self.algorithm.upper()}{where}"


def _checked_tsa_url(tsa_url: Any) -> str | None:
    if tsa_url is None:
        return None
    if not isinstance(tsa_url, str) or not tsa_url.startswith(("http://", "https://")) or tsa_url != tsa_url.strip():
        raise CredentialsError(
            f"tsa_url must be the http:// or https:// URL of an RFC 3161 time-stamp authority, got {tsa_url!r:.200}"
        )
    return tsa_url


SETTINGS_FILE = "settings.json"
"""File under ``$DIFFUSERS_REPRO_HOME`` with settings of this machine's identity: ``{"tsa_url": "http://..."}``."""


def configured_tsa_url() -> str | None:
    """The ``tsa_url`` of ``$DIFFUSERS_REPRO_HOME/settings.json``, `None` without one.

    Raises:
        `CredentialsError`: a settings file that is not a JSON object, or a ``tsa_url`` that is not an http(s) URL.
    """
    import json

    path = identity_home() / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(read_file(path, "settings file"))
    except ValueError:
        raise CredentialsError(f"settings file {str(path)!r} is not JSON") from None
    if not isinstance(settings, dict):
        raise CredentialsError(f'settings file {str(path)!r} must hold a JSON object, like {{"tsa_url": "..."}}')
    try:
        return _checked_tsa_url(settings.get("tsa_url"))
    except CredentialsError as error:
        raise CredentialsError(f"{path}: {error}") from None


def _is_self_signed(certificate: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _common_name(name: Any) -> str:
    from cryptography.x509.oid import NameOID

    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()


def _make_identity_files(folder: Path) -> None:
    """A local CA (kept: its certificate, not its key) and an ES256 signer certificate issued by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    # A random id names this machine's identity without putting user or host names into every image.
    tag = secrets.token_hex(4)

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diffusers-repro local identity"),
            ]
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    no_usage = dict.fromkeys(
        (
            "digital_signature",
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
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"diffusers-repro local CA {tag}"))
        .issuer_name(name(f"diffusers-repro local CA {tag}"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**{**no_usage, "key_cert_sign": True, "crl_sign": True}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    # c2pa-rs requires of a signer: not a CA, digitalSignature usage, an allowed extended key usage.
    signer = (
        x509.CertificateBuilder()
        .subject_name(name(f"diffusers-repro local signer {tag}"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**{**no_usage, "digital_signature": True}), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / _CA_FILE).write_bytes(ca.public_bytes(pem))
    (folder / _CHAIN_FILE).write_bytes(signer.public_bytes(pem) + ca.public_bytes(pem))
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(folder / _KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
        handle.flush()
        os.fsync(handle.fileno())


def init_identity(home: str | os.PathLike | None = None, *, force: bool = False) -> tuple[SigningIdentity, bool]:
    """Makes the local signing identity under ``home`` (default `identity_home`) unless one exists.

    Safe when many processes start at once (the processes of one ``torchrun`` run): each builds its files in a
    private folder and renames it into place; the rename succeeds for one of them, the others use its identity.

    Args:
        home (`str` or `os.PathLike`, *optional*): Defaults to `identity_home()`.
        force (`bool`, *optional*, defaults to `False`): Replace an existing identity (the old folder is kept as
            ``identity.old-<time>``, so files it signed can still be trusted by adding its ``ca.pem`` to ``trust/``).

    Returns:
        `tuple[SigningIdentity, bool]`: the identity and whether this call made it.

    Example:

    ```py
    >>> from diffusers_repro.credentials import init_identity
    >>> identity, made = init_identity("/tmp/repro-home")
    >>> identity.algorithm
    'es256'
    ```
    """
    home = Path(home) if home is not None else identity_home()
    target = home / IDENTITY_DIR
    if target.is_dir() and not force:
        return _load_identity_folder(target), False
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{IDENTITY_DIR}-{secrets.token_hex(6)}.tmp"
    staging.mkdir(mode=0o700)
    try:
        _make_identity_files(staging)
        if force and target.is_dir():
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            os.replace(target, home / f"{IDENTITY_DIR}.old-{stamp}")
        try:
            os.rename(staging, target)
            made = True
        except OSError:
            # Another process renamed its identity into place first: use that one.
            if not target.is_dir():
                raise
            made = False
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _load_identity_folder(target), made


def _load_identity_folder(folder: Path) -> SigningIdentity:
    chain, key = folder / _CHAIN_FILE, folder / _KEY_FILE
    stamp = (str(folder.resolve()), chain.stat().st_mtime_ns if chain.exists() else 0)
    with _lock:
        cached = _identity_cache.get(stamp)
    if cached is not None:
        return cached
    identity = SigningIdentity.from_files(chain, key)
    with _lock:
        _identity_cache[stamp] = identity
    return identity


def default_identity() -> SigningIdentity:
    """This machine's signing identity, made (with a one-line notice on the ``diffusers_repro`` logger) when there is
    none yet.

    Example:

    ```py
    >>> from diffusers_repro.credentials import default_identity
    >>> default_identity().algorithm
    'es256'
    ```
    """
    identity, made = init_identity()
    if made:
        logger.warning(
            "made a signing identity for Content Credentials in %s (signer %r); see `diffusers-repro keys show`",
            identity_home() / IDENTITY_DIR,
            identity.signer,
        )
    tsa_url = configured_tsa_url()
    return identity.with_tsa(tsa_url) if tsa_url is not None else identity


def trust_anchors(extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The PEM files whose certificates count as trusted: this machine's CA, ``$DIFFUSERS_REPRO_HOME/trust/*.pem``
    and ``extra``.

    Example:

    ```py
    >>> from diffusers_repro.credentials import trust_anchors
    >>> [path.name for path in trust_anchors()]  # doctest: +SKIP
    ['ca.pem']
    ```
    """
    home = identity_home()
    files = []
    own = home / IDENTITY_DIR / _CA_FILE
    if own.is_file():
        files.append(own)
    trust_dir = home / _TRUST_DIR
    if trust_dir.is_dir():
        files.extend(sorted(path for path in trust_dir.glob("*.pem") if path.is_file()))
    files.extend(Path(path) for path in extra)
    return files


@dataclasses.dataclass(frozen=True)
class TrustAnchor:
    """One trusted root certificate: its PEM text, subject, SHA-256 fingerprint and the file it came from."""

    pem: str = dataclasses.field(repr=False)
    subject: str
    fingerprint: str
    path: Path

    def describe(self) -> str:
        """``'<subject>' (sha256 1a2b3c4d5e6f7a8b, <file name>)``: who vouches, by name and by key."""
        return f"{self.subject!r} (sha256 {self.fingerprint.removeprefix('sha256:')[:16]}, {self.path.name})"

    def to_dict(self) -> dict[str, str]:
        """A JSON-serializable dict (without the PEM text)."""
        return {"subject": self.subject, "fingerprint": self.fingerprint, "file": str(self.path)}

    @classmethod
    def from_certificate(cls, certificate: Any, path: Path) -> TrustAnchor:
        """The anchor of a `cryptography` certificate read from ``path``."""
        from cryptography.hazmat.primitives import hashes, serialization

        return cls(
            pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            subject=_common_name(certificate.subject),
            fingerprint="sha256:" + certificate.fingerprint(hashes.SHA256()).hex(),
            path=path,
        )


def trust_certificates(extra: Sequence[str | os.PathLike] = ()) -> list[TrustAnchor]:
    """Every certificate of the trust anchors (`trust_anchors`), in order.

    Raises:
        `CredentialsError`: a trust anchor file that is missing, unreadable or holds no PEM certificate.
    """
    from cryptography import x509

    anchors = []
    for path in trust_anchors(extra):
        data = read_file(path, "trust anchor")
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise CredentialsError(f"trust anchor {str(path)!r} holds no PEM certificate") from None
        anchors.extend(TrustAnchor.from_certificate(certificate, path) for certificate in certificates)
    return anchors


def trust_bundle(extra: Sequence[str | os.PathLike]) -> str:
    """The trust anchors' certificates as one PEM bundle (see `trust_certificates`)."""
    return "".join(anchor.pem for anchor in trust_certificates(extra))
