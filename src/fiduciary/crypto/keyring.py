"""The keyring boundary: key-encryption keys (KEKs) that wrap subject data keys, the blind-index
key and, later, signing keys. Backends (file now; PKCS#11 HSM and external KMS later) implement
:class:`Keyring`; nothing else in Fiduciary touches key material directly.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from fiduciary.crypto.aead import (
    KEY_BYTES,
    DecryptionError,
    associated_data,
    new_key,
    open_sealed,
    seal,
)
from fiduciary.errors import ConfigurationError

log = logging.getLogger("fiduciary.keyring")

KEYRING_FILE = "keyring.json"
MASTER_KEY_FILE = "master.key"
_FORMAT = "fiduciary-keyring/1"


@dataclass(frozen=True)
class KekVersion:
    version: int
    created_at: str
    state: str  # "active" wraps new keys; "decrypt_only" until re-wrapped; "retired" after


class Keyring(Protocol):
    """What every keyring backend provides."""

    def active_version(self) -> int:
        """The KEK version new data keys are wrapped under."""
        ...

    def versions(self) -> list[KekVersion]: ...

    def wrap(self, dek: bytes, context: bytes) -> tuple[int, bytes]:
        """Wrap a data key under the active KEK, bound to ``context``; returns (version, blob)."""
        ...

    def unwrap(self, version: int, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap; raises :class:`DecryptionError` on any failure."""
        ...

    def index_key(self) -> bytes:
        """Root key of the blind indexes (stable across KEK rotation)."""
        ...

    def derive_key(self, label: str) -> bytes:
        """An independent 32-byte key for ``label`` (pseudonym tokens, credential sealing),
        stable across KEK rotation and never equal to the index or any data key."""
        ...

    def add_version(self) -> int:
        """Create a new active KEK version; earlier ones become decrypt-only."""
        ...

    def retire_below(self, version: int) -> None:
        """Mark versions below ``version`` retired once nothing is wrapped under them."""
        ...


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def load_master_key(data_dir: Path, from_env: str | None, create: bool) -> bytes:
    """The master key from ``FIDUCIARY_MASTER_KEY`` or ``master.key`` (created 0600 if asked)."""
    if from_env:
        try:
            key = _unb64(from_env.strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigurationError("FIDUCIARY_MASTER_KEY must be base64 of exactly 32 bytes")
        return key
    path = data_dir / MASTER_KEY_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by group or others; chmod 600 it", path)
        try:
            key = _unb64(path.read_text().strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigurationError(f"{path} does not hold a base64 32-byte master key")
        return key
    if not create:
        raise ConfigurationError(
            f"no master key: set FIDUCIARY_MASTER_KEY or run 'fiduciary init' ({path} missing)"
        )
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_b64(key) + "\n")
    log.warning(
        "generated master key file %s (mode 0600). Production keeps the master key in an HSM "
        "or KMS, or supplies it through FIDUCIARY_MASTER_KEY, never beside the database.",
        path,
    )
    return key


class FileKeyring:
    """KEKs sealed under a master key in ``keyring.json``, a file apart from the database.

    Other processes (``fiduciary keys rotate``) may change the file while a server runs; the
    keyring notices through the file's modification stamp and reloads.
    """

    def __init__(self, path: Path, master_key: bytes) -> None:
        self._path = path
        self._master = master_key
        self._stamp: tuple[int, int] | None = None
        self._keks: dict[int, bytes] = {}
        self._versions: list[KekVersion] = []
        self._index_key = b""
        self._reload()

    @classmethod
    def create(cls, path: Path, master_key: bytes, now: datetime | None = None) -> FileKeyring:
        if path.exists():
            raise ConfigurationError(f"{path} already exists")
        created = (now or datetime.now(UTC)).isoformat()
        doc = {
            "format": _FORMAT,
            "index_key": _b64(seal(master_key, new_key(), associated_data(b"keyring/index"))),
            "keks": [{
                "version": 1,
                "created_at": created,
                "state": "active",
                "sealed": _b64(seal(master_key, new_key(), associated_data(b"keyring/kek", 1))),
            }],
        }
        _write_atomic(path, doc)
        return cls(path, master_key)

    # -- loading -----------------------------------------------------------------------------
    def _current_stamp(self) -> tuple[int, int]:
        st = self._path.stat()
        return (st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        try:
            stamp = self._current_stamp()
            doc = json.loads(self._path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read keyring {self._path}: {exc}") from None
        if doc.get("format") != _FORMAT:
            raise ConfigurationError(f"{self._path} is not a Fiduciary keyring")
        try:
            keks = {
                int(k["version"]): open_sealed(self._master, _unb64(k["sealed"]),
                                               associated_data(b"keyring/kek", int(k["version"])))
                for k in doc["keks"]
                if k["state"] != "destroyed"
            }
            index_key = open_sealed(self._master, _unb64(doc["index_key"]),
                                    associated_data(b"keyring/index"))
        except DecryptionError:
            raise ConfigurationError(
                f"the master key does not open {self._path} (wrong FIDUCIARY_MASTER_KEY?)"
            ) from None
        self._keks = keks
        self._index_key = index_key
        self._versions = [KekVersion(int(k["version"]), k["created_at"], k["state"])
                          for k in doc["keks"]]
        self._stamp = stamp

    def _refresh(self) -> None:
        with contextlib.suppress(OSError):
            if self._current_stamp() != self._stamp:
                self._reload()

    # -- Keyring -----------------------------------------------------------------------------
    def active_version(self) -> int:
        self._refresh()
        return max(v.version for v in self._versions if v.state == "active")

    def versions(self) -> list[KekVersion]:
        self._refresh()
        return list(self._versions)

    def wrap(self, dek: bytes, context: bytes) -> tuple[int, bytes]:
        version = self.active_version()
        return version, seal(self._keks[version], dek, context + b"|kek=" + str(version).encode())

    def unwrap(self, version: int, wrapped: bytes, context: bytes) -> bytes:
        if version not in self._keks:
            self._refresh()
        kek = self._keks.get(version)
        if kek is None:
            raise DecryptionError()
        return open_sealed(kek, wrapped, context + b"|kek=" + str(version).encode())

    def index_key(self) -> bytes:
        return self._index_key

    def derive_key(self, label: str) -> bytes:
        return hmac.digest(self._index_key, b"fiduciary-derive/1|" + label.encode(), "sha256")

    def add_version(self) -> int:
        with self._locked() as doc:
            version = max(int(k["version"]) for k in doc["keks"]) + 1
            for k in doc["keks"]:
                if k["state"] == "active":
                    k["state"] = "decrypt_only"
            doc["keks"].append({
                "version": version,
                "created_at": datetime.now(UTC).isoformat(),
                "state": "active",
                "sealed": _b64(seal(self._master, new_key(),
                                    associated_data(b"keyring/kek", version))),
            })
        return version

    def retire_below(self, version: int) -> None:
        with self._locked() as doc:
            for k in doc["keks"]:
                if int(k["version"]) < version and k["state"] == "decrypt_only":
                    k["state"] = "retired"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, list[dict[str, str | int]]]]:
        lock_path = self._path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = json.loads(self._path.read_text())
            yield doc
            _write_atomic(self._path, doc)
        self._reload()


def _write_atomic(path: Path, doc: object) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def open_file_keyring(data_dir: Path, master_key_env: str | None, create: bool) -> FileKeyring:
    master = load_master_key(data_dir, master_key_env, create)
    path = data_dir / KEYRING_FILE
    if not path.exists():
        if not create:
            raise ConfigurationError(f"no keyring at {path}: run 'fiduciary init' first")
        return FileKeyring.create(path, master)
    return FileKeyring(path, master)
