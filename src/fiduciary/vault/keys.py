"""Subject data keys (DEKs): created per subject, wrapped by the keyring, cached unwrapped for a
short time, and re-wrapped online when the KEK rotates."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from fiduciary.clock import Clock
from fiduciary.crypto.aead import DecryptionError, FieldCipher, associated_data, new_key
from fiduciary.crypto.keyring import Keyring
from fiduciary.crypto.keystore import StoredKey, SubjectKeyStore
from fiduciary.errors import Gone, IntegrityFailure

integrity_log = logging.getLogger("fiduciary.integrity")

DEK_VERSION = 1


def _context(subject_id: str, dek_version: int) -> bytes:
    return associated_data(b"fiduciary-dek/1", subject_id, dek_version)


@dataclass(frozen=True)
class RotationReport:
    new_version: int
    rewrapped: int


class SubjectKeys:
    """Subject DEKs: made here, wrapped by the keyring, stored in the key store (never in the
    database), cached unwrapped for a short time, destroyed on erasure."""

    def __init__(self, keyring: Keyring, store: SubjectKeyStore, clock: Clock,
                 cache_seconds: float = 300.0, cache_size: int = 100_000) -> None:
        self._keyring = keyring
        self.store = store
        self._clock = clock
        self._ttl = cache_seconds
        self._max = cache_size
        self._cache: OrderedDict[str, tuple[float, FieldCipher]] = OrderedDict()
        self._lock = threading.Lock()

    def new_key_row(self, subject_id: str,
                    remember: bool = True) -> tuple[dict[str, Any], FieldCipher]:
        """A fresh DEK for a new subject: the key-store row and the cipher to use now. The row
        must be stored (``store.put``) before the subject is. Bulk imports pass
        ``remember=False`` so they do not flush the cache of live keys."""
        dek = new_key()
        kek_version, wrapped = self._keyring.wrap(dek, _context(subject_id, DEK_VERSION))
        cipher = FieldCipher(subject_id, dek, DEK_VERSION)
        if remember:
            self._remember(cipher)
        row = {"subject_id": subject_id, "dek_version": DEK_VERSION, "kek_version": kek_version,
               "wrapped_dek": wrapped, "created_at": self._clock.now()}
        return row, cipher

    def create(self, subject_id: str) -> FieldCipher:
        row, cipher = self.new_key_row(subject_id)
        self.store.put([row])
        return cipher

    def cipher_for(self, subject_id: str) -> FieldCipher:
        return self.ciphers([subject_id])[subject_id]

    def ciphers(self, subject_ids: Iterable[str]) -> dict[str, FieldCipher]:
        """Ciphers for these subjects: from the cache, else one key-store query for the rest."""
        out: dict[str, FieldCipher] = {}
        missing = []
        for sid in subject_ids:
            cached = self._cached(sid)
            if cached:
                out[sid] = cached
            else:
                missing.append(sid)
        if missing:
            stored = self.store.get(missing)
            for sid in missing:
                key = stored.get(sid)
                out[sid] = self._open(key) if key is not None else self._missing(sid)
        return out

    def _missing(self, subject_id: str) -> NoReturn:
        if self.store.destroyed_at(subject_id) is not None:
            raise Gone(f"subject {subject_id} has been erased: its data key was destroyed")
        integrity_log.error("integrity failure: subject %s has no data key in the key store",
                            subject_id)
        raise IntegrityFailure(f"the data key of subject {subject_id} is missing from the key "
                               "store; the event was logged")

    def _open(self, key: StoredKey) -> FieldCipher:
        try:
            dek = self._keyring.unwrap(key.kek_version, key.wrapped_dek,
                                       _context(key.subject_id, key.dek_version))
        except DecryptionError:
            integrity_log.error("integrity failure: data key of subject %s does not unwrap "
                                "(kek version %s)", key.subject_id, key.kek_version)
            raise IntegrityFailure(
                f"the data key of subject {key.subject_id} failed its integrity check; "
                "the event was logged"
            ) from None
        cipher = FieldCipher(key.subject_id, dek, key.dek_version)
        self._remember(cipher)
        return cipher

    def destroy(self, subject_ids: Iterable[str], reason: str) -> int:
        """Crypto-shred: the keys go from the store and this process's cache."""
        ids = list(subject_ids)
        for sid in ids:
            self.forget(sid)
        return self.store.destroy(ids, self._clock.now(), reason)

    def forget(self, subject_id: str) -> None:
        with self._lock:
            self._cache.pop(subject_id, None)

    def _cached(self, subject_id: str) -> FieldCipher | None:
        with self._lock:
            hit = self._cache.get(subject_id)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._cache[subject_id]
                return None
            self._cache.move_to_end(subject_id)
            return hit[1]

    def _remember(self, cipher: FieldCipher) -> None:
        with self._lock:
            self._cache[cipher.subject_id] = (time.monotonic() + self._ttl, cipher)
            self._cache.move_to_end(cipher.subject_id)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)

    # -- rotation ------------------------------------------------------------------------------
    def rotate(self, batch_size: int = 1000) -> RotationReport:
        """New KEK version, then re-wrap every DEK under it in small batches, so readers and
        writers carry on; older versions stay decrypt-only until none is left."""
        new_version = self._keyring.add_version()
        done = 0
        while True:
            rows = self.store.below(new_version, batch_size)
            if not rows:
                break
            updates = []
            for r in rows:
                ctx = _context(r.subject_id, r.dek_version)
                try:
                    dek = self._keyring.unwrap(r.kek_version, r.wrapped_dek, ctx)
                except DecryptionError:
                    integrity_log.error("integrity failure: data key of subject %s does not "
                                        "unwrap during rotation", r.subject_id)
                    raise IntegrityFailure(
                        f"rotation stopped: the data key of subject {r.subject_id} failed "
                        "its integrity check"
                    ) from None
                version, wrapped = self._keyring.wrap(dek, ctx)
                updates.append((r, version, wrapped))
            self.store.rewrap(updates)
            done += len(rows)
        self._keyring.retire_below(new_version)
        return RotationReport(new_version=new_version, rewrapped=done)

    def counts_by_version(self) -> dict[int, int]:
        return self.store.counts_by_version()
