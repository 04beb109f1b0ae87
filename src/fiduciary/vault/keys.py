"""Subject data keys (DEKs): created per subject, wrapped by the keyring, cached unwrapped for a
short time, and re-wrapped online when the KEK rotates."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.clock import Clock
from fiduciary.crypto.aead import DecryptionError, FieldCipher, associated_data, new_key
from fiduciary.crypto.keyring import Keyring
from fiduciary.errors import IntegrityFailure, NotFound
from fiduciary.storage import Database
from fiduciary.storage.schema import subject_keys

integrity_log = logging.getLogger("fiduciary.integrity")

DEK_VERSION = 1


def _context(subject_id: str, dek_version: int) -> bytes:
    return associated_data(b"fiduciary-dek/1", subject_id, dek_version)


@dataclass(frozen=True)
class RotationReport:
    new_version: int
    rewrapped: int


class SubjectKeys:
    def __init__(self, keyring: Keyring, clock: Clock, cache_seconds: float = 300.0,
                 cache_size: int = 100_000) -> None:
        self._keyring = keyring
        self._clock = clock
        self._ttl = cache_seconds
        self._max = cache_size
        self._cache: OrderedDict[str, tuple[float, FieldCipher]] = OrderedDict()
        self._lock = threading.Lock()

    def new_key_row(self, subject_id: str,
                    remember: bool = True) -> tuple[dict[str, Any], FieldCipher]:
        """A fresh DEK for a new subject: the row to store and the cipher to use now.
        Bulk imports pass ``remember=False`` so they do not flush the cache of live keys."""
        dek = new_key()
        kek_version, wrapped = self._keyring.wrap(dek, _context(subject_id, DEK_VERSION))
        cipher = FieldCipher(subject_id, dek, DEK_VERSION)
        if remember:
            self._remember(cipher)
        row = {"subject_id": subject_id, "dek_version": DEK_VERSION, "kek_version": kek_version,
               "wrapped_dek": wrapped, "created_at": self._clock.now()}
        return row, cipher

    def cipher_for(self, conn: Connection, subject_id: str) -> FieldCipher:
        cached = self._cached(subject_id)
        if cached:
            return cached
        row = conn.execute(
            sa.select(subject_keys.c.dek_version, subject_keys.c.kek_version,
                      subject_keys.c.wrapped_dek).where(subject_keys.c.subject_id == subject_id)
        ).first()
        if row is None:
            raise NotFound(f"subject {subject_id} has no data key", code="subject_not_found")
        return self.open_row(subject_id, row.dek_version, row.kek_version, row.wrapped_dek)

    def open_row(self, subject_id: str, dek_version: int, kek_version: int,
                 wrapped: bytes) -> FieldCipher:
        cached = self._cached(subject_id)
        if cached:
            return cached
        try:
            dek = self._keyring.unwrap(kek_version, wrapped, _context(subject_id, dek_version))
        except DecryptionError:
            integrity_log.error("integrity failure: data key of subject %s does not unwrap "
                                "(kek version %s)", subject_id, kek_version)
            raise IntegrityFailure(
                f"the data key of subject {subject_id} failed its integrity check; "
                "the event was logged"
            ) from None
        cipher = FieldCipher(subject_id, dek, dek_version)
        self._remember(cipher)
        return cipher

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
    def rotate(self, db: Database, batch_size: int = 1000) -> RotationReport:
        """New KEK version, then re-wrap every DEK under it in small transactions, so readers
        and writers carry on; older versions stay decrypt-only until none is left."""
        new_version = self._keyring.add_version()
        done = 0
        while True:
            with db.write() as conn:
                rows = conn.execute(
                    sa.select(subject_keys.c.subject_id, subject_keys.c.dek_version,
                              subject_keys.c.kek_version, subject_keys.c.wrapped_dek)
                    .where(subject_keys.c.kek_version < new_version)
                    .limit(batch_size)
                ).all()
                if not rows:
                    break
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
                    conn.execute(
                        subject_keys.update()
                        .where(subject_keys.c.subject_id == r.subject_id,
                               subject_keys.c.kek_version == r.kek_version)
                        .values(kek_version=version, wrapped_dek=wrapped)
                    )
                done += len(rows)
        self._keyring.retire_below(new_version)
        return RotationReport(new_version=new_version, rewrapped=done)

    def counts_by_version(self, db: Database) -> dict[int, int]:
        with db.read() as conn:
            rows = conn.execute(
                sa.select(subject_keys.c.kek_version, sa.func.count())
                .group_by(subject_keys.c.kek_version)
            ).all()
        return {int(v): int(n) for v, n in rows}
