"""Images on disk: the one reading edge (bytes read once, parsed once into an `ImageFile`), PNG, JPEG and WebP files
that carry their record, the A1111 infotext, Content Credentials and the identity that signs them, perceptual
fingerprints.

Modules:

- ``imagefile``: the one reading edge: `ImageFile`, `read_image_file`, `read_provenance`, `read_pixels`.
- ``save``: `save_image`: PNG, JPEG and WebP files with their record, written atomically.
- ``lossy``: JPEG and WebP: the record in XMP, the infotext in EXIF ``UserComment``.
- ``infotext``: the A1111 infotext other Stable Diffusion tools read.
- ``credentials``: Content Credentials (C2PA) read back from anyone's file: trusted, valid, unsigned or tampered.
- ``signing``: the C2PA manifest of the files we write, signed; a trial signature.
- ``identity``: the signing identity and the trust anchors.
- ``fingerprints``: perceptual fingerprints and the ISCC image code: find the file a copy came from.
"""

import typing as _typing

from ..lazy import lazy_exports

# public name -> the module of this subpackage that defines it (imported on first use)
EXPORTS = {
    "INFOTEXT_PAIR": "infotext",
    "MAX_PARAMETERS_LINE": "infotext",
    "Credentials": "credentials",
    "file_credentials": "credentials",
    "read_credentials": "credentials",
    "signed_by": "credentials",
    "fingerprint": "fingerprints",
    "MATCH_THRESHOLD": "fingerprints",
    "similarity": "fingerprints",
    "default_identity": "identity",
    "IDENTITY_DIR": "identity",
    "identity_home": "identity",
    "init_identity": "identity",
    "SigningIdentity": "identity",
    "trust_anchors": "identity",
    "ImageFile": "imagefile",
    "ImageProvenanceError": "imagefile",
    "MAX_FILE_BYTES": "imagefile",
    "parse_image_bytes": "imagefile",
    "PROVENANCE_KEY": "imagefile",
    "read_image": "imagefile",
    "read_image_file": "imagefile",
    "read_pixels": "imagefile",
    "read_provenance": "imagefile",
    "read_regular_file": "imagefile",
    "parse_infotext": "infotext",
    "reencoded_pixels": "lossy",
    "check_save_options": "save",
    "image_suffix": "save",
    "save_image": "save",
    "save_outputs": "save",
    "to_pil_image": "save",
    "write_atomically": "save",
    "check_can_sign": "signing",
    "CredentialsError": "signing",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .credentials import Credentials, file_credentials, read_credentials, signed_by  # noqa: F401
    from .fingerprints import MATCH_THRESHOLD, fingerprint, similarity  # noqa: F401
    from .identity import IDENTITY_DIR, SigningIdentity, default_identity, identity_home, init_identity, trust_anchors  # noqa: F401
    from .imagefile import (  # noqa: F401
        MAX_FILE_BYTES,
        PROVENANCE_KEY,
        ImageFile,
        ImageProvenanceError,
        parse_image_bytes,
        read_image,
        read_image_file,
        read_pixels,
        read_provenance,
        read_regular_file,
    )
    from .infotext import parse_infotext  # noqa: F401
    from .lossy import reencoded_pixels  # noqa: F401
    from .save import check_save_options, image_suffix, save_image, save_outputs, to_pil_image, write_atomically  # noqa: F401
    from .signing import CredentialsError, check_can_sign  # noqa: F401
