"""The record of an image: `Provenance`, its schema (the one parser of records from outside) and the links between the
records of one batch.

Modules:

- ``provenance``: `Provenance`: one self-contained record per image, digests of tensors, weights and the environment.
- ``schema``: the record schema: every field replay uses, with its type, range and allowed keys.
- ``batch``: a batch's records linked by digests when they are written.
"""

import typing as _typing

from ..lazy import lazy_exports

# public name -> the module of this subpackage that defines it (imported on first use)
EXPORTS = {
    "batch_id": "batch",
    "link_batch_records": "batch",
    "environment_fingerprint": "provenance",
    "file_digest": "provenance",
    "image_digest": "provenance",
    "jsonable": "provenance",
    "named_tensors_digest": "provenance",
    "Provenance": "provenance",
    "state_dict_digest": "provenance",
    "tensor_digest": "provenance",
    "check_record": "schema",
    "ProvenanceError": "schema",
    "record_digest": "schema",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .batch import batch_id, link_batch_records  # noqa: F401
    from .provenance import (  # noqa: F401
        Provenance,
        environment_fingerprint,
        file_digest,
        image_digest,
        jsonable,
        named_tensors_digest,
        state_dict_digest,
        tensor_digest,
    )
    from .schema import ProvenanceError, check_record, record_digest  # noqa: F401
