"""Content Credentials (C2PA): signed manifests in the image files we write, and reading them back.

Every image file diffusers-repro writes carries a C2PA manifest signed with c2pa-python (the Content Authenticity
Initiative's bindings of c2pa-rs). The manifest holds:

- ``c2pa.actions``: one ``c2pa.created`` action with digitalSourceType ``trainedAlgorithmicMedia`` and the software
  agent (diffusers-repro and diffusers versions) - how C2PA marks an image as made by a generative model. An img2img
  or inpainting output is an edit instead: ``c2pa.opened`` of its input image (a ``parentOf`` ingredient, carrying
  the input's own manifest when it has one), then ``c2pa.edited`` with ``compositeWithTrainedAlgorithmicMedia``;
- ``org.diffusers-repro.provenance``: the whole provenance record, as the exact JSON text of the file's plain record;
- ``c2pa.soft-binding``: the image's ISCC Content-Code Image (``io.iscc.v0``, ISO 24138: a perceptual code anyone
  can recompute, see `diffusers_repro.fingerprint.iscc_image_code`), on C2PA's soft binding algorithm list.

Every assertion is a created assertion (attributed to the signer: C2PA 2.2 10.2.2), and the signature carries the
certificate chain below the root (`SigningIdentity.signature_chain_pem`). The manifest is bound to the file's bytes
(a hash of everything outside the manifest, plain-text record, infotext and XMP included), so a file whose pixels or
record changed after signing reads back as ``tampered``. Who signs and whom we trust: `diffusers_repro.identity`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .identity import SigningIdentity, TrustAnchor, trust_certificates
from .imagefile import DIGITAL_SOURCE_TYPE, EDITED_DIGITAL_SOURCE_TYPE, ImageFile, read_regular_file, sniff_bytes
from .signing import (
    ASSERTION_LABEL,
    ISCC_PREFIX,
    MIME_TYPES,
    SOFT_BINDING_ALG,
    CredentialsError,
    c2pa_context,
    digital_source_type,
    sign_image_bytes,
)

__all__ = [
    "ASSERTION_LABEL",
    "CREDENTIAL_STATES",
    "DIGITAL_SOURCE_TYPE",
    "EDITED_DIGITAL_SOURCE_TYPE",
    "SOFT_BINDING_ALG",
    "Credentials",
    "CredentialsError",
    "credentials_of_bytes",
    "digital_source_type",
    "file_credentials",
    "identity_anchors",
    "read_credentials",
    "signed_by",
    "sign_image_bytes",
]

CREDENTIAL_STATES = ("trusted", "valid", "unsigned", "tampered")
"""What `read_credentials` can say about a file, best first."""

# Failure codes that mean "the signer is not on the trust list", not "the file changed".
_TRUST_CODES = frozenset({"signingCredential.untrusted"})
_RECORD_MISMATCH = "diffusers-repro.record.mismatch"
_IPTC_CODES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
_REMOTE_URL = re.compile(r"remote manifests? from url (\S+)")


# ----------------------------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass
class Credentials:
    """What a file's Content Credentials say.

    Args:
        state (`str`): ``"trusted"`` (intact, signed by a trust anchor's chain), ``"valid"`` (intact, signer not
            on the trust list), ``"unsigned"`` (no manifest) or ``"tampered"`` (the file changed after signing, or
            the signature does not verify).
        signer (`str` or `None`): The signer certificate's common name.
        issuer (`str` or `None`): The certificate issuer's organization, as c2pa reports it.
        failures (`list[str]`): c2pa's failure codes (``assertion.dataHash.mismatch``, ...), trust aside.
        record_json (`str` or `None`): The provenance record the manifest vouches for.
        fingerprint (`str` or `None`): The ISCC code (``ISCC:...``) of the ``c2pa.soft-binding`` assertion.
        generator (`str` or `None`): The software agent of the ``c2pa.created`` action.
        remote_url (`str` or `None`): For an unsigned file whose metadata points to a manifest elsewhere, that URL
            (never fetched).
        anchor (`TrustAnchor` or `None`): For a trusted file, the root certificate that vouched for the signer:
            subject, SHA-256 fingerprint and file. A certificate's names are anyone's to choose; this is what
            validated.
        timestamp (`str` or `None`): The RFC 3161 time-stamp of the signature (ISO 8601), when it has one: a file
            time-stamped while its signer's certificate was valid stays valid after the certificate expires.
        action (`str` or `None`): What the manifest says was done, e.g. ``c2pa.created, trainedAlgorithmicMedia`` or
            ``c2pa.edited, compositeWithTrainedAlgorithmicMedia``.
        parent (`str` or `None`): For an edit, the ``parentOf`` ingredient's title, and whether it carries its own
            Content Credentials.
        xmp_source_type (`str` or `None`): The IPTC ``Iptc4xmpExt:DigitalSourceType`` of the file's XMP (set by
            `file_credentials`; inside the signed bytes of a file we signed, so an intact file vouches for it).
    """

    state: str
    signer: str | None = None
    issuer: str | None = None
    failures: list[str] = dataclasses.field(default_factory=list)
    record_json: str | None = dataclasses.field(default=None, repr=False)
    fingerprint: str | None = None
    generator: str | None = None
    remote_url: str | None = None
    anchor: TrustAnchor | None = None
    timestamp: str | None = None
    action: str | None = None
    parent: str | None = None
    xmp_source_type: str | None = None

    @property
    def intact(self) -> bool:
        """Signed and unchanged since signing (trusted or not)."""
        return self.state in ("trusted", "valid")

    @property
    def summary(self) -> str:
        """One line, e.g. ``trusted: signed by 'diffusers-repro local signer 1a2b3c4d', whose root ...``."""
        if self.state == "unsigned" and self.remote_url is not None:
            return (
                "unsigned (no Content Credentials in the file; it points to a remote manifest at "
                f"{self.remote_url!r}, which is never fetched)"
            )
        if self.state == "unsigned":
            return "unsigned (no Content Credentials)"
        if self.state == "tampered":
            codes = ", ".join(self.failures) or "the signature does not verify"
            return f"tampered: changed after it was signed ({codes}); signed by {self.signer!r}"
        if self.state == "trusted":
            vouched = f"the trusted root {self.anchor.describe()}" if self.anchor else "a root on the trust list"
            return f"trusted: signed by {self.signer!r}, vouched for by {vouched}"
        return (
            f"valid: the signer's certificate calls itself {self.signer!r} (issuer {self.issuer!r}), but no root on "
            "the trust list vouches for it, so that name is only its own claim (the file is unchanged since signing)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (without the record text)."""
        return {
            "state": self.state,
            "signer": self.signer,
            "issuer": self.issuer,
            "failures": list(self.failures),
            "fingerprint": self.fingerprint,
            "generator": self.generator,
            "remote_url": self.remote_url,
            "anchor": None if self.anchor is None else self.anchor.to_dict(),
            "timestamp": self.timestamp,
            "action": self.action,
            "parent": self.parent,
            "xmp_source_type": self.xmp_source_type,
        }

    @property
    def disclosure(self) -> str | None:
        """One line on the XMP AI disclosure, e.g. ``IPTC DigitalSourceType trainedAlgorithmicMedia (XMP)``."""
        if self.xmp_source_type is None:
            return None
        return f"IPTC DigitalSourceType {self.xmp_source_type.removeprefix(_IPTC_CODES)} (XMP)"


def _failure_codes(results: dict[str, Any] | None) -> list[str]:
    codes = []
    for entry in ((results or {}).get("activeManifest") or {}).get("failure") or []:
        code = entry.get("code") if isinstance(entry, dict) else None
        if isinstance(code, str) and code not in codes:
            codes.append(code)
    return codes


def _assertion(manifest: dict[str, Any], label: str) -> Any:
    for assertion in manifest.get("assertions") or []:
        if isinstance(assertion, dict) and assertion.get("label") == label:
            return assertion.get("data")
    return None


def _made(manifest: dict[str, Any]) -> tuple[str | None, str | None]:
    """The software agent and ``action, source type`` of the action that made the image (created or edited)."""
    # c2pa-rs writes the actions we give it as version 2 of the assertion.
    actions = _assertion(manifest, "c2pa.actions.v2") or _assertion(manifest, "c2pa.actions")
    for action in actions.get("actions") or [] if isinstance(actions, dict) else []:
        agent = action.get("softwareAgent") if isinstance(action, dict) else None
        if isinstance(agent, dict) and action.get("action") in ("c2pa.created", "c2pa.edited"):
            source = str(action.get("digitalSourceType") or "").removeprefix(_IPTC_CODES)
            return f"{agent.get('name')} {agent.get('version')}", f"{action.get('action')}, {source}"
    return None, None


def _iscc_of(binding: Any) -> str | None:
    """The ISCC code of an ``io.iscc.v0`` soft binding (its value bytes, which c2pa's JSON gives in base64)."""
    blocks = binding.get("blocks") if isinstance(binding, dict) and binding.get("alg") == SOFT_BINDING_ALG else None
    value = blocks[0].get("value") if isinstance(blocks, list) and blocks and isinstance(blocks[0], dict) else None
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) and len(value) <= 256 else None
    except (binascii.Error, ValueError):
        return None
    return ISCC_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=") if raw else None


def _parent(manifest: dict[str, Any]) -> str | None:
    for ingredient in manifest.get("ingredients") or []:
        if isinstance(ingredient, dict) and ingredient.get("relationship") == "parentOf":
            carries = "with its own Content Credentials" if ingredient.get("active_manifest") else "no credentials"
            return f"{ingredient.get('title')!r} ({carries})"
    return None


def read_credentials(
    path: str | os.PathLike,
    trust: Sequence[str | os.PathLike] = (),
) -> Credentials:
    """Reads and validates the Content Credentials of an image file with c2pa-python, offline.

    The file is read once through the reading edge (`diffusers_repro.imagefile.read_regular_file`: a regular file
    within the byte cap) and c2pa validates those bytes from memory. No remote manifest and no certificate status is
    fetched: a file that only points to a manifest elsewhere reads ``unsigned`` with that URL in ``remote_url``.

    Args:
        path (`str` or `os.PathLike`): A PNG, JPEG or WebP file.
        trust (`list` of paths, *optional*): PEM files of further trust anchors (besides this machine's CA and
            ``$DIFFUSERS_REPRO_HOME/trust/*.pem``).

    Returns:
        `Credentials`

    Raises:
        `CredentialsError`: when c2pa does not know the file's format or its manifest does not parse (the message
            names the file). `ImageProvenanceError`: when the file is not a regular file or is past the byte cap.

    Example:

    ```py
    >>> from diffusers_repro.credentials import read_credentials
    >>> read_credentials("outputs/00000-seed42.png").state  # doctest: +SKIP
    'trusted'
    ```
    """
    # The manifest alone is validated: the pixels need not decode (a damaged file can still say who signed it).
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        raise CredentialsError(f"image {str(path)!r}: no such file") from None
    return credentials_of_bytes(data, sniff_bytes(data), trust, where=path)


def credentials_of_bytes(
    data: bytes,
    format: str | None,
    trust: Sequence[str | os.PathLike] = (),
    where: Any = "the image",
    *,
    anchors: Sequence[TrustAnchor] | None = None,
) -> Credentials:
    """Validates the C2PA manifest embedded in ``data`` (an encoded PNG, JPEG or WebP), offline; see
    `read_credentials`. ``anchors``, when given, are the only trusted roots (instead of `trust_certificates`)."""
    anchors = list(trust_certificates(trust) if anchors is None else anchors)
    try:
        read = _validate(data, format, "".join(anchor.pem for anchor in anchors))
    except CredentialsError as error:
        message = str(error)
        remote = _REMOTE_URL.search(message)
        if remote is not None:
            return Credentials(state="unsigned", remote_url=remote.group(1))
        raise CredentialsError(f"{where}: its Content Credentials cannot be read: {message}") from None
    if read is None:
        return Credentials(state="unsigned")
    validation_state, results, manifest = read
    signature = manifest.get("signature_info") or {}
    record = _assertion(manifest, ASSERTION_LABEL)
    record_json = record.get("record") if isinstance(record, dict) else None
    fingerprint = _iscc_of(_assertion(manifest, "c2pa.soft-binding"))
    failures = [code for code in _failure_codes(results) if code not in _TRUST_CODES]
    generator, action = _made(manifest)
    if failures or validation_state == "Invalid":
        state = "tampered"
    elif validation_state == "Trusted":
        state = "trusted"
    else:
        state = "valid"
    return Credentials(
        state=state,
        signer=signature.get("common_name"),
        issuer=signature.get("issuer"),
        failures=failures,
        record_json=record_json if isinstance(record_json, str) else None,
        fingerprint=fingerprint,
        generator=generator,
        timestamp=signature.get("time") if isinstance(signature.get("time"), str) else None,
        action=action,
        parent=_parent(manifest),
        anchor=_vouching_anchor(data, format, anchors) if state == "trusted" else None,
    )


def _validate(data: bytes, format: str | None, trust_pem: str) -> tuple[str, Any, dict[str, Any]] | None:
    """c2pa's validation state, results and active manifest of ``data``, offline; `None` without a manifest."""
    import c2pa

    try:
        with c2pa_context(trust_pem) as context:
            reader = c2pa.Reader.try_create(MIME_TYPES.get(format), io.BytesIO(data), None, context)
            if reader is None:
                return None
            with reader:
                manifest = reader.get_active_manifest() or {}
                return reader.get_validation_state(), reader.get_validation_results(), manifest
    except (c2pa.C2paError, KeyError, ValueError) as error:
        # c2pa-python raises KeyError (no active manifest in a store it parsed) and ValueError (JSON) besides its own.
        raise CredentialsError(" ".join(str(error).split()) or type(error).__name__) from None


def _vouching_anchor(data: bytes, format: str | None, anchors: list[TrustAnchor]) -> TrustAnchor | None:
    """The trust anchor whose certificate alone makes the signature trusted: what validated, by key, whatever names
    the certificates carry."""
    if len(anchors) == 1:
        return anchors[0]
    for anchor in anchors:
        read = _validate(data, format, anchor.pem)
        if read is not None and read[0] == "Trusted":
            return anchor
    return None


def file_credentials(image_file: ImageFile, trust: Sequence[str | os.PathLike] = ()) -> Credentials:
    """The Content Credentials of a file read through the reading edge, validated over the very bytes its pixels
    and record were parsed from (``image_file.data``; the path is never opened again), plus a check that the record
    the manifest vouches for is the file's plain record (``diffusers-repro.record.mismatch`` otherwise).

    The result is kept on ``image_file`` per trust list: asking twice validates once.

    Example:

    ```py
    >>> from diffusers_repro.credentials import file_credentials
    >>> from diffusers_repro.files import read_image_file
    >>> file_credentials(read_image_file("outputs/00000-seed42.png")).state  # doctest: +SKIP
    'trusted'
    ```
    """
    key = tuple(os.fspath(anchor) for anchor in trust)
    cached = image_file.credentials_cache.get(key)
    if cached is not None:
        return dataclasses.replace(cached, failures=list(cached.failures))
    where = image_file.path if image_file.path is not None else "the image"
    credentials = credentials_of_bytes(image_file.data, image_file.format, trust, where)
    credentials = _with_record_check(credentials, image_file)
    credentials.xmp_source_type = image_file.digital_source_type
    image_file.credentials_cache[key] = credentials
    return dataclasses.replace(credentials, failures=list(credentials.failures))


def _with_record_check(credentials: Credentials, image_file: ImageFile) -> Credentials:
    """Marks intact credentials ``tampered`` when the record they vouch for is not the file's plain record."""
    from ..records import Provenance, ProvenanceError

    if credentials.intact and image_file.provenance is not None:
        try:
            same = (
                credentials.record_json is not None
                and Provenance.from_json(credentials.record_json, source=str(image_file.path)) == image_file.provenance
            )
        except ProvenanceError:
            same = False
        if not same:
            credentials.failures.append(_RECORD_MISMATCH)
            credentials.state = "tampered"
    return credentials


def signed_by(image_file: ImageFile, identity: SigningIdentity) -> bool:
    """Whether ``image_file`` is intact, its credentials vouch for its record, and they were signed under
    ``identity``'s own chain: its issuer certificates (and the CA beside its chain file) are the only trusted roots.

    What `diffusers_repro.distributed.generate` asks of an image already in its folder before it counts it as done.
    """
    anchors = identity_anchors(identity)
    if not anchors:  # a chain of one self-signed certificate: nothing but its name to go by
        credentials = file_credentials(image_file)
        return credentials.intact and credentials.signer == identity.signer
    credentials = credentials_of_bytes(image_file.data, image_file.format, where=image_file.path, anchors=anchors)
    return _with_record_check(credentials, image_file).state == "trusted"


def identity_anchors(identity: SigningIdentity) -> list[TrustAnchor]:
    """The roots that vouch for ``identity``'s signer: the issuers in its chain, and ``ca.pem`` beside the chain."""
    from cryptography import x509

    origin = identity.chain_path or Path("signer-chain.pem")
    anchors = [
        TrustAnchor.from_certificate(certificate, origin)
        for certificate in x509.load_pem_x509_certificates(identity.chain_pem)[1:]
    ]
    ca = identity.chain_path.parent / "ca.pem" if identity.chain_path is not None else None
    if ca is not None and ca.is_file():
        certificates = x509.load_pem_x509_certificates(ca.read_bytes())
        anchors.extend(TrustAnchor.from_certificate(certificate, ca) for certificate in certificates)
    return anchors
