"""Field and key encryption: AES-256-GCM with associated data that binds every ciphertext to
its place, so a ciphertext moved elsewhere fails to open instead of revealing data.

Layout of a field ciphertext: ``0x01 ‖ dek_version (u32 BE) ‖ nonce (12) ‖ ciphertext+tag``.

A field sealed by a record's write ``n`` (1 on create, +1 on each update) also binds ``n``: its
associated data is ``fiduciary-field/2`` with the record version as a last part, so a ciphertext
from an earlier write of the same record fails to open. Version 0 is the associated data of
fields sealed before versions existed (``fiduciary-field/1``, no version part): still readable.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FIELD_FORMAT = 0x01
_FIELD_LABEL = b"fiduciary-field/1"
#: Fields sealed at a record version >= 1: the version is the last associated-data part.
_VERSIONED_LABEL = b"fiduciary-field/2"
_HEADER = struct.Struct(">BI")
_NONCE = 12
KEY_BYTES = 32


class DecryptionError(Exception):
    """Raised for every kind of decryption failure; deliberately says nothing more."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


def associated_data(label: bytes, *parts: str | int) -> bytes:
    """Length-prefixed encoding, so no two different part lists give the same bytes."""
    chunks = [label]
    for part in parts:
        b = str(part).encode()
        chunks.append(len(b).to_bytes(4, "big"))
        chunks.append(b)
    return b"".join(chunks)


def _ad_part(part: str | int) -> bytes:
    """One length-prefixed part, exactly as :func:`associated_data` encodes it."""
    b = str(part).encode()
    return len(b).to_bytes(4, "big") + b


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """``nonce ‖ ciphertext+tag`` under ``key``: for wrapping keys."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def open_sealed(key: bytes, sealed: bytes, ad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], ad)
    except (InvalidTag, ValueError):
        raise DecryptionError() from None


class FieldCipher:
    """Encrypts the fields of one subject's records under that subject's data key (DEK)."""

    __slots__ = ("_aead", "dek_version", "subject_id")

    def __init__(self, subject_id: str, dek: bytes, dek_version: int) -> None:
        self._aead = AESGCM(dek)
        self.subject_id = subject_id
        self.dek_version = dek_version

    def _ad(self, collection: str, record_id: str, field: str, dek_version: int,
            record_version: int = 0) -> bytes:
        if record_version:
            return associated_data(_VERSIONED_LABEL, collection, record_id, field,
                                   self.subject_id, dek_version, record_version)
        return associated_data(_FIELD_LABEL, collection, record_id, field,
                               self.subject_id, dek_version)

    def _ad_around(self, collection: str, record_id: str,
                   record_version: int) -> tuple[bytes, bytes]:
        """The associated data of a record's fields before and after the field name (at this
        cipher's DEK version): ``prefix + _ad_part(field) + suffix == _ad(...)``."""
        label = _VERSIONED_LABEL if record_version else _FIELD_LABEL
        prefix = label + _ad_part(collection) + _ad_part(record_id)
        suffix = _ad_part(self.subject_id) + _ad_part(self.dek_version)
        if record_version:
            suffix += _ad_part(record_version)
        return prefix, suffix

    def encrypt(self, collection: str, record_id: str, field: str, plaintext: bytes,
                record_version: int = 0) -> bytes:
        """``record_version``: the write of the record that seals the field (0: none, the
        associated data of fields sealed before record versions existed)."""
        nonce = os.urandom(_NONCE)
        ad = self._ad(collection, record_id, field, self.dek_version, record_version)
        return (_HEADER.pack(FIELD_FORMAT, self.dek_version) + nonce
                + self._aead.encrypt(nonce, plaintext, ad))

    def encrypt_many(self, collection: str, record_id: str,
                     items: Sequence[tuple[str, bytes]], record_version: int = 0) -> list[bytes]:
        """``[encrypt(collection, record_id, field, plaintext, record_version) for field,
        plaintext in items]``, byte for byte (each with its own random nonce), for the fields
        of one record.

        The associated data of every field of a record differs only in the field name, so its
        prefix (label, collection, record id) and suffix (subject id, DEK version, record
        version) are encoded once; the nonces come from one ``os.urandom`` call, split into
        12-byte pieces.
        """
        version = self.dek_version
        prefix, suffix = self._ad_around(collection, record_id, record_version)
        header = _HEADER.pack(FIELD_FORMAT, version)
        nonces = os.urandom(_NONCE * len(items))
        seal = self._aead.encrypt
        out: list[bytes] = []
        at = 0
        for field, plaintext in items:
            nonce = nonces[at:at + _NONCE]
            at += _NONCE
            out.append(header + nonce + seal(nonce, plaintext, prefix + _ad_part(field) + suffix))
        return out

    def decrypt_many(self, collection: str, record_id: str,
                     items: Sequence[tuple[str, bytes]], record_version: int = 0
                     ) -> list[bytes | None]:
        """``decrypt`` of each (field, blob) of one record, the associated data's shared prefix
        and suffix encoded once (as :meth:`encrypt_many`); ``None`` for a blob that does not
        open, so the caller names every failing field."""
        prefix, suffix = self._ad_around(collection, record_id, record_version)
        header = _HEADER.pack(FIELD_FORMAT, self.dek_version)
        start = _HEADER.size
        body = start + _NONCE
        open_ = self._aead.decrypt
        out: list[bytes | None] = []
        for field, blob in items:
            if blob[:start] != header:  # another format or DEK version: as decrypt fails
                out.append(None)
                continue
            try:
                out.append(open_(blob[start:body], blob[body:],
                                 prefix + _ad_part(field) + suffix))
            except (InvalidTag, ValueError):
                out.append(None)
        return out

    def decrypt(self, collection: str, record_id: str, field: str, blob: bytes,
                record_version: int = 0) -> bytes:
        """``record_version``: the record's write version as stored in its row; a field
        sealed by any other write of the record fails, like any other misplaced one."""
        try:
            fmt, version = _HEADER.unpack_from(blob)
            if fmt != FIELD_FORMAT or version != self.dek_version:
                raise DecryptionError()
            start = _HEADER.size
            nonce = blob[start:start + _NONCE]
            ad = self._ad(collection, record_id, field, version, record_version)
            return self._aead.decrypt(nonce, blob[start + _NONCE:], ad)
        except (InvalidTag, ValueError, struct.error):
            raise DecryptionError() from None
