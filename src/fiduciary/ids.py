"""Identifiers: new ones, and the check that a string is one before any database sees it."""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid

_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

_lock = threading.Lock()
_last = [0, 0]  # milliseconds, counter within that millisecond


def new_id() -> str:
    """A random UUID (version 4), for subjects and records."""
    return str(uuid.uuid4())


def ordered_id() -> str:
    """A UUIDv7 (RFC 9562, counter in ``rand_a``) that grows with every call in this process:
    entries recorded within one clock tick (or under a test's frozen clock) still sort in the
    order they were made, so the latest entry of a ledger is its current state."""
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last[0]:
            _last[:] = [ms, 0]
        elif _last[1] < 0xFFF:
            _last[1] += 1
        else:
            _last[:] = [_last[0] + 1, 0]
        ms, counter = _last
    value = ms << 80 | 0x7 << 76 | counter << 64 | 0x2 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def is_id(value: object) -> bool:
    """Ids are UUIDs; anything else is unknown without asking the database (which may reject
    bytes such as NUL outright)."""
    return isinstance(value, str) and bool(_ID.match(value))


def shown(value: object) -> str:
    """An id as an error message may repeat it: only if it is one (anything else a caller
    typed where an id belongs — an SSN, say — is not echoed)."""
    return value if isinstance(value, str) and is_id(value) else "(not a valid id)"
