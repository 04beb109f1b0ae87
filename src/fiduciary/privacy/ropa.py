"""Records of processing activities (GDPR Art. 30(1)), built from the configuration in force.

:func:`build_ropa` turns the data map, the policy pack, the keyring's KEK versions and the
settings into one JSON-serialisable register, one processing activity per purpose;
:func:`render_html` turns that register into a self-contained page. Neither reads customer
data: the register names collections and fields, never values.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fiduciary import __version__
from fiduciary.access.policy import ACTIONS, Grant, PolicyEngine
from fiduciary.audit.events import AuditLog, audit_actor
from fiduciary.clock import Clock, iso
from fiduciary.config import Settings
from fiduciary.crypto.keyring import KekVersion, Keyring
from fiduciary.datamap import Classification, CollectionSpec, DataMap, FieldSpec, ThirdParty
from fiduciary.principal import Permission, Principal, require_permission

#: Bumped when the register's JSON shape changes in a way a reader would notice.
ROPA_FORMAT_VERSION = 1

#: EU member states (ISO 3166-1 alpha-2, Greece also as EL) and the other EEA states: a
#: recipient elsewhere is a transfer to a third country (GDPR Chapter V).
EU_EEA = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "EL", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    "IS", "LI", "NO",
})

_CONTROLLER_ORDER = ("name", "address", "contact", "dpo")
# Most sensitive first: the reader's eye goes to special-category data.
_CLASSIFICATIONS = sorted(Classification, key=lambda c: c.rank, reverse=True)


def configuration_digests(datamap: DataMap, policy: PolicyEngine) -> dict[str, str]:
    """Digests of the configuration in force: the runtime audits them as ``config.changed``,
    and a register carries them, so each can be matched to the other."""
    return {
        "datamap_sha256": hashlib.sha256(
            json.dumps(datamap.as_dict(), sort_keys=True).encode()).hexdigest(),
        "policy_sha256": hashlib.sha256(policy.pack.text.encode()).hexdigest(),
    }


def is_third_country(country: str) -> bool:
    """Outside the EU/EEA, or not declared (which a register must not pass over silently)."""
    return country.strip().upper() not in EU_EEA


def build_ropa(datamap: DataMap, policy: PolicyEngine, keyring_versions: Sequence[KekVersion],
               settings: Settings, now: datetime) -> dict[str, Any]:
    """The Art. 30(1) register: controller, one activity per purpose (lawful bases, subjects,
    data, recipients, transfers, retention) and the security measures in force.

    Pure and stable: the same inputs give the same document (lists in data-map declaration
    order or sorted)."""
    digests = configuration_digests(datamap, policy)
    return {
        "format_version": ROPA_FORMAT_VERSION,
        "generator": {"name": "Fiduciary", "version": __version__},
        "generated_at": iso(now),
        "sources": {
            "datamap": {"source": datamap.source, "sha256": digests["datamap_sha256"]},
            "policy": {"source": policy.pack.source, "sha256": digests["policy_sha256"]},
        },
        "controller": _controller(datamap.controller),
        "activities": [_activity(datamap, policy, name) for name in datamap.purposes],
        "third_parties": [third_party(tp, tp.collections) for tp in datamap.third_parties],
        "security_measures": _security_measures(datamap, policy, keyring_versions, settings),
    }


class RopaService:
    """Generates the register for whoever may read the configuration, and leaves the
    ``ropa.generated`` event before the document is handed out (no event, no document)."""

    def __init__(self, datamap: DataMap, policy: PolicyEngine, keyring: Keyring,
                 settings: Settings, clock: Clock, audit: AuditLog) -> None:
        self.datamap, self.policy, self.keyring = datamap, policy, keyring
        self.settings, self.clock, self.audit = settings, clock, audit

    def generate(self, principal: Principal, fmt: str,
                 output: str | None = None) -> dict[str, Any]:
        require_permission(principal, Permission.CONFIG_READ, scope=None)
        doc = build_ropa(self.datamap, self.policy, self.keyring.versions(), self.settings,
                         self.clock.now())
        details = ropa_event_details(doc, fmt)
        if output is not None:
            details["output"] = output
        self.audit.append_committed(self.audit.event(audit_actor(principal), "ropa.generated",
                                                     details=details))
        return doc


def ropa_event_details(ropa: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """What the ``ropa.generated`` audit event records: which configuration, which format."""
    return {"format": fmt, "format_version": ropa["format_version"],
            "activities": len(ropa["activities"]),
            "datamap_sha256": ropa["sources"]["datamap"]["sha256"],
            "policy_sha256": ropa["sources"]["policy"]["sha256"]}


# -- the register ------------------------------------------------------------------------------
def _controller(raw: Mapping[str, str]) -> dict[str, str]:
    keys = [k for k in _CONTROLLER_ORDER if k in raw] + sorted(
        k for k in raw if k not in _CONTROLLER_ORDER)
    return {k: raw[k] for k in keys}


def _fields_for(spec: CollectionSpec, purpose: str) -> list[FieldSpec]:
    return [f for f in spec.fields.values() if purpose in f.purposes]


def _activity(datamap: DataMap, policy: PolicyEngine, name: str) -> dict[str, Any]:
    purpose = datamap.purposes[name]
    used = {c.name: fs for c in datamap.collections.values() if (fs := _fields_for(c, name))}
    specs = [datamap.collections[c] for c in used]
    collections = []
    for spec in specs:
        special = any(f.classification is Classification.SPECIAL_CATEGORY for f in used[spec.name])
        collections.append({
            "name": spec.name, "description": spec.description,
            "lawful_basis": spec.lawful_basis.value,
            "special_category_condition": (
                spec.special_category_condition.value
                if special and spec.special_category_condition else None),
            "subject_categories": list(spec.subject_categories),
        })
    bases = {c["lawful_basis"] for c in collections}
    if purpose.consent_required:
        # The policy engine refuses the purpose without the subject's current consent.
        bases.add("consent")
    third_parties = [third_party(tp, tp.collections & used.keys())
                     for tp in datamap.third_parties if name in tp.purposes]
    return {
        "purpose": name,
        "description": purpose.description,
        "consent_required": purpose.consent_required,
        "pseudonymised_only": purpose.pseudonymised_only,
        "lawful_bases": sorted(bases),
        "special_category_conditions": [
            {"collection": c["name"], "condition": c["special_category_condition"]}
            for c in collections if c["special_category_condition"]],
        "subject_categories": sorted({s for spec in specs for s in spec.subject_categories}),
        "collections": collections,
        "data_categories": _data_categories(used),
        "recipients": {
            "roles": _roles(policy, name, used.keys()),
            "third_parties": third_parties,
        },
        "transfers": [
            {"recipient": tp["name"], "kind": tp["kind"], "country": tp["country"],
             "transfer_safeguard": tp["transfer_safeguard"], "collections": tp["collections"]}
            for tp in third_parties if tp["third_country"]],
        "retention": [retention_rule(spec) for spec in specs],
    }


def _data_categories(used: Mapping[str, list[FieldSpec]]) -> list[dict[str, Any]]:
    out = []
    for cls in _CLASSIFICATIONS:
        groups = [{"collection": c, "fields": [f.name for f in fs if f.classification is cls]}
                  for c, fs in used.items()]
        groups = [g for g in groups if g["fields"]]
        if groups:
            out.append({"classification": cls.value, "encrypted": cls.encrypted,
                        "collections": groups})
    return out


def _grant_applies(grant: Grant, purpose: str, collections: Iterable[str]) -> bool:
    return (grant.purposes is None or purpose in grant.purposes) and bool(
        grant.collections & set(collections))


def _roles(policy: PolicyEngine, purpose: str, collections: Iterable[str]
           ) -> list[dict[str, Any]]:
    used = set(collections)
    out = []
    for role in policy.pack.roles.values():
        grants = [g for g in role.grants if _grant_applies(g, purpose, used)]
        if not grants:
            continue
        actions = {a for g in grants for a in g.actions}
        out.append({
            "role": role.name,
            "description": role.description,
            "actions": [a for a in ACTIONS if a in actions],
            "collections": sorted({c for g in grants for c in g.collections} & used),
            "masking": _maskings(grants),
            "conditions": sorted({t for g in grants for t in g.condition_text}),
        })
    return sorted(out, key=lambda r: r["role"])


def _maskings(grants: Iterable[Grant]) -> list[str]:
    return sorted({m for g in grants for m in (g.default_masking, *g.masking.values())})


def third_party(tp: ThirdParty, collections: Iterable[str]) -> dict[str, Any]:
    return {"name": tp.name, "kind": tp.kind, "description": tp.description,
            "country": tp.country, "third_country": is_third_country(tp.country),
            "transfer_safeguard": tp.transfer_safeguard, "purposes": sorted(tp.purposes),
            "collections": sorted(collections)}


def retention_rule(spec: CollectionSpec) -> dict[str, Any]:
    rule = spec.retention
    return {"collection": spec.name, "period": rule.period, "from": rule.start,
            "when": dict(sorted(rule.when.items())), "description": rule.description,
            "until_consent_withdrawn": rule.start == "consent_withdrawn",
            "consent_purpose": rule.consent_purpose}


def _security_measures(datamap: DataMap, policy: PolicyEngine,
                       versions: Sequence[KekVersion], settings: Settings) -> dict[str, Any]:
    fields = [f for c in datamap.collections.values() for f in c.fields.values()]
    states: dict[str, int] = {}
    for v in versions:
        states[v.state] = states.get(v.state, 0) + 1
    active = [v.version for v in versions if v.state == "active"]
    s = policy.pack.settings
    roles = sorted(policy.pack.roles.values(), key=lambda r: r.name)
    return {
        "field_encryption": {
            "algorithm": "AES-256-GCM",
            "keys": "a data-encryption key per data subject, wrapped by the key-encryption key; "
                    "destroying it erases the subject's data everywhere (crypto-shredding)",
            "associated_data": "collection, record id, field name and key version",
            "encrypted_classifications": [c.value for c in Classification if c.encrypted],
            "encrypted_fields": sum(f.encrypted for f in fields),
            "kek_versions": len(versions),
            "kek_active_version": max(active) if active else None,
            "kek_versions_by_state": dict(sorted(states.items())),
        },
        "blind_indexes": {
            "algorithm": "HMAC-SHA256",
            "key": "derived from the keyring, separate from every data key",
            "searchable_encrypted_fields": sum(f.encrypted and f.searchable for f in fields),
        },
        "access_control": {
            "mfa_required": True,
            "second_factor": "TOTP, at every staff login",
            "required_training": list(s.required_training),
            "training_validity_days": s.training_validity_days,
            "session_idle_minutes": s.idle_minutes,
            "session_absolute_hours": s.absolute_hours,
            "lockout_attempts": s.lockout_attempts,
            "lockout_minutes": s.lockout_minutes,
            "password_min_length": s.password_min_length,
            "break_glass_max_minutes": s.break_glass_max_minutes,
            "break_glass_min_justification": s.break_glass_min_justification,
            "roles": len(roles),
            "roles_without_customer_data": [r.name for r in roles if not r.grants],
            "staff_searches_per_minute": s.search_per_minute,
            "staff_searches_per_day": s.search_per_day,
            # Off only in a one-person privacy office: the register says so.
            "privacy_office_two_person_rule": settings.privacy_two_person,
        },
        "audit_trail": {
            "log": "append-only RFC 9162 Merkle tree; every data access audited in the same "
                   "transaction",
            "checkpoints": "Ed25519-signed",
            "checkpoint_every_events": settings.audit_checkpoint_events,
            "checkpoint_every_seconds": settings.audit_checkpoint_seconds,
            "retention_days": settings.audit_retention_days,
        },
        "masking": {
            "fields_with_partial_masking": sum(f.masking != "clear" for f in fields),
            "by_role": [{"role": r.name, "masking": _maskings(r.grants)}
                        for r in roles if r.grants],
            "vip_and_employee_records_in_clear_for": [
                r.name for r in roles if r.sees_vip or r.sees_employees],
        },
    }


# -- HTML --------------------------------------------------------------------------------------
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;margin:2rem auto;
max-width:72rem;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #2b4c7e;
padding-bottom:.2rem}h3{margin:1.2rem 0 .4rem;font-size:1rem;color:#2b4c7e}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
th,td{border:1px solid #ccd3de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef2f8;font-weight:600}th[scope=row]{width:16rem}
.meta{color:#5b6675;font-size:.9rem}.none{color:#8a94a3;font-style:italic}
.tag{display:inline-block;background:#fde8cf;border-radius:3px;padding:0 .35rem;font-size:.85rem}
section.activity{page-break-inside:avoid}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(value: Any) -> str:
    """A cell: lists joined, booleans as yes/no, nothing as a dash — always escaped."""
    if value is None or value == "" or value == [] or value == {}:
        return '<span class="none">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "; ".join(f"{_e(k)} = {_e(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_e(v) for v in value)
    return _e(value)


_ACRONYMS = {"dpo": "DPO", "mfa": "MFA", "kek": "KEK"}


def _label(key: str) -> str:
    words = [_ACRONYMS.get(w, w) for w in key.replace("_", " ").split(" ")]
    text = " ".join(words)
    return _e(text[:1].upper() + text[1:])


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{_text(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    if not body:
        return '<p class="none">None.</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: Mapping[str, Any]) -> str:
    rows = "".join(f'<tr><th scope="row">{_label(k)}</th><td>{_text(v)}</td></tr>'
                   for k, v in pairs.items())
    return f"<table><tbody>{rows}</tbody></table>"


def _retention_text(rule: Mapping[str, Any]) -> str:
    if rule["until_consent_withdrawn"]:
        return f"until consent to {rule['consent_purpose']} is withdrawn"
    return f"{rule['period']} from {rule['from']}"


def _activity_html(a: Mapping[str, Any]) -> str:
    tags = "".join(f' <span class="tag">{_e(t)}</span>' for t, on in (
        ("consent-based", a["consent_required"]),
        ("pseudonymised only", a["pseudonymised_only"])) if on)
    parts = [
        f'<section class="activity" id="purpose-{_e(a["purpose"])}">',
        f"<h2>{_e(a['purpose'])}{tags}</h2>",
        _facts({"purpose (Art. 30(1)(b))": a["description"],
                "lawful bases (Art. 6(1))": a["lawful_bases"],
                "special-category conditions (Art. 9(2))": [
                    f"{c['collection']}: {c['condition']}"
                    for c in a["special_category_conditions"]],
                "categories of data subjects (Art. 30(1)(c))": a["subject_categories"]}),
        "<h3>Collections</h3>",
        _table(("collection", "description", "lawful basis", "Art. 9(2) condition",
                "data subjects"),
               ((c["name"], c["description"], c["lawful_basis"],
                 c["special_category_condition"], c["subject_categories"])
                for c in a["collections"])),
        "<h3>Categories of personal data (Art. 30(1)(c))</h3>",
        _table(("classification", "encrypted at rest", "collection", "fields"),
               ((d["classification"], d["encrypted"], g["collection"], g["fields"])
                for d in a["data_categories"] for g in d["collections"])),
        "<h3>Recipients: roles within the controller (Art. 30(1)(d))</h3>",
        _table(("role", "description", "actions", "collections", "masking", "conditions"),
               ((r["role"], r["description"], r["actions"], r["collections"], r["masking"],
                 r["conditions"]) for r in a["recipients"]["roles"])),
        "<h3>Recipients: third parties (Art. 30(1)(d))</h3>",
        _table(("name", "kind", "description", "country", "transfer safeguard", "collections"),
               ((t["name"], t["kind"], t["description"], t["country"],
                 t["transfer_safeguard"], t["collections"])
                for t in a["recipients"]["third_parties"])),
        "<h3>Transfers to third countries (Art. 30(1)(e))</h3>",
        _table(("recipient", "kind", "country", "safeguard", "collections"),
               ((t["recipient"], t["kind"], t["country"], t["transfer_safeguard"],
                 t["collections"]) for t in a["transfers"])),
        "<h3>Time limits for erasure (Art. 30(1)(f))</h3>",
        _table(("collection", "kept", "applies when", "description"),
               ((r["collection"], _retention_text(r), r["when"], r["description"])
                for r in a["retention"])),
        "</section>",
    ]
    return "\n".join(parts)


def render_html(ropa: Mapping[str, Any]) -> str:
    """A self-contained, printable page of the register; every value is HTML-escaped."""
    gen = ropa["generator"]
    src = ropa["sources"]
    measures = "\n".join(f"<h3>{_label(name)}</h3>\n{_measure_html(body)}"
                         for name, body in ropa["security_measures"].items())
    index = ", ".join(f'<a href="#purpose-{_e(a["purpose"])}">{_e(a["purpose"])}</a>'
                      for a in ropa["activities"])
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Records of processing activities (GDPR Art. 30)</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Records of processing activities</h1>",
        f'<p class="meta">GDPR Art. 30(1) · generated {_e(ropa["generated_at"])} by '
        f'{_e(gen["name"])} {_e(gen["version"])} · format version '
        f'{_e(ropa["format_version"])}</p>',
        "<h2>Controller (Art. 30(1)(a))</h2>",
        _facts(ropa["controller"]) if ropa["controller"] else '<p class="none">Not declared '
        "in the data map (add a <code>controller:</code> section).</p>",
        "<h2>Sources</h2>",
        _table(("configuration", "source", "SHA-256"),
               (("data map", src["datamap"]["source"], src["datamap"]["sha256"]),
                ("policy pack", src["policy"]["source"], src["policy"]["sha256"]))),
        f"<p>Processing activities: {index}</p>",
        *(_activity_html(a) for a in ropa["activities"]),
        "<h2>All third-party recipients</h2>",
        _table(("name", "kind", "country", "third country", "transfer safeguard", "purposes",
                "collections"),
               ((t["name"], t["kind"], t["country"], t["third_country"],
                 t["transfer_safeguard"], t["purposes"], t["collections"])
                for t in ropa["third_parties"])),
        "<h2>Technical and organisational security measures (Art. 30(1)(g), Art. 32)</h2>",
        measures,
        "</body></html>",
        "",
    ])


def _measure_html(body: Mapping[str, Any]) -> str:
    flat = {k: v for k, v in body.items() if not _is_rows(v)}
    tables = [f"<p>{_label(k)}:</p>" + _table(list(v[0]), (list(r.values()) for r in v))
              for k, v in body.items() if _is_rows(v)]
    return "\n".join([_facts(flat), *tables])


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
