"""Turning validated field values into stored rows and back: the crypto boundary of a record."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fiduciary.clock import iso
from fiduciary.crypto.aead import DecryptionError, FieldCipher, associated_data
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
    #: Fields returned masked (partial, token, redact) rather than in clear.
    masked: list[str] = field(default_factory=list)

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
#: ``json.loads`` of a str without its per-call checks (a sealed plaintext is UTF-8 JSON).
_decode = json.JSONDecoder().decode


def _dumps(obj: dict[str, Any]) -> str:
    return _encode(obj)


def _sealed_plaintext(value: Any) -> bytes:
    """``_dumps({"v": value}).encode()``, without building the one-key dict."""
    return ('{"v":' + _encode(value) + "}").encode()


#: Domain of the row digest (:meth:`RecordCodec.row_digest`).
_ROW_LABEL = b"fiduciary-row/1"
#: Bytes of HMAC-SHA256 kept in a row digest (as for blind indexes: 128 bits).
ROW_DIGEST_BYTES = 16


class RecordCodec:
    """Seals the sensitive fields of a record, computes its blind-index digests and the keyed
    digest of its stored row that write events carry (:meth:`row_digest`).

    Every field sealed by a write carries the record's write ``version`` in its associated data
    (1 on create, +1 on each update; the row stores it): a field copied back from an earlier
    write of the record fails to open. Version 0 means a row written before versions existed.
    """

    def __init__(self, indexer: BlindIndexer, row_key: bytes | None = None) -> None:
        self._indexer = indexer
        self._row_key = row_key

    def seal(
        self, spec: CollectionSpec, record_id: str, cipher: FieldCipher,
        values: dict[str, Any], version: int = 0,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Split canonical values into the clear part and the sealed part (base64 ciphertext),
        sealed for the record's write ``version``."""
        clear: dict[str, Any] = {}
        to_seal: list[tuple[str, bytes]] = []
        fields = spec.fields
        for name, value in values.items():
            if fields[name].encrypted:
                to_seal.append((name, _sealed_plaintext(value)))
            else:
                clear[name] = value
        blobs = cipher.encrypt_many(spec.name, record_id, to_seal, version)
        # b2a_base64 without a newline is what base64.b64encode returns.
        sealed = {name: binascii.b2a_base64(blob, newline=False).decode("ascii")
                  for (name, _), blob in zip(to_seal, blobs, strict=True)}
        return clear, sealed

    def index_rows(
        self, spec: CollectionSpec, record_id: str, subject_id: str, values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return self.index_rows_of(spec, record_id, subject_id, self.digests(spec, values))

    def digests(self, spec: CollectionSpec, values: dict[str, Any]) -> list[tuple[str, bytes]]:
        """(field, blind-index digest) of each searchable field among ``values``."""
        return [(name, self.digest(spec, name, value)) for name, value in values.items()
                if spec.fields[name].searchable]

    @staticmethod
    def index_rows_of(spec: CollectionSpec, record_id: str, subject_id: str,
                      digests: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """The ``blind_index`` rows of a record from its :meth:`digests`."""
        return [{"record_id": record_id, "field": name, "collection": spec.name,
                 "subject_id": subject_id, "digest": digest} for name, digest in digests]

    def digest(self, spec: CollectionSpec, field_name: str, canonical: Any) -> bytes:
        return self._indexer.digest(spec.name, field_name,
                                    index_form(spec.fields[field_name], canonical))

    def open(
        self, spec: CollectionSpec, record_id: str, cipher: FieldCipher, sealed: dict[str, str],
        wanted: set[str], version: int = 0,
    ) -> dict[str, Any]:
        """Decrypt only the ``wanted`` fields of a row at write ``version`` (its ``version``
        column); any failure is an integrity failure of the record."""
        out: dict[str, Any] = {}
        bad: list[str] = []
        items: list[tuple[str, bytes]] = []
        for name, b64 in sealed.items():
            if name not in wanted:
                continue
            try:
                items.append((name, binascii.a2b_base64(b64)))
            except (ValueError, TypeError):
                bad.append(name)
        plains = cipher.decrypt_many(spec.name, record_id, items, version)
        for (name, _), plain in zip(items, plains, strict=True):
            try:
                if plain is None:
                    raise DecryptionError()
                out[name] = _decode(plain.decode())["v"]
            except (DecryptionError, ValueError, KeyError, TypeError):
                bad.append(name)
        self._fail_if(spec, record_id, cipher, bad)
        return out

    def reseal(
        self, spec: CollectionSpec, record_id: str, cipher: FieldCipher, sealed: dict[str, str],
        version: int, new_version: int, skip: set[str] | frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """The sealed fields of a row at ``version`` (but ``skip``, which the write replaces or
        removes) sealed again for write ``new_version``, plaintext byte for byte: every field
        of a row then binds the row's version. A field that does not open is an integrity
        failure: an update never launders a tampered ciphertext into a fresh one."""
        names: list[str] = []
        plain: list[tuple[str, bytes]] = []
        bad: list[str] = []
        for name, b64 in sealed.items():
            if name in skip:
                continue
            try:
                plain.append((name, cipher.decrypt(spec.name, record_id, name,
                                                   base64.b64decode(b64), version)))
                names.append(name)
            except (DecryptionError, ValueError, TypeError):
                bad.append(name)
        self._fail_if(spec, record_id, cipher, bad)
        blobs = cipher.encrypt_many(spec.name, record_id, plain, new_version)
        return {name: binascii.b2a_base64(blob, newline=False).decode("ascii")
                for name, blob in zip(names, blobs, strict=True)}

    def row_digest(self, record_id: str, subject_id: str, collection: str, version: int,
                   clear: str, sealed: str, created_at: datetime, updated_at: datetime) -> str:
        """Keyed digest (HMAC-SHA256, hex of 128 bits) of a stored row: its id, owner,
        collection, write version, the stored JSON of its clear and sealed parts (ciphertexts,
        never a plaintext) and its timestamps, length-prefixed. Write events carry it, so a
        row restored to an earlier write, edited or resurrected shows (``vault.rollback``).
        Keyed, so a clear-only row's digest cannot be brute-forced from the audit trail, and
        nobody without the keyring can vouch for a row they made up."""
        if self._row_key is None:
            raise RuntimeError("this codec has no row-digest key")
        message = associated_data(_ROW_LABEL, record_id, subject_id, collection, version,
                                  clear, sealed, iso(created_at), iso(updated_at))
        return hmac.digest(self._row_key, message, hashlib.sha256)[:ROW_DIGEST_BYTES].hex()

    def row_entry(self, row: dict[str, Any]) -> dict[str, Any]:
        """``{"version", "hmac"}`` of a row as inserted or updated (the columns of ``records``):
        what a write event's ``details.row_digests`` holds per record."""
        return {"version": row["version"], "hmac": self.row_digest(
            row["id"], row["subject_id"], row["collection"], row["version"], row["clear"],
            row["sealed"], row["created_at"], row["updated_at"])}

    @staticmethod
    def _fail_if(spec: CollectionSpec, record_id: str, cipher: FieldCipher,
                 bad: list[str]) -> None:
        if bad:
            integrity_log.error(
                "integrity failure: collection=%s record=%s subject=%s fields=%s: ciphertext "
                "does not authenticate (altered, or copied from another record, field or write)",
                spec.name, record_id, cipher.subject_id, ",".join(sorted(bad)))
            raise IntegrityFailure(
                f"record {record_id} failed its integrity check in field(s) "
                f"{', '.join(sorted(bad))}; the event was logged",
                [FieldProblem(n, "stored ciphertext failed its integrity check")
                 for n in sorted(bad)],
            )
