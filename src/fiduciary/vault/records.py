"""Turning validated field values into stored rows and back: the crypto boundary of a record."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fiduciary.clock import iso
from fiduciary.crypto.aead import DecryptionError, FieldCipher
from fiduciary.crypto.blind_index import BlindIndexer
from fiduciary.datamap import CollectionSpec
from fiduciary.datamap.values import index_form
from fiduciary.errors import FieldProblem, IntegrityFailure

integrity_log = logging.getLogger("fiduciary.integrity")


@dataclass
class Record:
    """A record as a caller sees it: decrypted fields permitted for the purpose."""

    id: str
    subject_id: str
    collection: str
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    withheld: list[FieldProblem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject_id": self.subject_id,
            "collection": self.collection,
            "data": self.data,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "withheld": [w.as_dict() for w in self.withheld],
        }



#: The one JSON encoding of stored values. ``json.dumps`` with these arguments builds exactly
#: this encoder on every call; reusing one instance gives the same text without that cost.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode = _ENCODER.encode


def _dumps(obj: dict[str, Any]) -> str:
    return _encode(obj)


def _sealed_plaintext(value: Any) -> bytes:
    """``_dumps({"v": value}).encode()``, without building the one-key dict."""
    return ('{"v":' + _encode(value) + "}").encode()


class RecordCodec:
    """Seals the sensitive fields of a record and computes its blind-index digests."""

    def __init__(self, indexer: BlindIndexer) -> None:
        self._indexer = indexer

    def seal(
        self, spec: CollectionSpec, record_id: str, cipher: FieldCipher,
        values: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Split canonical values into the clear part and the sealed part (base64 ciphertext)."""
        clear: dict[str, Any] = {}
        to_seal: list[tuple[str, bytes]] = []
        fields = spec.fields
        for name, value in values.items():
            if fields[name].encrypted:
                to_seal.append((name, _sealed_plaintext(value)))
            else:
                clear[name] = value
        blobs = cipher.encrypt_many(spec.name, record_id, to_seal)
        # b2a_base64 without a newline is what base64.b64encode returns.
        sealed = {name: binascii.b2a_base64(blob, newline=False).decode("ascii")
                  for (name, _), blob in zip(to_seal, blobs, strict=True)}
        return clear, sealed

    def index_rows(
        self, spec: CollectionSpec, record_id: str, subject_id: str, values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            {"record_id": record_id, "field": name, "collection": spec.name,
             "subject_id": subject_id, "digest": self.digest(spec, name, value)}
            for name, value in values.items()
            if spec.fields[name].searchable
        ]

    def digest(self, spec: CollectionSpec, field_name: str, canonical: Any) -> bytes:
        return self._indexer.digest(spec.name, field_name,
                                    index_form(spec.fields[field_name], canonical))

    def open(
        self, spec: CollectionSpec, record_id: str, cipher: FieldCipher, sealed: dict[str, str],
        wanted: set[str],
    ) -> dict[str, Any]:
        """Decrypt only the ``wanted`` fields; any failure is an integrity failure of the record."""
        out: dict[str, Any] = {}
        bad: list[str] = []
        for name, b64 in sealed.items():
            if name not in wanted:
                continue
            try:
                plain = cipher.decrypt(spec.name, record_id, name, base64.b64decode(b64))
                out[name] = json.loads(plain)["v"]
            except (DecryptionError, ValueError, KeyError, TypeError):
                bad.append(name)
        if bad:
            integrity_log.error(
                "integrity failure: collection=%s record=%s subject=%s fields=%s: ciphertext "
                "does not authenticate (altered, or copied from another record or field)",
                spec.name, record_id, cipher.subject_id, ",".join(sorted(bad)))
            raise IntegrityFailure(
                f"record {record_id} failed its integrity check in field(s) "
                f"{', '.join(sorted(bad))}; the event was logged",
                [FieldProblem(n, "stored ciphertext failed its integrity check")
                 for n in sorted(bad)],
            )
        return out
