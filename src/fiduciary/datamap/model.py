"""The data map: what Fiduciary may hold, why, how sensitive it is, and for how long."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any


class Classification(StrEnum):
    """Sensitivity, in ascending order; everything from ``personal`` up is encrypted at rest."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    FINANCIAL = "financial"
    GOVERNMENT_ID = "government_id"
    SPECIAL_CATEGORY = "special_category"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def encrypted(self) -> bool:
        return _RANK[self] >= _RANK[Classification.PERSONAL]


# On the hot path of every read and write: computed once.
_RANK = {c: i for i, c in enumerate(Classification)}


class FieldType(StrEnum):
    STRING = "string"
    TEXT = "text"
    DATE = "date"
    DATETIME = "datetime"
    INTEGER = "integer"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    ENUM = "enum"


class LawfulBasis(StrEnum):
    """GDPR Art. 6(1)."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


class SpecialCategoryCondition(StrEnum):
    """GDPR Art. 9(2): required in addition to a lawful basis for special-category data."""

    EXPLICIT_CONSENT = "explicit_consent"
    EMPLOYMENT_SOCIAL_SECURITY = "employment_social_security"
    VITAL_INTERESTS = "vital_interests"
    LEGAL_CLAIMS = "legal_claims"
    SUBSTANTIAL_PUBLIC_INTEREST = "substantial_public_interest"
    HEALTH_CARE = "health_care"
    PUBLIC_HEALTH = "public_health"


#: Masking strategies a field may declare (applied by the access layer).
MASKING_STRATEGIES = frozenset(
    {"clear", "redact", "last4", "last3", "state_last3", "year_only", "email", "initial",
     "token"}
)

#: Retention clocks that are not a field of the collection.
RETENTION_EVENTS = frozenset(
    {"created", "updated", "last_policy_or_claim_end", "consent_withdrawn"}
)


@dataclass(frozen=True)
class Purpose:
    name: str
    description: str = ""
    consent_required: bool = False
    pseudonymised_only: bool = False


@dataclass(frozen=True)
class RetentionRule:
    """Keep for ``period`` (ISO 8601 duration such as ``P7Y``) counted from ``start``.

    ``when`` limits the rule to records whose clear fields equal the given values (declined
    quotes); other records of the collection fall under the subject's rule. A rule counted from
    ``consent_withdrawn`` runs from the withdrawal of consent to ``consent_purpose``."""

    period: str | None
    start: str
    description: str = ""
    when: dict[str, Any] = field(default_factory=dict)
    consent_purpose: str | None = None
    #: The law that obliges the insurer to keep these records for the period (not merely
    #: allows it): an erasure request keeps them until the period ends (GDPR Art. 17(3)(b),(e)).
    statutory: str = ""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    classification: Classification
    purposes: frozenset[str]
    format: str | None = None
    searchable: bool = False
    required: bool = False
    masking: str = "clear"
    values: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    description: str = ""
    #: Copied onto the subject, so access conditions can test it (vip, employee, region).
    subject_attribute: bool = False

    @cached_property
    def encrypted(self) -> bool:
        return self.classification.encrypted

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type.value,
            "classification": self.classification.value,
            "purposes": sorted(self.purposes),
            "searchable": self.searchable,
            "required": self.required,
            "masking": self.masking,
            "encrypted": self.encrypted,
        }
        if self.format:
            out["format"] = self.format
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class Relation:
    """``name``: the record of ``collection``, of the same subject, whose ``key`` field equals
    this record's ``key`` field (a claim note's claim: ``claims`` by ``claim_number``). Keys are
    clear fields, so following a relation never decrypts."""

    name: str
    collection: str
    key: str


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    lawful_basis: LawfulBasis
    retention: RetentionRule
    fields: dict[str, FieldSpec]
    description: str = ""
    special_category_condition: SpecialCategoryCondition | None = None
    #: GDPR Art. 30(1)(c): categories of data subjects (records of processing).
    subject_categories: tuple[str, ...] = ("customers",)
    #: Records this one belongs to, by name (policy conditions follow them: ``related.*``).
    relations: Mapping[str, Relation] = field(default_factory=dict)

    @property
    def searchable_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields.values() if f.searchable]

    @property
    def required_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields.values() if f.required]

    @property
    def subject_attributes(self) -> list[str]:
        return [f.name for f in self.fields.values() if f.subject_attribute]


#: Kinds of recipients outside the insurer (GDPR Art. 30(1)(d)).
RECIPIENT_KINDS = frozenset({"processor", "controller", "joint_controller", "public_authority"})


@dataclass(frozen=True)
class ThirdParty:
    """A recipient outside the insurer: reinsurer, claims administrator, regulator."""

    name: str
    kind: str
    purposes: frozenset[str]
    collections: frozenset[str]
    country: str = ""
    transfer_safeguard: str = ""
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "purposes": sorted(self.purposes),
                "collections": sorted(self.collections), "country": self.country,
                "transfer_safeguard": self.transfer_safeguard,
                "description": self.description}


@dataclass(frozen=True)
class DataMap:
    purposes: dict[str, Purpose]
    collections: dict[str, CollectionSpec]
    source: str = "<default>"
    extras: dict[str, Any] = field(default_factory=dict)
    third_parties: tuple[ThirdParty, ...] = ()
    #: Name and contact details of the controller and its DPO (Art. 30(1)(a)).
    controller: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "purposes": {
                p.name: {
                    "description": p.description,
                    "consent_required": p.consent_required,
                    "pseudonymised_only": p.pseudonymised_only,
                }
                for p in self.purposes.values()
            },
            "collections": {
                c.name: {
                    "description": c.description,
                    "lawful_basis": c.lawful_basis.value,
                    "special_category_condition": (
                        c.special_category_condition.value
                        if c.special_category_condition
                        else None
                    ),
                    "retention": {"period": c.retention.period, "from": c.retention.start,
                                  **({"when": c.retention.when} if c.retention.when else {}),
                                  **({"statutory": c.retention.statutory}
                                     if c.retention.statutory else {})},
                    "fields": {f.name: f.as_dict() for f in c.fields.values()},
                    **({"relations": {r.name: {"collection": r.collection, "key": r.key}
                                      for r in c.relations.values()}} if c.relations else {}),
                }
                for c in self.collections.values()
            },
        }
