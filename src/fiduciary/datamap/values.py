"""Validation, canonical form and blind-index normalisation of field values.

Every reason returned here describes what is wrong without repeating the value, because
reasons travel into API errors, rejects files and logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fiduciary.datamap.model import FieldSpec, FieldType


class ValueRejected(ValueError):
    """A value does not fit its field; the message is safe to show (it holds no value)."""


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-x]+$")
_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9AB](?:\.[0-9A-TV-Z]{1,4})?$")
_PASSPORT = re.compile(r"^[A-Z0-9]{6,9}$")
_LICENCE = re.compile(r"^[A-Z0-9\-]{4,20}$")
_PLATE = re.compile(r"^[A-Z0-9 \-]{2,10}$")
_POSTAL = re.compile(r"^[A-Z0-9 \-]{3,10}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_STATE = re.compile(r"^[A-Z]{2}$")


def _email(v: str) -> str:
    v = v.strip()
    if len(v) > 254 or not _EMAIL.match(v):
        raise ValueRejected("not a valid email address")
    return v


def _phone(v: str) -> str:
    v = v.strip()
    if not _PHONE_CHARS.match(v) or not 7 <= len(_digits(v.split("x")[0])) <= 15:
        raise ValueRejected("not a valid phone number (7 to 15 digits, optional +)")
    return v


def _national_id(v: str) -> str:
    # US Social Security Number rules (SSA): no area 000/666/9xx, group 00 or serial 0000.
    d = _digits(v)
    if len(d) != 9 or re.sub(r"[\d\- ]", "", v):
        raise ValueRejected("not a valid national id (9 digits, as ###-##-####)")
    if d[:3] in {"000", "666"} or d[0] == "9" or d[3:5] == "00" or d[5:] == "0000":
        raise ValueRejected("not a valid national id (number range never issued)")
    return f"{d[:3]}-{d[3:5]}-{d[5:]}"


def _iban(v: str) -> str:
    s = re.sub(r"\s", "", v).upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", s):
        raise ValueRejected("not a valid IBAN (country, check digits, account)")
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    if int(n) % 97 != 1:
        raise ValueRejected("not a valid IBAN (check digits do not match)")
    return s


def _luhn_ok(d: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(d)):
        k = int(c)
        if i % 2:
            k = k * 2 - 9 if k > 4 else k * 2
        total += k
    return total % 10 == 0


def _card_number(v: str) -> str:
    d = _digits(v)
    if re.sub(r"[\d\- ]", "", v) or not 12 <= len(d) <= 19 or not _luhn_ok(d):
        raise ValueRejected("not a valid card number (12 to 19 digits, Luhn check)")
    return d


def _bank_account(v: str) -> str:
    d = _digits(v)
    if re.sub(r"[\d\- ]", "", v) or not 4 <= len(d) <= 17:
        raise ValueRejected("not a valid bank account number (4 to 17 digits)")
    return d


def _aba_routing(v: str) -> str:
    d = _digits(v)
    w = (3, 7, 1) * 3
    if len(d) != 9 or sum(int(c) * k for c, k in zip(d, w, strict=True)) % 10:
        raise ValueRejected("not a valid ABA routing number (9 digits, checksum)")
    return d


def _upper_pattern(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(v: str) -> str:
        s = v.strip().upper()
        if not pattern.match(s):
            raise ValueRejected(f"not a valid {what}")
        return s

    return check


def _icd10_list(v: str) -> str:
    codes = [c.strip().upper() for c in v.split(",") if c.strip()]
    if not codes or not all(_ICD10.match(c) for c in codes):
        raise ValueRejected("not a valid comma-separated list of ICD-10 codes")
    return ",".join(codes)


#: format name -> validator returning the canonical stored form.
FORMATS: dict[str, Callable[[str], str]] = {
    "email": _email,
    "phone": _phone,
    "national_id": _national_id,
    "iban": _iban,
    "card_number": _card_number,
    "bank_account": _bank_account,
    "aba_routing": _aba_routing,
    "vin": _upper_pattern(_VIN, "VIN (17 characters, no I, O or Q)"),
    "icd10": _upper_pattern(_ICD10, "ICD-10 code"),
    "icd10_list": _icd10_list,
    "passport": _upper_pattern(_PASSPORT, "passport number (6 to 9 letters or digits)"),
    "drivers_licence": _upper_pattern(_LICENCE, "driver's licence number"),
    "licence_plate": _upper_pattern(_PLATE, "licence plate"),
    "postal_code": _upper_pattern(_POSTAL, "postal code"),
    "country": _upper_pattern(_COUNTRY, "ISO 3166 country code"),
    "us_state": _upper_pattern(_STATE, "two-letter state code"),
}

#: format name -> blind-index normalisation (applied to the canonical form).
_INDEX_NORMALISERS: dict[str, Callable[[str], str]] = {
    "email": lambda v: v.strip().lower(),
    "phone": lambda v: _digits(v.split("x")[0]),
    "national_id": _digits,
    "card_number": _digits,
    "bank_account": _digits,
}

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def validate(spec: FieldSpec, value: Any) -> Any:
    """Check ``value`` against ``spec`` and return its canonical stored form (JSON-ready)."""
    t = spec.type
    if t in (FieldType.STRING, FieldType.TEXT):
        if not isinstance(value, str):
            raise ValueRejected("expected a string")
        limit = spec.max_length or (255 if t is FieldType.STRING else 20_000)
        if len(value) > limit:
            raise ValueRejected(f"longer than {limit} characters")
        _check_text(value)
        if not value.strip():
            raise ValueRejected("must not be blank")
        return FORMATS[spec.format](value) if spec.format else value
    if t is FieldType.ENUM:
        if not isinstance(value, str) or value not in spec.values:
            raise ValueRejected(f"expected one of: {', '.join(spec.values)}")
        return value
    if t is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise ValueRejected("expected true or false")
        return value
    if t is FieldType.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueRejected("expected an integer")
        _check_range(spec, value)
        return value
    if t is FieldType.DECIMAL:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueRejected("expected a decimal number")
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueRejected("expected a decimal number") from None
        if not d.is_finite():
            raise ValueRejected("expected a finite decimal number")
        _check_range(spec, d)
        return str(d)
    if t is FieldType.DATE:
        if not isinstance(value, str):
            raise ValueRejected("expected a date as YYYY-MM-DD")
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValueRejected("expected a date as YYYY-MM-DD") from None
    if t is FieldType.DATETIME:
        if not isinstance(value, str):
            raise ValueRejected("expected an ISO 8601 date-time with a UTC offset")
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueRejected("expected an ISO 8601 date-time with a UTC offset") from None
        if dt.tzinfo is None:
            raise ValueRejected("date-time needs a UTC offset (such as Z or +01:00)")
        try:
            return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
        except OverflowError:  # 0001-01-01T00:00+14:00 is before the year 1 in UTC
            raise ValueRejected("date-time out of range (years 1 to 9999 in UTC)") from None
    raise ValueRejected(f"unsupported type {t}")  # pragma: no cover - loader rejects these


#: Control characters other than tab and newline (NUL, CR, escape, DEL, C1 …).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Lone UTF-16 surrogates: JSON can spell them (\ud800), but they are not text.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _check_text(value: str) -> None:
    if _CONTROL.search(value):
        raise ValueRejected("contains control characters (only tab and newline are allowed)")
    if _SURROGATE.search(value):
        raise ValueRejected("not valid Unicode text")


def _check_range(spec: FieldSpec, v: int | Decimal) -> None:
    if spec.minimum is not None and v < Decimal(str(spec.minimum)):
        raise ValueRejected(f"below the minimum of {spec.minimum:g}")
    if spec.maximum is not None and v > Decimal(str(spec.maximum)):
        raise ValueRejected(f"above the maximum of {spec.maximum:g}")


def from_text(spec: FieldSpec, text: str) -> Any:
    """Turn a CSV cell into the JSON value ``validate`` expects (``None`` for an empty cell)."""
    if text == "":
        return None
    t = spec.type
    if t is FieldType.BOOLEAN:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueRejected("expected true or false")
    if t is FieldType.INTEGER:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueRejected("expected an integer") from None
    return text


def index_form(spec: FieldSpec, canonical: Any) -> bytes:
    """The normalised bytes a blind index is computed over, for a canonical stored value."""
    if isinstance(canonical, bool):
        s = "true" if canonical else "false"
    elif isinstance(canonical, str):
        norm = _INDEX_NORMALISERS.get(spec.format or "")
        s = norm(canonical) if norm else " ".join(canonical.split()).casefold()
    else:
        s = str(canonical)
    return s.encode()
