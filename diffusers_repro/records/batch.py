"""A batch's records, linked by digests when they are written.

An image of a normal batch reproduces bitwise only within its whole batch, but its record never carries another
image's prompt. Instead every record of a batch of more than one names the batch: ``recipe.batch.record_digests``
(the `record_digest` of every record of the batch, in image order) and ``recipe.batch.id`` (the sha256 of those
digests, so the id itself vouches for the list). `diffusers_repro.verify.siblings` gathers them again for a replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .provenance import Provenance, jsonable
from .schema import record_digest

__all__ = ["batch_id", "link_batch_records", "record_digest_of"]


def record_digest_of(record: Provenance) -> str:
    """The `diffusers_repro.schema.record_digest` of a record."""
    # jsonable builds new dicts and lists all the way down: the record's own parts need no deep copy first.
    return record_digest(jsonable(record._as_dict(lambda part: part)))


def batch_id(digests: Sequence[str]) -> str:
    """The id of a batch: sha256 of its records' digests, one per line, in image order."""
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


def link_batch_records(records: Sequence[Provenance]) -> None:
    """Writes ``id`` and ``record_digests`` into the batch context of every record of one call, in place."""
    for record in records:
        record.recipe["batch"]["id"] = None
    digests = [record_digest_of(record) for record in records]
    identifier = batch_id(digests)
    for record in records:
        record.recipe["batch"]["id"] = identifier
        record.recipe["batch"]["record_digests"] = list(digests)
