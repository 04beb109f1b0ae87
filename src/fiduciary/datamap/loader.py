"""Load and validate a data-map YAML file. Every problem is reported, each with its location."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fiduciary.datamap.model import (
    MASKING_STRATEGIES,
    RECIPIENT_KINDS,
    RETENTION_EVENTS,
    Classification,
    CollectionSpec,
    DataMap,
    FieldSpec,
    FieldType,
    LawfulBasis,
    Purpose,
    Relation,
    RetentionRule,
    SpecialCategoryCondition,
    ThirdParty,
)
from fiduciary.datamap.values import FORMATS
from fiduciary.errors import DataMapInvalid, FieldProblem

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PERIOD = re.compile(r"^P(?:\d+Y)?(?:\d+M)?(?:\d+D)?$")
_RESERVED = frozenset({"id", "subject_id", "collection", "created_at", "updated_at", "data"})
_FIELD_KEYS = frozenset(
    {"type", "classification", "purposes", "format", "searchable", "required", "masking",
     "values", "min", "max", "max_length", "description", "subject_attribute"}
)
_COLLECTION_KEYS = frozenset(
    {"description", "lawful_basis", "special_category_condition", "purposes", "retention",
     "fields", "subject_categories", "relations"}
)
DEFAULT_DATAMAP = "default_insurance.yaml"


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[FieldProblem] = []

    def add(self, where: str, reason: str) -> None:
        self.items.append(FieldProblem(f"{self.source}: {where}", reason))


def load_default() -> DataMap:
    text = resources.files("fiduciary.datamap").joinpath(DEFAULT_DATAMAP).read_text("utf-8")
    return parse(text, source=f"<package>/{DEFAULT_DATAMAP}")


def load_file(path: Path) -> DataMap:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise DataMapInvalid(
            f"{path}: cannot read data map ({exc.strerror})",
            [FieldProblem(str(path), "cannot read file")],
        ) from None
    return parse(text, source=str(path))


def load(path: Path | None) -> DataMap:
    return load_file(path) if path else load_default()


def parse(text: str, source: str) -> DataMap:
    """Parse YAML text into a validated :class:`DataMap` or raise :class:`DataMapInvalid`."""
    problems = _Problems(source)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        problems.add(where, f"not valid YAML ({getattr(exc, 'problem', 'syntax error')})")
        _raise(problems)
    if not isinstance(doc, dict):
        problems.add("document", "expected a mapping with 'purposes' and 'collections'")
        _raise(problems)
    purposes = _purposes(doc.get("purposes"), problems)
    collections: dict[str, CollectionSpec] = {}
    raw_collections = doc.get("collections")
    if not isinstance(raw_collections, dict) or not raw_collections:
        problems.add("collections", "expected a non-empty mapping of collections")
    else:
        for name, body in raw_collections.items():
            spec = _collection(str(name), body, purposes, problems)
            if spec:
                collections[spec.name] = spec
    _check_relations(collections, problems)
    third_parties = _third_parties(doc.get("third_parties"), purposes, collections, problems)
    controller = doc.get("controller") or {}
    if not isinstance(controller, dict) or not all(
            isinstance(v, str) for v in controller.values()):
        problems.add("controller", "expected a mapping of text (name, address, contact, dpo)")
        controller = {}
    for key in doc:
        if key not in {"version", "purposes", "collections", "third_parties", "controller"}:
            problems.add(str(key), "unknown top-level key")
    _raise(problems)
    return DataMap(purposes=purposes, collections=collections, source=source,
                   third_parties=third_parties,
                   controller={str(k): str(v) for k, v in controller.items()})


def _third_parties(raw: Any, purposes: dict[str, Purpose],
                   collections: dict[str, CollectionSpec],
                   problems: _Problems) -> tuple[ThirdParty, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.add("third_parties", "expected a mapping of recipient name to details")
        return ()
    out = []
    for name, body in raw.items():
        where = f"third_parties.{name}"
        if not isinstance(body, dict):
            problems.add(where, "expected a mapping")
            continue
        for key in body:
            if key not in {"kind", "purposes", "collections", "country", "transfer_safeguard",
                           "description"}:
                problems.add(f"{where}.{key}", "unknown key")
        kind = body.get("kind")
        if kind not in RECIPIENT_KINDS:
            problems.add(f"{where}.kind", f"expected one of: {', '.join(sorted(RECIPIENT_KINDS))}")
        used = _purpose_set(body.get("purposes"), f"{where}.purposes", purposes, problems)
        shared = body.get("collections")
        if not isinstance(shared, list) or not shared:
            problems.add(f"{where}.collections", "expected a non-empty list of collections")
            shared = []
        for c in shared:
            if c not in collections:
                problems.add(f"{where}.collections", f"undeclared collection {c!r}")
        out.append(ThirdParty(
            name=str(name), kind=str(kind), purposes=frozenset(used),
            collections=frozenset(str(c) for c in shared), country=str(body.get("country", "")),
            transfer_safeguard=str(body.get("transfer_safeguard", "")),
            description=str(body.get("description", ""))))
    return tuple(out)


def _raise(problems: _Problems) -> None:
    if problems.items:
        lines = "; ".join(f"{p.field}: {p.reason}" for p in problems.items)
        raise DataMapInvalid(f"data map invalid: {lines}", problems.items)


def _purposes(raw: Any, problems: _Problems) -> dict[str, Purpose]:
    if not isinstance(raw, dict) or not raw:
        problems.add("purposes", "expected a non-empty mapping of purposes")
        return {}
    out: dict[str, Purpose] = {}
    for name, body in raw.items():
        where = f"purposes.{name}"
        if not _NAME.match(str(name)):
            problems.add(where, "purpose names are lower_snake_case")
            continue
        body = body or {}
        if not isinstance(body, dict):
            problems.add(where, "expected a mapping")
            continue
        for key in body:
            if key not in {"description", "consent_required", "pseudonymised_only"}:
                problems.add(f"{where}.{key}", "unknown purpose key (quote a description that "
                                               "contains a comma)")
        out[name] = Purpose(
            name=name,
            description=str(body.get("description", "")),
            consent_required=bool(body.get("consent_required", False)),
            pseudonymised_only=bool(body.get("pseudonymised_only", False)),
        )
    return out


def _enum(cls: Any, raw: Any, where: str, what: str, problems: _Problems) -> Any:
    try:
        return cls(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        problems.add(where, f"unknown {what} {raw!r} (allowed: {allowed})")
        return None


def _purpose_set(raw: Any, where: str, known: dict[str, Purpose], problems: _Problems) -> set[str]:
    if not isinstance(raw, list) or not raw:
        problems.add(where, "expected a non-empty list of purposes")
        return set()
    out = set()
    for p in raw:
        if p not in known:
            problems.add(where, f"undeclared purpose {p!r}")
        else:
            out.add(str(p))
    return out


def _collection(
    name: str, body: Any, purposes: dict[str, Purpose], problems: _Problems
) -> CollectionSpec | None:
    where = f"collections.{name}"
    if not _NAME.match(name):
        problems.add(where, "collection names are lower_snake_case")
        return None
    if not isinstance(body, dict):
        problems.add(where, "expected a mapping")
        return None
    for key in body:
        if key not in _COLLECTION_KEYS:
            problems.add(f"{where}.{key}", "unknown collection key")
    basis = _enum(LawfulBasis, body.get("lawful_basis"), f"{where}.lawful_basis",
                  "lawful basis", problems)
    condition = None
    if body.get("special_category_condition") is not None:
        condition = _enum(SpecialCategoryCondition, body["special_category_condition"],
                          f"{where}.special_category_condition", "Art. 9(2) condition", problems)
    default_purposes = (
        _purpose_set(body["purposes"], f"{where}.purposes", purposes, problems)
        if "purposes" in body
        else None
    )
    fields: dict[str, FieldSpec] = {}
    raw_fields = body.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        problems.add(f"{where}.fields", "expected a non-empty mapping of fields")
    else:
        for fname, fbody in raw_fields.items():
            f = _field(where, str(fname), fbody, default_purposes, purposes, problems)
            if f:
                fields[f.name] = f
    retention = _retention(where, body.get("retention"), fields, purposes, problems)
    categories = body.get("subject_categories", ["customers"])
    if not isinstance(categories, list) or not categories or not all(
            isinstance(c, str) for c in categories):
        problems.add(f"{where}.subject_categories", "expected a non-empty list of text")
        categories = ["customers"]
    if condition is None and any(
        f.classification is Classification.SPECIAL_CATEGORY for f in fields.values()
    ):
        problems.add(f"{where}.special_category_condition",
                     "required: the collection holds special-category fields (GDPR Art. 9(2))")
    if basis is None or retention is None:
        return None
    return CollectionSpec(
        name=name,
        lawful_basis=basis,
        retention=retention,
        fields=fields,
        description=str(body.get("description", "")),
        special_category_condition=condition,
        subject_categories=tuple(categories),
        relations=_relations(where, body.get("relations"), fields, problems),
    )


def _relations(where: str, raw: Any, fields: dict[str, FieldSpec],
               problems: _Problems) -> dict[str, Relation]:
    """``relations: {claim: {collection: claims, key: claim_number}}``; the target side is
    checked once every collection is known (:func:`_check_relations`)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(f"{where}.relations", "expected a mapping of name: {collection, on}")
        return {}
    out: dict[str, Relation] = {}
    for name, body in raw.items():
        at = f"{where}.relations.{name}"
        if not _NAME.match(str(name)) or not isinstance(body, dict) or set(body) != {
                "collection", "key"}:
            problems.add(at, "expected name: {collection: C, key: FIELD}")
            continue
        key = str(body["key"])
        f = fields.get(key)
        if f is None:
            problems.add(f"{at}.key", f"no field {key!r} in this collection")
        elif f.encrypted:
            problems.add(f"{at}.key", "relation keys must be public or internal fields")
        else:
            out[str(name)] = Relation(str(name), str(body["collection"]), key)
    return out


def _check_relations(collections: dict[str, CollectionSpec], problems: _Problems) -> None:
    for spec in collections.values():
        for r in spec.relations.values():
            at = f"collections.{spec.name}.relations.{r.name}"
            target = collections.get(r.collection)
            if target is None:
                problems.add(f"{at}.collection", f"unknown collection {r.collection!r}")
                continue
            f = target.fields.get(r.key)
            if f is None or f.encrypted:
                problems.add(f"{at}.key", f"{r.collection} has no public or internal field "
                                          f"{r.key!r}")


def _retention(
    where: str, raw: Any, fields: dict[str, FieldSpec], purposes: dict[str, Purpose],
    problems: _Problems,
) -> RetentionRule | None:
    where = f"{where}.retention"
    if not isinstance(raw, dict):
        problems.add(where, "expected a mapping with 'period' and 'from'")
        return None
    period = raw.get("period")
    start = raw.get("from")
    if period is not None and (not isinstance(period, str) or not _PERIOD.match(period)
                               or period == "P"):
        problems.add(f"{where}.period", "expected an ISO 8601 period such as P7Y, P2Y6M or P90D")
    if period is None and start != "consent_withdrawn":
        problems.add(f"{where}.period", "required unless the data is kept until consent_withdrawn")
    ok_start = start in RETENTION_EVENTS or (
        start in fields and fields[start].type in (FieldType.DATE, FieldType.DATETIME)
    )
    if not ok_start:
        problems.add(f"{where}.from",
                     f"expected a date field of the collection or one of: "
                     f"{', '.join(sorted(RETENTION_EVENTS))}")
    for key in raw:
        if key not in {"period", "from", "description", "when", "purpose", "statutory"}:
            problems.add(f"{where}.{key}", "unknown retention key")
    when = raw.get("when") or {}
    if not isinstance(when, dict):
        problems.add(f"{where}.when", "expected a mapping of field: value")
        when = {}
    for fname in when:
        f = fields.get(fname)
        if f is None or f.encrypted:
            problems.add(f"{where}.when.{fname}",
                         "expected a declared field classified public or internal")
    consent_purpose = raw.get("purpose")
    if start == "consent_withdrawn":
        if consent_purpose not in purposes or not purposes[consent_purpose].consent_required:
            problems.add(f"{where}.purpose",
                         "required with from: consent_withdrawn: a consent-based purpose")
    elif consent_purpose is not None:
        problems.add(f"{where}.purpose", "only used with from: consent_withdrawn")
    return RetentionRule(period=period, start=str(start),
                         description=str(raw.get("description", "")), when=dict(when),
                         consent_purpose=consent_purpose,
                         statutory=str(raw.get("statutory") or ""))


def _number(raw: Any, where: str, problems: _Problems) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        problems.add(where, "expected a number")
        return None
    return float(raw)


def _field(
    cwhere: str,
    name: str,
    body: Any,
    default_purposes: set[str] | None,
    purposes: dict[str, Purpose],
    problems: _Problems,
) -> FieldSpec | None:
    where = f"{cwhere}.fields.{name}"
    if not _NAME.match(name):
        problems.add(where, "field names are lower_snake_case")
        return None
    if name in _RESERVED:
        problems.add(where, f"{name!r} is reserved for record metadata")
        return None
    if not isinstance(body, dict):
        problems.add(where, "expected a mapping")
        return None
    for key in body:
        if key not in _FIELD_KEYS:
            problems.add(f"{where}.{key}", "unknown field key")
    ftype = _enum(FieldType, body.get("type"), f"{where}.type", "type", problems)
    cls = _enum(Classification, body.get("classification"), f"{where}.classification",
                "classification", problems)
    if "purposes" in body:
        fpurposes = _purpose_set(body["purposes"], f"{where}.purposes", purposes, problems)
    elif default_purposes is not None:
        fpurposes = set(default_purposes)
    else:
        problems.add(f"{where}.purposes", "required (or declare purposes on the collection)")
        fpurposes = set()
    fmt = body.get("format")
    if fmt is not None and fmt not in FORMATS:
        problems.add(f"{where}.format", f"unknown format {fmt!r} "
                                        f"(allowed: {', '.join(sorted(FORMATS))})")
    if fmt is not None and ftype not in (FieldType.STRING, None):
        problems.add(f"{where}.format", "formats apply to string fields only")
    values = body.get("values") or []
    if ftype is FieldType.ENUM and (not isinstance(values, list) or not values):
        problems.add(f"{where}.values", "an enum needs a non-empty list of values")
    masking = body.get("masking", "clear")
    if masking not in MASKING_STRATEGIES:
        problems.add(f"{where}.masking", f"unknown masking {masking!r} "
                                         f"(allowed: {', '.join(sorted(MASKING_STRATEGIES))})")
    searchable = body.get("searchable", False)
    if not isinstance(searchable, bool):
        problems.add(f"{where}.searchable", "expected true or false")
    if searchable is True and ftype is FieldType.TEXT:
        problems.add(f"{where}.searchable", "free text cannot be searched by equality")
    required = body.get("required", False)
    if not isinstance(required, bool):
        problems.add(f"{where}.required", "expected true or false")
    max_length = body.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        problems.add(f"{where}.max_length", "expected a positive integer")
    subject_attribute = body.get("subject_attribute", False)
    if subject_attribute is True and cls is not None and cls.encrypted:
        problems.add(f"{where}.subject_attribute",
                     "only public or internal fields can be subject attributes")
    if ftype is None or cls is None:
        return None
    return FieldSpec(
        subject_attribute=subject_attribute is True,
        name=name,
        type=ftype,
        classification=cls,
        purposes=frozenset(fpurposes),
        format=fmt if fmt in FORMATS else None,
        searchable=searchable is True,
        required=required is True,
        masking=str(masking),
        values=tuple(str(v) for v in values) if isinstance(values, list) else (),
        minimum=_number(body.get("min"), f"{where}.min", problems),
        maximum=_number(body.get("max"), f"{where}.max", problems),
        max_length=max_length if isinstance(max_length, int) else None,
        description=str(body.get("description", "")),
    )
