"""Blind indexes: a keyed HMAC-SHA256 of a normalised value, per collection and field.

The index key comes from the keyring, separate from every KEK and DEK, so rotating the KEK does
not change any index and no DEK ever touches an index.
"""

from __future__ import annotations

import hashlib
import hmac

#: Digest bytes kept: 128 bits makes an accidental collision negligible at any realistic size.
DIGEST_BYTES = 16


class BlindIndexer:
    def __init__(self, index_key: bytes) -> None:
        self._root = index_key
        self._per_field: dict[tuple[str, str], hmac.HMAC] = {}

    def _keyed(self, collection: str, field: str) -> hmac.HMAC:
        keyed = self._per_field.get((collection, field))
        if keyed is None:
            # A separate key per field: equal values in different fields give unrelated digests.
            sub = hmac.digest(self._root, f"blind-index/1|{collection}|{field}".encode(), "sha256")
            keyed = hmac.new(sub, digestmod=hashlib.sha256)
            self._per_field[(collection, field)] = keyed
        return keyed

    def digest(self, collection: str, field: str, normalised: bytes) -> bytes:
        h = self._keyed(collection, field).copy()
        h.update(normalised)
        return h.digest()[:DIGEST_BYTES]
