"""Policy as code: which role may do what to which field, for which purpose, under which
conditions, with which masking — and the one decision every data path asks for.

A field without a grant is denied. Reasons (stable codes shown to callers):
``purpose_not_allowed``, ``field_not_permitted``, ``condition_failed``, ``training_expired``,
``training_missing``, ``consent_required``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml

from fiduciary.access.masking import REVEAL_ORDER, partial_strategies
from fiduciary.datamap import Classification, CollectionSpec, DataMap, LawfulBasis
from fiduciary.errors import FieldProblem, PolicyInvalid
from fiduciary.principal import Permission

#: ``verify``: confirm a value the caller was given (a caller's date of birth) matches the
#: record, without seeing it.
ACTIONS = ("read", "search", "write", "delete", "export", "import", "verify")
MASKINGS = frozenset(REVEAL_ORDER) | partial_strategies()
PERMISSIONS = frozenset(Permission)
DEFAULT_POLICY = "default_policy.yaml"

# Reasons, most telling first: the one a fully denied request reports.
REASON_PRIORITY = ("training_expired", "training_missing", "consent_required",
                   "purpose_not_allowed", "condition_failed", "field_not_permitted")


class FieldDecision(NamedTuple):
    """``masking`` is set when allowed (clear, partial, token, redact); else ``reason``."""

    masking: str | None
    reason: str | None
    partial: str = "redact"


class Actor(Protocol):
    """What the policy needs to know about whoever is asking."""

    @property
    def id(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def roles(self) -> tuple[str, ...]: ...
    @property
    def regions(self) -> tuple[str, ...]: ...
    @property
    def is_person(self) -> bool: ...
    @property
    def is_system(self) -> bool: ...
    @property
    def training_current(self) -> bool: ...
    @property
    def training_blocked(self) -> Mapping[str, str]: ...
    @property
    def scopes(self) -> frozenset[str] | None: ...
    def break_glass_covers(self, subject_id: str) -> bool: ...


class ConsentChecker(Protocol):
    def has_consent(self, subject_id: str, purpose: str) -> bool:
        """Whether the subject's current consent covers ``purpose``."""
        ...


class RelatedRecords(Protocol):
    """What relationship conditions read: the clear (public and internal) fields of a
    subject's records in a collection. Never a sealed field: deciding never decrypts."""

    def records(self, subject_id: str, collection: str) -> Sequence[Mapping[str, Any]]: ...


class _Relations:
    """One decision's view of the records related to the record being decided."""

    __slots__ = ("_lookup", "_record", "_spec", "_subject_id")

    def __init__(self, lookup: RelatedRecords | None, spec: CollectionSpec,
                 record: Mapping[str, Any], subject_id: str | None) -> None:
        self._lookup, self._spec, self._record = lookup, spec, record
        self._subject_id = subject_id

    def records(self, collection: str) -> Sequence[Mapping[str, Any]]:
        if self._lookup is None or self._subject_id is None:
            return ()
        return self._lookup.records(self._subject_id, collection)

    def via(self, name: str) -> Mapping[str, Any]:
        """The related record (empty when there is none: every condition on it then fails,
        but ``!=``, which holds)."""
        relation = self._spec.relations.get(name)
        key = self._record.get(relation.key) if relation else None
        if relation is None or key is None:
            return {}
        return next((r for r in self.records(relation.collection)
                     if r.get(relation.key) == key), {})


class NoConsentLedger:
    """Until the consent ledger exists, consent-based purposes are always denied."""

    def has_consent(self, subject_id: str, purpose: str) -> bool:
        return False


# -- conditions --------------------------------------------------------------------------------
# A condition reads the record (``record.f``), a record related to it (``related.claim.f``), the
# subject's attributes (``subject.f``), the caller (``principal.f``), or whether the subject has
# a record matching conditions of its own (``subject.has(claims where f == x and g != y)``).
_OP = r"\s*(==|!=|not in|in)\s*(.+?)\s*$"
_COND = re.compile(r"^\s*(record|subject|principal)\.([a-z_][a-z0-9_]*)" + _OP)
_RELATED = re.compile(r"^\s*related\.([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)" + _OP)
_HAS = re.compile(r"^\s*subject\.has\(\s*([a-z_][a-z0-9_]*)\s+where\s+(.+)\)\s*$")
_REF = re.compile(r"^(record|subject|principal)\.([a-z_][a-z0-9_]*)$")
#: (record, subject, principal) and, where relationships are known, their ``_Relations``.
Context = tuple[Any, ...]
_SCOPE = {"record": 0, "subject": 1, "principal": 2}
_NO_RELATIONS: Sequence[Mapping[str, Any]] = ()


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.startswith("["):
        loaded = yaml.safe_load(text)
        if isinstance(loaded, list):
            return loaded
    raise ValueError(f"cannot read value {text!r}")


def _compare(left: Callable[[Context], Any], op: str, rhs: str,
             refs: list[tuple[str, str]]) -> Callable[[Context], bool]:
    ref = _REF.match(rhs)
    if ref:
        refs.append((ref.group(1), ref.group(2)))
        right_scope, right_name = _SCOPE[ref.group(1)], ref.group(2)

        def operand(ctx: Context) -> Any:
            return ctx[right_scope].get(right_name)
    else:
        value = _literal(rhs)

        def operand(ctx: Context) -> Any:
            return value

    def test(ctx: Context) -> bool:
        a, b = left(ctx), operand(ctx)
        if op == "==":
            # Two missing values are not a match (an unassigned claim is nobody's).
            return bool(a == b and a is not None)
        if op == "!=":
            return bool(a != b)
        inside = isinstance(b, list | tuple | set | frozenset) and a is not None and a in b
        return inside if op == "in" else not inside

    return test


def compile_condition(text: str) -> tuple[Callable[[Context], bool], list[tuple[str, str]]]:
    """Parse one condition; returns the test and the attributes it reads, as (scope, name)
    with scopes ``record``, ``subject``, ``principal``, ``related:RELATION`` and
    ``has:COLLECTION``."""
    refs: list[tuple[str, str]] = []
    m = _COND.match(text)
    if m:
        scope, name, op, rhs = m.groups()
        refs.append((scope, name))
        at = _SCOPE[scope]
        return _compare(lambda ctx: ctx[at].get(name), op, rhs, refs), refs
    m = _RELATED.match(text)
    if m:
        relation, name, op, rhs = m.groups()
        refs.append((f"related:{relation}", name))

        def related(ctx: Context) -> Any:
            return ctx[3].via(relation).get(name) if len(ctx) > 3 else None
        return _compare(related, op, rhs, refs), refs
    m = _HAS.match(text)
    if m:
        collection, body = m.groups()
        inner = []
        for part in body.split(" and "):
            test, inner_refs = compile_condition("record." + part.strip())
            inner.append(test)
            refs.extend((f"has:{collection}", n) if s == "record" else (s, n)
                        for s, n in inner_refs)

        def has(ctx: Context) -> bool:
            rows = ctx[3].records(collection) if len(ctx) > 3 else _NO_RELATIONS
            return any(all(t((r, ctx[1], ctx[2])) for t in inner) for r in rows)
        return has, refs
    raise ValueError("expected 'record|subject|principal.name OP value', "
                     "'related.RELATION.name OP value' or "
                     "'subject.has(COLLECTION where name OP value and …)' with OP one of "
                     "==, !=, in, not in")


@dataclass(frozen=True)
class Grant:
    role: str
    index: int
    collections: frozenset[str]
    fields: frozenset[str] | None  # None: every field
    actions: frozenset[str]
    purposes: frozenset[str] | None  # None: every purpose the data map allows
    masking: Mapping[str, str]
    default_masking: str
    conditions: tuple[Callable[[Context], bool], ...]
    condition_text: tuple[str, ...]

    def masking_for(self, field_name: str) -> str:
        return self.masking.get(field_name, self.default_masking)


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    permissions: frozenset[str]
    sees_vip: bool
    sees_employees: bool
    grants: tuple[Grant, ...]


@dataclass(frozen=True)
class PolicySettings:
    required_training: tuple[str, ...] = ("data-protection",)
    training_validity_days: int = 365
    idle_minutes: int = 15
    absolute_hours: int = 8
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    password_min_length: int = 12
    break_glass_max_minutes: int = 60
    break_glass_min_justification: int = 20
    #: Subjects one break-glass grant may name, and grants a user may take in 30 days.
    break_glass_max_subjects: int = 3
    break_glass_per_month: int = 5
    #: Searches a staff user may run in a sliding minute and day (0: unlimited).
    search_per_minute: int = 60
    search_per_day: int = 1000
    #: Verifications a staff user may make of one record, and in all, per day.
    verify_per_record_per_day: int = 3
    verify_per_day: int = 100


@dataclass(frozen=True)
class PolicyPack:
    roles: dict[str, Role]
    settings: PolicySettings = field(default_factory=PolicySettings)
    source: str = "<default>"
    #: The YAML text it was loaded from (its digest is audited when it changes).
    text: str = ""


# -- loading -----------------------------------------------------------------------------------
def load_policy(path: Path | None, datamap: DataMap) -> PolicyPack:
    if path is None:
        text = resources.files("fiduciary.access").joinpath(DEFAULT_POLICY).read_text("utf-8")
        return parse_policy(text, f"<package>/{DEFAULT_POLICY}", datamap)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PolicyInvalid(f"{path}: cannot read policy ({exc.strerror})",
                            [FieldProblem(str(path), "cannot read file")]) from None
    return parse_policy(text, str(path), datamap)


def parse_policy(text: str, source: str, datamap: DataMap) -> PolicyPack:
    problems: list[FieldProblem] = []

    def bad(where: str, reason: str) -> None:
        problems.append(FieldProblem(f"{source}: {where}", reason))

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        bad(f"line {mark.line + 1}" if mark else "document", "not valid YAML")
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("roles"), dict):
        if not problems:
            bad("roles", "expected a mapping of roles")
        _raise(problems)
    settings = _settings(doc.get("settings") or {}, bad)
    roles: dict[str, Role] = {}
    for name, body in doc["roles"].items():
        role = _role(str(name), body, datamap, bad)
        if role:
            roles[role.name] = role
    _raise(problems)
    return PolicyPack(roles=roles, settings=settings, source=source, text=text)


def _raise(problems: list[FieldProblem]) -> None:
    if problems:
        raise PolicyInvalid("policy invalid: " + "; ".join(f"{p.field}: {p.reason}"
                                                           for p in problems), problems)


def _settings(raw: Any, bad: Callable[[str, str], None]) -> PolicySettings:
    if not isinstance(raw, dict):
        bad("settings", "expected a mapping")
        return PolicySettings()
    defaults = PolicySettings()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(defaults, key):
            bad(f"settings.{key}", "unknown setting")
        elif key == "required_training":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad(f"settings.{key}", "expected a list of course names")
            else:
                values[key] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            bad(f"settings.{key}", "expected a whole number")
        else:
            values[key] = value
    if values.get("break_glass_max_minutes", 60) > 60:
        bad("settings.break_glass_max_minutes", "at most 60")
    return PolicySettings(**values)


def _role(name: str, body: Any, dm: DataMap, bad: Callable[[str, str], None]) -> Role | None:
    where = f"roles.{name}"
    if not isinstance(body, dict):
        bad(where, "expected a mapping")
        return None
    perms = body.get("permissions") or []
    for p in perms:
        if p not in PERMISSIONS:
            bad(f"{where}.permissions", f"unknown permission {p!r}")
    grants = []
    for i, g in enumerate(body.get("grants") or []):
        grant = _grant(name, i, g, dm, bad)
        if grant:
            grants.append(grant)
    return Role(name=name, description=str(body.get("description", "")),
                permissions=frozenset(p for p in perms if p in PERMISSIONS),
                sees_vip=body.get("sees_vip") is True,
                sees_employees=body.get("sees_employees") is True, grants=tuple(grants))


def _names(raw: Any, allowed: Iterable[str], where: str, what: str,
           bad: Callable[[str, str], None]) -> frozenset[str] | None:
    if raw == "*":
        return None
    if not isinstance(raw, list) or not raw:
        bad(where, f"expected '*' or a non-empty list of {what}")
        return frozenset()
    known = set(allowed)
    for x in raw:
        if x not in known:
            bad(where, f"unknown {what[:-1]} {x!r}")
    return frozenset(str(x) for x in raw if x in known)


def _grant(role: str, i: int, g: Any, dm: DataMap,
           bad: Callable[[str, str], None]) -> Grant | None:
    where = f"roles.{role}.grants[{i}]"
    if not isinstance(g, dict):
        bad(where, "expected a mapping")
        return None
    for key in g:
        if key not in {"collections", "fields", "actions", "purposes", "masking", "when"}:
            bad(f"{where}.{key}", "unknown grant key")
    collections = _names(g.get("collections"), dm.collections, f"{where}.collections",
                         "collections", bad)
    colls = frozenset(dm.collections) if collections is None else collections
    all_fields = {f for c in colls for f in dm.collections[c].fields}
    fields = _names(g.get("fields", "*"), all_fields, f"{where}.fields", "fields", bad)
    actions = _names(g.get("actions"), ACTIONS, f"{where}.actions", "actions", bad)
    purposes = _names(g.get("purposes"), dm.purposes, f"{where}.purposes", "purposes", bad)
    raw_mask = g.get("masking", "clear")
    default_mask = "clear"
    masking: dict[str, str] = {}
    if isinstance(raw_mask, str):
        default_mask = raw_mask
    elif isinstance(raw_mask, dict):
        default_mask = str(raw_mask.get("default", "clear"))
        masking = {str(k): str(v) for k, v in raw_mask.items() if k != "default"}
        for k in masking:
            if k not in all_fields:
                bad(f"{where}.masking.{k}", "not a field of the grant's collections")
    else:
        bad(f"{where}.masking", "expected a masking name or a mapping of field: masking")
    for k, v in [("default", default_mask), *masking.items()]:
        if v not in MASKINGS:
            bad(f"{where}.masking.{k}", f"unknown masking {v!r} "
                                        f"(allowed: {', '.join(sorted(MASKINGS))})")
    conditions = []
    texts = g.get("when") or []
    if not isinstance(texts, list):
        bad(f"{where}.when", "expected a list of conditions")
        texts = []
    for j, text in enumerate(texts):
        try:
            test, refs = compile_condition(str(text))
        except ValueError as exc:
            bad(f"{where}.when[{j}]", str(exc))
            continue
        for scope, attr in refs:
            for c, target in _read_collections(scope, colls, dm):
                if target is None:
                    bad(f"{where}.when[{j}]", f"collection {c!r} has no relation "
                                              f"{scope.split(':')[1]!r}")
                    continue
                f = dm.collections[target].fields.get(attr)
                if f is None:
                    bad(f"{where}.when[{j}]", f"collection {target!r} has no field {attr!r}")
                elif f.encrypted:
                    bad(f"{where}.when[{j}]",
                        f"{target}.{attr} is encrypted; conditions may use only public or "
                        "internal fields")
            if scope == "principal" and attr not in {"id", "username", "roles", "regions"}:
                bad(f"{where}.when[{j}]", f"principal has no attribute {attr!r} "
                                          "(id, username, roles, regions)")
        conditions.append(test)
    return Grant(role=role, index=i, collections=colls, fields=fields,
                 actions=actions or frozenset(), purposes=purposes, masking=masking,
                 default_masking=default_mask, conditions=tuple(conditions),
                 condition_text=tuple(str(t) for t in texts))


def _read_collections(scope: str, colls: Iterable[str],
                      dm: DataMap) -> list[tuple[str, str | None]]:
    """(grant collection, collection whose field the condition reads) for a reference."""
    if scope == "record":
        return [(c, c) for c in colls]
    if scope.startswith("related:"):
        name = scope.split(":", 1)[1]
        return [(c, r.collection if (r := dm.collections[c].relations.get(name)) else None)
                for c in colls]
    if scope.startswith("has:"):
        target = scope.split(":", 1)[1]
        return [(target, target if target in dm.collections else None)]
    return []


# -- deciding ----------------------------------------------------------------------------------
class PolicyEngine:
    """Decides, per field, whether and how an actor may act, from a compiled policy pack."""

    def __init__(self, pack: PolicyPack, datamap: DataMap,
                 consent: ConsentChecker | None = None) -> None:
        self.pack = pack
        self.datamap = datamap
        self.consent: ConsentChecker = consent or NoConsentLedger()
        self._grants: dict[tuple[str, str, str], tuple[Grant, ...]] = {}
        for role in pack.roles.values():
            for g in role.grants:
                for c in g.collections:
                    for a in g.actions:
                        key = (role.name, c, a)
                        self._grants[key] = (*self._grants.get(key, ()), g)

    def pseudonymised_only(self, actor: Actor) -> bool:
        """Whether every data grant of the actor serves pseudonymised-only purposes (the
        actuary): such a role never sees anybody in clear, break-glass included."""
        grants = [g for r in actor.roles if r in self.pack.roles
                  for g in self.pack.roles[r].grants]
        return bool(grants) and all(
            g.purposes is not None
            and all(self.datamap.purposes[p].pseudonymised_only for p in g.purposes)
            for g in grants)

    def permissions(self, roles: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for r in roles:
            role = self.pack.roles.get(r)
            if role:
                out |= role.permissions
        return frozenset(out)

    def has_any_grant(self, actor: Actor, actions: Iterable[str]) -> bool:
        wanted = set(actions) if actor.scopes is None else set(actions) & actor.scopes
        return any((r, c, a) in self._grants for r in actor.roles
                   for c in self.datamap.collections for a in wanted)

    def reaches_everyone(self, actor: Actor) -> bool:
        """Whether some read grant of the actor's holds for every record (no condition): then
        every subject is within its reach (an integration, a fraud investigator)."""
        if actor.scopes is not None and "read" not in actor.scopes:
            return False
        return any(not g.conditions for r in actor.roles for c in self.datamap.collections
                   for g in self._grants.get((r, c, "read"), ()))

    def purposes_for(self, actor: Actor, collection: str, action: str) -> list[str]:
        """The purposes the actor's grants name for ``action`` on ``collection`` (every
        purpose of the data map for a grant on all)."""
        out: set[str] = set()
        for r in actor.roles:
            for g in self._grants.get((r, collection, action), ()):
                out |= set(self.datamap.purposes) if g.purposes is None else g.purposes
        return sorted(out)

    def depends_on_record(self, actor: Actor, spec: CollectionSpec, action: str,
                          purpose: str) -> bool:
        """False when a decision for these fields is the same for every record and subject
        (no conditions, no consent, no break-glass) and so can be reused across rows."""
        if self.datamap.purposes[purpose].consent_required or action in ("read", "search"):
            return True
        return any(g.conditions for r in actor.roles
                   for g in self._grants.get((r, spec.name, action), ()))

    def precheck(self, actor: Actor, action: str, spec: CollectionSpec, purpose: str,
                 fields: Iterable[str]) -> dict[str, FieldDecision]:
        """Whether the fields could be permitted at all, before any record is read:
        conditions and consent, which depend on the record and subject, are left for later."""
        return self.decide(actor, action, spec, purpose, fields, {}, {}, None, precheck=True)

    def decide(self, actor: Actor, action: str, spec: CollectionSpec, purpose: str,
               fields: Iterable[str], record: Mapping[str, Any], subject: Mapping[str, Any],
               subject_id: str | None, precheck: bool = False,
               related: RelatedRecords | None = None) -> dict[str, FieldDecision]:
        """One decision per field. ``record`` holds the record's clear (internal) attributes,
        ``subject`` the subject's attributes (vip, employee, region); ``related`` answers
        relationship conditions (without it, they fail: nothing is reached by a relationship
        nobody could check)."""
        scopes = actor.scopes
        grants = () if scopes is not None and action not in scopes else tuple(
            g for r in actor.roles for g in self._grants.get((r, spec.name, action), ()))
        ctx: Context = (record, subject, {"id": actor.id, "username": actor.username,
                                          "roles": list(actor.roles),
                                          "regions": list(actor.regions)},
                        _Relations(related, spec, record, subject_id))
        passed: dict[int, bool] = {}
        purpose_spec = self.datamap.purposes[purpose]
        consent_ok: bool | None = None
        broken_glass = (action in ("read", "search") and subject_id is not None
                        and actor.break_glass_covers(subject_id))
        protected = (bool(subject.get("vip")) and not self._any(actor, "sees_vip")) or (
            bool(subject.get("employee")) and not self._any(actor, "sees_employees"))
        out: dict[str, FieldDecision] = {}
        # Data held on consent serves the purpose consented to, and no other (the operator's
        # own tools aside): no reading marketing preferences "for a legal obligation".
        off_consent = (spec.lawful_basis is LawfulBasis.CONSENT
                       and not purpose_spec.consent_required and not actor.is_system)
        for name in fields:
            f = spec.fields[name]
            partial = f.masking
            if off_consent or purpose not in f.purposes:
                out[name] = FieldDecision(None, "purpose_not_allowed", partial)
                continue
            sensitive = f.classification.rank > Classification.INTERNAL.rank
            # The training gate, per data class: a person's untrained classes stay sealed.
            untrained = actor.training_blocked.get(f.classification) if sensitive else None
            if untrained is not None and actor.is_person:
                out[name] = FieldDecision(None, untrained, partial)
                continue
            if purpose_spec.consent_required and not precheck:
                if consent_ok is None:
                    consent_ok = subject_id is not None and self.consent.has_consent(
                        subject_id, purpose)
                if not consent_ok:
                    out[name] = FieldDecision(None, "consent_required", partial)
                    continue
            if broken_glass:
                # An emergency opens the record, not the protection of a VIP or colleague.
                out[name] = FieldDecision(
                    _protect("clear", partial) if protected and sensitive else "clear",
                    None, partial)
                continue
            best: str | None = None
            reason = "field_not_permitted"
            for g in grants:
                if g.fields is not None and name not in g.fields:
                    continue
                if g.purposes is not None and purpose not in g.purposes:
                    reason = "purpose_not_allowed" if reason == "field_not_permitted" else reason
                    continue
                ok = passed.get(id(g))
                if ok is None:
                    ok = passed[id(g)] = precheck or all(test(ctx) for test in g.conditions)
                if not ok:
                    reason = "condition_failed"
                    continue
                m = g.masking_for(name)
                level = m if m in REVEAL_ORDER else "partial"
                if m not in REVEAL_ORDER:
                    partial = m
                if best is None or REVEAL_ORDER[level] > REVEAL_ORDER[best]:
                    best = level
            if best is None:
                out[name] = FieldDecision(None, reason, partial)
                continue
            if protected and sensitive:
                best = _protect(best, partial)
            out[name] = FieldDecision(best, None, partial)
        return out

    def _any(self, actor: Actor, flag: str) -> bool:
        return any(getattr(self.pack.roles[r], flag) for r in actor.roles
                   if r in self.pack.roles)


def _protect(level: str, partial: str) -> str:
    """VIP and employee records: clear becomes the field's partial form (or redacted)."""
    if level != "clear":
        return level
    return "partial" if partial not in ("clear", "redact") else "redact"


def denial_reason(decisions: Mapping[str, FieldDecision]) -> str:
    """The reason a request of which nothing is permitted reports."""
    reasons = {d.reason for d in decisions.values() if d.reason}
    return next((r for r in REASON_PRIORITY if r in reasons), "field_not_permitted")
