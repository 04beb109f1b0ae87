"""RFC 8785 (JSON Canonicalization Scheme) for audit events, at the speed of ``orjson``.

Every audit event is hashed into the Merkle log as its RFC 8785 form, so two encoders must
never disagree. ``orjson`` with sorted keys writes exactly the RFC 8785 bytes when a value
holds only str (no character outside the Basic Multilingual Plane, no lone surrogate),
int (within the I-JSON range), bool, None, list and dict with str keys: strings are escaped
the same way (``\\"``, ``\\\\``, ``\\b\\t\\n\\f\\r``, ``\\u00xx`` for the other control
characters, nothing else), and keys sorted by code point are sorted by UTF-16 code unit as
RFC 8785 asks, since the two orders differ only between a character above U+FFFF and one
in U+E000 to U+FFFF. Anything else (a float, a big int, a tuple, such a character) goes to the
reference encoder ``rfc8785``, which also raises what it raised before.

``tests/test_audit_canonical.py`` renders every event of a trail built through the services
both ways and compares the bytes.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

import orjson
import rfc8785

__all__ = ["canonical", "canonical_ids", "canonical_reference", "stored_is_canonical"]

#: I-JSON's exact integers (RFC 7493): rfc8785 refuses anything beyond.
_MAX_INT = 2**53 - 1
#: Characters on which the two encoders may differ: surrogates and outside the BMP.
_RISKY_CHAR = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")
_SORTED = orjson.OPT_SORT_KEYS


def _plain_str(s: str) -> bool:
    return s.isascii() or _RISKY_CHAR.search(s) is None


def _plain(value: Any) -> bool:
    """``value`` is made only of what orjson writes exactly as RFC 8785 does."""
    t = type(value)
    if t is str:
        return _plain_str(value)
    if t is dict:
        return all(type(k) is str and _plain_str(k) and _plain(v) for k, v in value.items())
    if t is list:
        return all(_plain(v) for v in value)
    if t is int:
        return bool(-_MAX_INT <= value <= _MAX_INT)
    if value is None or t is bool:
        return True
    # A StrEnum member (an actor kind, a decision) is written as its text by both encoders.
    return isinstance(value, str) and _plain_str(value)


def canonical_reference(value: Any) -> bytes:
    """The RFC 8785 bytes from the reference implementation (slow: ~90 µs an event)."""
    return rfc8785.dumps(value)


def canonical(value: Mapping[str, Any]) -> bytes:
    """The RFC 8785 canonical JSON of ``value``, byte-identical to ``rfc8785.dumps``."""
    if type(value) is dict and _plain(value):
        return orjson.dumps(value, option=_SORTED)
    return rfc8785.dumps(value)


def _has_float(container: dict[str, Any] | list[Any]) -> bool:
    values: Iterable[Any] = container.values() if type(container) is dict else container
    for v in values:
        t = type(v)
        if t is float or ((t is dict or t is list) and v and _has_float(v)):
            return True
    return False


#: Digits become ``0``, whatever else may sit in a number token ``.``, whatever may end a
#: value ``,``: every float orjson writes then reads ``.`` (its point or exponent), digits,
#: ``,``. An int does not; a negative one does, and so may a string holding such text: those
#: only cost the event-by-event path. The lead bytes of a character beyond the Basic
#: Multilingual Plane in UTF-8 (F0-F4) become ``\x01``, a byte canonical JSON never holds
#: raw (it writes control characters escaped).
_NUMBER_MARK = bytes.maketrans(b"0123456789eE+-.}]\xf0\xf1\xf2\xf3\xf4",
                               b"0000000000.....,,\x01\x01\x01\x01\x01")
_STRICT = _SORTED | orjson.OPT_STRICT_INTEGER


def stored_is_canonical(text: bytes) -> dict[str, Any] | None:
    """The event ``text`` holds when ``text`` is provably its RFC 8785 form, else None (the
    caller then settles it with ``json.loads`` and ``canonical``, as before). One ``orjson``
    parse and one re-encoding compared with the stored bytes, for the ASCII events without
    floats that are nearly every event; parsed, they hold only what ``canonical`` writes
    through ``orjson``, so equal bytes mean RFC 8785 bytes."""
    if not text.isascii():
        return None
    try:
        obj = orjson.loads(text)
        if type(obj) is not dict or (_doubtful(text.translate(_NUMBER_MARK))
                                     and _has_float(obj)):
            return None
        again = orjson.dumps(obj, option=_STRICT)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return obj if again == text else None


def _doubtful(marked: bytes) -> list[int]:
    """Offsets in ``marked`` (texts through ``_NUMBER_MARK``) where a text may hold what
    orjson and RFC 8785 write differently: a float (a digit before ``,`` with a ``.`` before
    its digits, found from the rare ``0,`` that ends a number, since a search for the
    frequent ``.``, every ``e``, costs twice as much) or a character beyond the BMP."""
    hits = []
    find = marked.find
    at = find(b"0,")
    while at >= 0:
        start = at
        while start and marked[start] == 0x30:  # "0"
            start -= 1
        if marked[start] == 0x2E:  # "."
            hits.append(at)
        at = find(b"0,", at + 2)
    at = find(b"\x01")
    while at >= 0:
        hits.append(at)
        at = find(b"\x01", at + 1)
    return hits


def canonical_ids(texts: Sequence[bytes]) -> list[Any]:
    """For each stored text, its event's ``id`` when the text is provably the event's RFC
    8785 form, else None: ``stored_is_canonical`` for a batch (verification's hot loop). One
    scan of the joined texts finds the few that may hold a float or a character beyond the
    BMP, which go through ``stored_is_canonical``; every other text costs one orjson parse
    and one re-encoding, without a Python call of its own. Such a text holds only what
    ``canonical`` writes through orjson (see above), so equal bytes are RFC 8785 bytes."""
    loads, dumps = orjson.loads, orjson.dumps
    try:
        ids = [o.get("id") if type(o := loads(t)) is dict and dumps(o, option=_STRICT) == t
               else None for t in texts]
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        # A text that is not JSON, or an integer beyond I-JSON: settle each on its own.
        return [None if (o := stored_is_canonical(t)) is None else o.get("id") for t in texts]
    hits = _doubtful(b"".join(texts).translate(_NUMBER_MARK))
    if hits:
        ends = list(accumulate(map(len, texts)))
        for k in {bisect_right(ends, h) for h in hits}:
            o = stored_is_canonical(texts[k])
            ids[k] = None if o is None else o.get("id")
    return ids
