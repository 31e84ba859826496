"""Signing Content Credentials (C2PA): the manifest every image file we write carries, and a trial signature.

The manifest holds:

- ``c2pa.actions``: one ``c2pa.created`` action with digitalSourceType ``trainedAlgorithmicMedia`` and the software
  agent (diffusers-repro and diffusers versions) - how C2PA marks an image as made by a generative model. An img2img
  or inpainting output is an edit instead: ``c2pa.opened`` of its input image (a ``parentOf`` ingredient, carrying
  the input's own manifest when it has one), then ``c2pa.edited`` with ``compositeWithTrainedAlgorithmicMedia``;
- ``org.diffusers-repro.provenance``: the whole provenance record, as the exact JSON text of the file's plain record;
- ``c2pa.soft-binding``: the image's ISCC Content-Code Image (``io.iscc.v0``, ISO 24138: a perceptual code anyone
  can recompute, see `diffusers_repro.files.fingerprints.iscc_image_code`), on C2PA's soft binding algorithm list.

Every assertion is a created assertion (attributed to the signer: C2PA 2.2 10.2.2), and the signature carries the
certificate chain below the root (`SigningIdentity.signature_chain_pem`). The manifest is bound to the file's bytes
(a hash of everything outside the manifest, plain-text record, infotext and XMP included), so a file whose pixels or
record changed after signing reads back as ``tampered``. Who signs: `diffusers_repro.files.identity`; reading
Content Credentials back: `diffusers_repro.files.credentials`.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

from .imagefile import DIGITAL_SOURCE_TYPE, EDITED_DIGITAL_SOURCE_TYPE, sniff_bytes

if TYPE_CHECKING:
    from .identity import SigningIdentity

__all__ = [
    "ASSERTION_LABEL",
    "ISCC_PREFIX",
    "MIME_TYPES",
    "SOFT_BINDING_ALG",
    "CredentialsError",
    "c2pa_context",
    "check_can_sign",
    "digital_source_type",
    "sign_image_bytes",
]


class CredentialsError(ValueError):
    """A certificate, key or manifest cannot be used: the message names the file and the problem."""


ASSERTION_LABEL = "org.diffusers-repro.provenance"
"""Label of the manifest assertion holding the provenance record."""

SOFT_BINDING_ALG = "io.iscc.v0"
"""Algorithm of the ``c2pa.soft-binding`` assertion: the ISCC Content-Code Image (ISO 24138), on the C2PA soft binding
algorithm list; see `diffusers_repro.files.fingerprints.iscc_image_code`."""

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
"""The media type c2pa is given for each image format."""

ISCC_PREFIX = "ISCC:"


def _software_agent() -> dict[str, str]:
    import importlib.metadata

    from ..version import __version__

    # The installed distribution's version, read without importing diffusers (keys show signs a trial file).
    diffusers_version = importlib.metadata.version("diffusers")
    return {"name": "diffusers-repro", "version": f"{__version__} (diffusers {diffusers_version})"}


def digital_source_type(provenance: Any) -> str:
    """The IPTC digital source type of the image a record describes: ``compositeWithTrainedAlgorithmicMedia`` when the
    call edited an input image (img2img, inpainting: the record's ``recipe.call.image``), else
    ``trainedAlgorithmicMedia`` (text-to-image, unconditional).

    Example:

    ```py
    >>> from diffusers_repro.credentials import digital_source_type
    >>> digital_source_type(out.provenance[0]).rsplit("/", 1)[-1]  # doctest: +SKIP
    'trainedAlgorithmicMedia'
    ```
    """
    return EDITED_DIGITAL_SOURCE_TYPE if provenance.call_arguments.get("image") is not None else DIGITAL_SOURCE_TYPE


_INGREDIENT_ID = "input"
# c2pa-rs files ingredient assertions under gathered_assertions unless its settings name them created.
_INGREDIENT_LABELS = ["c2pa.ingredient", "c2pa.ingredient.v2", "c2pa.ingredient.v3"]


def _actions(edited: bool) -> list[dict[str, Any]]:
    if not edited:
        agent = _software_agent()
        return [{"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent}]
    # C2PA: an edit opens its parentOf ingredient first; the AI edit itself is c2pa.edited with IPTC's source type.
    return [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": [_INGREDIENT_ID]}},
        {"action": "c2pa.edited", "digitalSourceType": EDITED_DIGITAL_SOURCE_TYPE, "softwareAgent": _software_agent()},
    ]


def _soft_binding(iscc_code: str) -> dict[str, Any]:
    """The ``c2pa.soft-binding`` assertion of an ISCC code: ``value`` is the code's bytes (header and body).

    The schema wants ``value`` and ``pad`` as CBOR byte strings. c2pa-python 0.38.1 takes assertions as JSON only and
    no JSON value becomes a byte string (c2pa-rs issue 2689): a list of byte values is written as a CBOR array of
    unsigned integers, which c2pa-rs' own reader reads back as bytes (base64 in its JSON). That is the closest the
    library can write; the bytes themselves are exactly the ISCC's.
    """
    if not isinstance(iscc_code, str) or not iscc_code.startswith(ISCC_PREFIX):
        raise ValueError(f"iscc_code must be an ISCC code string 'ISCC:...', got {iscc_code!r:.80}")
    value = base64.b32decode(iscc_code.removeprefix(ISCC_PREFIX) + "=" * (-len(iscc_code[5:]) % 8))
    return {"alg": SOFT_BINDING_ALG, "blocks": [{"scope": {}, "value": list(value)}], "pad": []}


def _manifest_definition(title: str, record_json: str, iscc_code: str | None, edited: bool = False) -> dict[str, Any]:
    from ..version import __version__

    assertions: list[dict[str, Any]] = [
        {"label": "c2pa.actions", "data": {"actions": _actions(edited)}},
        # The record as its exact JSON text: compared byte for byte with the file's plain record when read.
        {"label": ASSERTION_LABEL, "data": {"record": record_json}},
    ]
    if iscc_code is not None:
        assertions.append({"label": "c2pa.soft-binding", "data": _soft_binding(iscc_code)})
    # C2PA 2.2 10.2.2: what the claim generator states goes in the claim's created_assertions (attributed to the
    # signer); c2pa-python files an assertion there only when it is marked created, else under gathered_assertions.
    for assertion in assertions:
        assertion["created"] = True
    return {
        "claim_generator_info": [{"name": "diffusers-repro", "version": __version__}],
        "title": title,
        "assertions": assertions,
    }


def sign_image_bytes(
    data: bytes,
    format: str,
    identity: SigningIdentity,
    record_json: str,
    iscc_code: str | None = None,
    title: str = "image",
    ingredient: bytes | None = None,
    ingredient_title: str = "input image",
) -> bytes:
    """Returns ``data`` (an encoded PNG, JPEG or WebP) with a signed C2PA manifest embedded.

    Without ``ingredient`` the manifest says ``c2pa.created`` (``trainedAlgorithmicMedia``). With one (the input image
    of an img2img or inpainting call) it says ``c2pa.opened`` of that ``parentOf`` ingredient, then ``c2pa.edited``
    (``compositeWithTrainedAlgorithmicMedia``); an ingredient with its own C2PA manifest carries it along.

    Args:
        data (`bytes`): The encoded image, with its plain-text record already in it.
        format (`str`): ``"png"``, ``"jpeg"`` or ``"webp"``.
        identity (`SigningIdentity`): Who signs.
        record_json (`str`): The provenance record's JSON text (stored as the ``org.diffusers-repro.provenance``
            assertion).
        iscc_code (`str`, *optional*): The image's ISCC Content-Code Image (``ISCC:...``, see
            `diffusers_repro.fingerprint.iscc_image_code`), stored as the ``c2pa.soft-binding`` assertion
            (``io.iscc.v0``).
        title (`str`, *optional*): The manifest title (the file name).
        ingredient (`bytes`, *optional*): The encoded PNG, JPEG or WebP file the image was edited from.
        ingredient_title (`str`, *optional*): Its title in the manifest (its file name).

    Raises:
        `CredentialsError`: when c2pa refuses the certificate or key (the message names the chain file), or the
            identity's time-stamp authority fails or does not answer (c2pa-rs waits 30 s; nothing is written).
        `ValueError`: an ingredient that is not a PNG, JPEG or WebP file.

    Example:

    ```py
    >>> from diffusers_repro.credentials import default_identity, sign_image_bytes
    >>> signed = sign_image_bytes(png_bytes, "png", default_identity(), record.to_json())  # doctest: +SKIP
    ```
    """
    import c2pa

    mime = MIME_TYPES[format]
    ingredient_format = sniff_bytes(ingredient) if ingredient is not None else None
    if ingredient is not None and ingredient_format is None:
        raise ValueError(f"ingredient must be a PNG, JPEG or WebP file's bytes, got bytes starting {ingredient[:8]!r}")
    try:
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(identity.algorithm, identity.signature_chain_pem, identity.key_pem, identity.tsa_url)
        )
        destination = io.BytesIO()
        definition = _manifest_definition(title, record_json, iscc_code, edited=ingredient is not None)
        with c2pa_context() as context, c2pa.Builder(definition, context) as builder:
            if ingredient is not None:
                parent = {"title": ingredient_title, "relationship": "parentOf", "label": _INGREDIENT_ID}
                builder.add_ingredient(parent, MIME_TYPES[ingredient_format], io.BytesIO(ingredient))
            builder.sign(signer, mime, io.BytesIO(data), destination)
    except c2pa.C2paError as error:
        where = identity.chain_path if identity.chain_path is not None else "the signing identity"
        if identity.tsa_url is not None:
            where = f"{where} and the time-stamp authority {identity.tsa_url}"
        raise CredentialsError(f"cannot sign with {where}: {error}") from None
    return destination.getvalue()


# Reading a file never touches the network: c2pa-rs would otherwise fetch a remote manifest named in a file's XMP
# (a tracking pixel for whoever checks the file) and ask OCSP responders named in its certificates.
_OFFLINE = {"remote_manifest_fetch": False, "ocsp_fetch": False}


def c2pa_context(trust_pem: str | None = None) -> Any:
    """A c2pa context that never touches the network, trusting ``trust_pem`` (PEM roots) when given."""
    import c2pa

    # No thumbnail: it would double the file and the signing time, and the file is the picture.
    builder = {"thumbnail": {"enabled": False}, "created_assertion_labels": _INGREDIENT_LABELS}
    settings: dict[str, Any] = {"builder": builder, "verify": dict(_OFFLINE)}
    if trust_pem:
        settings["trust"] = {"user_anchors": trust_pem}
    return c2pa.Context(c2pa.Settings.from_dict(settings))


def check_can_sign(identity: SigningIdentity) -> None:
    """Signs a 1x1 PNG: c2pa's own checks of the chain (extensions, validity) and the time-stamp authority (when the
    identity names one) fail here, before any work.

    Raises:
        `CredentialsError`: naming the chain file (and the time-stamp authority).
    """
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.new("L", (1, 1)).save(buffer, format="PNG")
    sign_image_bytes(buffer.getvalue(), "png", identity, "{}")
