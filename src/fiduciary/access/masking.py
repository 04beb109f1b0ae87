"""Masking strategies, behind one function: ``mask(strategy, value, context)``.

Strategies follow the industry's norms: SSN and account numbers show their last 4
(``***-**-1234``), a driver's licence its state and last 3, a date of birth its year only.
``token`` gives a stable pseudonym (same value, same token) so pseudonymised analysis can still
join records, without revealing the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

REDACTED = "[redacted]"

#: How revealing a masking is: a decision keeps the most revealing of the grants that match.
REVEAL_ORDER = {"redact": 0, "token": 1, "partial": 2, "clear": 3}


def _digits(v: str) -> str:
    return "".join(c for c in v if c.isdigit())


def _last(n: int) -> Callable[[Any, Mapping[str, Any]], Any]:
    def mask(value: Any, _: Mapping[str, Any]) -> Any:
        s = str(value)
        d = _digits(s)
        if len(d) == 9 and len(s) == 11 and s[3] == "-":  # SSN
            return f"***-**-{d[-4:]}"
        tail = (d or s.replace(" ", ""))[-n:]
        return "*" * 4 + tail
    return mask


def _year_only(value: Any, _: Mapping[str, Any]) -> Any:
    return str(value)[:4]


def _email(value: Any, _: Mapping[str, Any]) -> Any:
    local, _at, domain = str(value).partition("@")
    return f"{local[:1]}***@{domain}" if domain else REDACTED


def _initial(value: Any, _: Mapping[str, Any]) -> Any:
    s = str(value).strip()
    return f"{s[:1]}." if s else REDACTED


def _state_last3(value: Any, record: Mapping[str, Any]) -> Any:
    state = record.get("drivers_licence_state") or record.get("state") or "??"
    return f"{state} ****{str(value)[-3:]}"


_PARTIAL: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {
    "last4": _last(4),
    "last3": _last(3),
    "year_only": _year_only,
    "email": _email,
    "initial": _initial,
    "state_last3": _state_last3,
    "redact": lambda v, r: REDACTED,
    "clear": lambda v, r: v,
}


class Masker:
    """Applies a decided masking to a value. ``token_key`` comes from the keyring."""

    def __init__(self, token_key: bytes) -> None:
        self._token_key = token_key

    def token(self, collection: str, field: str, value: Any) -> str:
        msg = f"{collection}|{field}|{value}".encode()
        digest = hmac.new(self._token_key, msg, hashlib.sha256).digest()[:10]
        return "tok_" + base64.b32encode(digest).decode().lower().rstrip("=")

    def mask(self, masking: str, partial: str, collection: str, field: str, value: Any,
             record: Mapping[str, Any]) -> Any:
        """``masking`` is clear, partial, token or redact; ``partial`` is the field's declared
        partial strategy (from the data map) or an explicit one."""
        if masking == "clear":
            return value
        if masking == "token":
            return self.token(collection, field, value)
        if masking == "partial":
            return _PARTIAL.get(partial, _PARTIAL["redact"])(value, record)
        return REDACTED


def partial_strategies() -> frozenset[str]:
    return frozenset(_PARTIAL)
