"""For every role x collection x field x purpose, and for a customer the caller's work involves
and one it does not, a read returns exactly what the default policy pack declares: clear, the
declared masked form, withheld with its reason, 403 and its reason, or 404 for a record outside
the caller's relationships. The expectations come from the YAML through an oracle written here
(conditions and relations included), not from the engine under test."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.clock import FixedClock
from fiduciary.datamap import FieldSpec, FieldType, load_default
from fiduciary.runtime import Runtime
from tests.conftest import make_staff
from tests.test_canary import canary

PACK = yaml.safe_load(resources.files("fiduciary.access").joinpath("default_policy.yaml")
                      .read_text())
DM = load_default()
PRIORITY = ["training_expired", "training_missing", "consent_required", "purpose_not_allowed",
            "condition_failed", "field_not_permitted"]
REVEAL = {"redact": 0, "token": 1, "partial": 2, "clear": 3}
SENSITIVE_VALUES: set[str] = set()


#: The staff's own customer, and somebody else's: another adjuster's claim, another
#: underwriter's quote, another region.
RELATED = {("claims", "assigned_adjuster"): "adj", ("persons", "region"): "west",
           ("quotes", "assigned_underwriter"): "underwriter"}
UNRELATED = {("claims", "assigned_adjuster"): "someone-else", ("persons", "region"): "northeast",
             ("quotes", "assigned_underwriter"): "someone-else"}
KEYS = {"claim_number": "CLM-1", "policy_number": "POL-1"}


def value_for(collection: str, f: FieldSpec, n: int, people: dict[tuple[str, str], str]) -> Any:
    overrides = {("claims", "restricted"): False, ("persons", "vip"): False,
                 ("persons", "employee"): False, ("persons", "state"): "WY",
                 ("persons", "country"): "US", **people}
    if (collection, f.name) in overrides:
        return overrides[(collection, f.name)]
    if f.name in KEYS and not f.encrypted:
        return KEYS[f.name]  # one claim and one policy: related records meet on these
    if f.encrypted:
        return canary(collection, f, n)
    if f.type is FieldType.ENUM:
        return f.values[0]
    if f.type is FieldType.DATE:
        return "2025-06-30"
    if f.type is FieldType.DATETIME:
        return "2025-06-30T10:00:00Z"
    if f.type is FieldType.BOOLEAN:
        return False
    if f.type is FieldType.INTEGER:
        return int(f.minimum or 1)
    if f.type is FieldType.DECIMAL:
        return "12.50"
    return f"REF-{collection[:4]}-{f.name[:6]}"


def _literal(text: str, ctx: dict[str, Any]) -> Any:
    scope, _, name = text.partition(".")
    if scope in ("record", "subject", "principal") and name:
        return ctx[scope].get(name)
    return {"true": True, "false": False, "null": None}.get(text, text.strip("'\""))


def holds(text: str, ctx: dict[str, Any]) -> bool:
    """One ``when`` condition of the pack, evaluated over the test's own records."""
    has = re.fullmatch(r"subject\.has\((\w+) where (.+)\)", text)
    if has:
        return any(all(holds("record." + part, {**ctx, "record": r})
                       for part in has.group(2).split(" and "))
                   for r in ctx["records"].get(has.group(1), []))
    m = re.fullmatch(r"(related\.\w+|record|subject|principal)\.(\w+) (==|!=|not in|in) (.+)",
                     text)
    assert m, text
    scope, name, op, rhs = m.groups()
    if scope.startswith("related."):
        relation = DM.collections[ctx["collection"]].relations[scope.split(".")[1]]
        key = ctx["record"].get(relation.key)
        target = next((r for r in ctx["records"].get(relation.collection, [])
                       if key is not None and r.get(relation.key) == key), {})
        a = target.get(name)
    else:
        a = ctx[scope].get(name)
    b = _literal(rhs, ctx)
    if op == "==":
        return a is not None and a == b
    if op == "!=":
        return bool(a != b)
    inside = a is not None and isinstance(b, list) and a in b
    return inside if op == "in" else not inside


def expected(role: str, collection: str, field: str, purpose: str,
             ctx: dict[str, Any]) -> tuple[str, str]:
    """('allow', masking) or ('deny', reason), read straight from the YAML."""
    f = DM.collections[collection].fields[field]
    if purpose not in f.purposes:
        return "deny", "purpose_not_allowed"
    if (DM.collections[collection].lawful_basis.value == "consent"
            and not DM.purposes[purpose].consent_required):
        return "deny", "purpose_not_allowed"  # consent data serves its consented purpose only
    if DM.purposes[purpose].consent_required:
        return "deny", "consent_required"
    grants = [g for g in PACK["roles"][role].get("grants", [])
              if "read" in g["actions"]
              and (g["collections"] == "*" or collection in g["collections"])
              and (g.get("fields", "*") == "*" or field in g["fields"])]
    if not grants:
        return "deny", "field_not_permitted"
    grants = [g for g in grants if g["purposes"] == "*" or purpose in g["purposes"]]
    if not grants:
        return "deny", "purpose_not_allowed"
    grants = [g for g in grants if all(holds(c, ctx) for c in g.get("when", []))]
    if not grants:
        return "deny", "condition_failed"
    best = None
    for g in grants:
        m = g.get("masking", "clear")
        m = m.get(field, m.get("default", "clear")) if isinstance(m, dict) else m
        level = m if m in REVEAL else "partial"
        strategy = f.masking if m == "partial" else m
        if best is None or REVEAL[level] > REVEAL[best[0]]:
            best = (level, strategy)
    assert best is not None
    return "allow", best[1] if best[0] == "partial" else best[0]


def masked(strategy: str, value: Any, record: dict[str, Any]) -> Any:
    s = str(value)
    digits = "".join(c for c in s if c.isdigit())
    if strategy == "clear":
        return value
    if strategy == "redact":
        return "[redacted]"
    if strategy == "year_only":
        return s[:4]
    if strategy == "initial":
        return s[0] + "."
    if strategy == "email":
        local, domain = s.split("@")
        return f"{local[0]}***@{domain}"
    if strategy == "state_last3":
        return f"{record['drivers_licence_state']} ****{s[-3:]}"
    if strategy == "last4" and re.fullmatch(r"\d{3}-\d{2}-\d{4}", s):
        return f"***-**-{s[-4:]}"
    n = 4 if strategy == "last4" else 3
    return "****" + (digits or s.replace(" ", ""))[-n:]


def check(value: Any, masking: str, original: Any, record: dict[str, Any]) -> bool:
    if masking == "token":
        return bool(re.fullmatch(r"tok_[a-z2-7]{16}", str(value)))
    return bool(value == masked(masking, original, record))


def test_policy_matrix(rt: Runtime, clock: FixedClock, client: TestClient) -> None:
    customers = []
    for n, people in enumerate((RELATED, UNRELATED)):
        subject = rt.vault.create_subject(SYSTEM).id
        written: dict[str, tuple[str, dict[str, Any]]] = {}
        for c, (cname, spec) in enumerate(DM.collections.items()):
            values = {name: value_for(cname, f, 100 * n + c, people)
                      for name, f in spec.fields.items()}
            SENSITIVE_VALUES.update(str(v) for k, v in values.items()
                                    if spec.fields[k].encrypted and len(str(v)) >= 6)
            rec = rt.vault.create_record(SYSTEM, cname, subject, values, "legal_obligation")
            written[cname] = (rec.id, rec.data)
        clear = {cname: [{k: v for k, v in data.items()
                          if not DM.collections[cname].fields[k].encrypted}]
                 for cname, (_, data) in written.items()}
        customers.append((written, clear, "related" if n == 0 else "unrelated"))
    callers = {"service": client}
    names = {"service": "service"}
    for role in PACK["roles"]:
        if role != "service":
            names[role] = "adj" if role == "claims_adjuster" else role.replace("_", "-")
            callers[role] = make_staff(rt, clock, names[role], [role], regions=["west"]).client
    checked = 0
    mismatches: list[str] = []
    for role, http in callers.items():
        me = {"username": names[role], "regions": ["west"], "roles": [role]}
        for written, clear, kind_of in customers:
            subject_attrs = {"region": clear["persons"][0]["region"], "vip": False,
                             "employee": False}
            for cname, (record_id, stored) in written.items():
                ctx = {"record": clear[cname][0], "subject": subject_attrs, "principal": me,
                       "records": clear, "collection": cname}
                for purpose in DM.purposes:
                    r = http.get(f"/v1/collections/{cname}/records/{record_id}"
                                 f"?purpose={purpose}")
                    want = {f: expected(role, cname, f, purpose, ctx) for f in stored}
                    allowed = {f: m for f, (kind, m) in want.items() if kind == "allow"}
                    where = f"{role} {kind_of} {cname} {purpose}"
                    assert not any(v in r.text for v in SENSITIVE_VALUES
                                   if r.status_code != 200), where
                    if not allowed:
                        reasons = {m for kind, m in want.values()}
                        reason = next(p for p in PRIORITY if p in reasons)
                        # Outside the caller's relationships (a condition fails for any
                        # field), a record does not exist, whatever the other reasons.
                        status, code = ((404, "record_not_found")
                                        if "condition_failed" in reasons else (403, reason))
                        err = r.json().get("error", {})
                        if r.status_code != status or code not in (err.get("reason"),
                                                                   err.get("code")):
                            mismatches.append(f"{where}: want {status} {code}, got "
                                              f"{r.status_code} {r.text[:120]}")
                        checked += len(want)
                        continue
                    if r.status_code != 200:
                        mismatches.append(f"{where}: want 200, got {r.status_code} "
                                          f"{r.text[:120]}")
                        continue
                    body = r.json()
                    withheld = {w["field"]: w["reason"] for w in body["withheld"]}
                    for f, (kind, m) in want.items():
                        checked += 1
                        if kind == "deny":
                            if withheld.get(f) != m or f in body["data"]:
                                mismatches.append(f"{where} {f}: want withheld {m}, got "
                                                  f"{withheld.get(f)}")
                        elif f not in body["data"] or not check(body["data"][f], m, stored[f],
                                                                stored):
                            mismatches.append(f"{where} {f}: want {m}")
    assert mismatches == []
    total_fields = sum(len(c.fields) for c in DM.collections.values())
    assert checked == 2 * len(callers) * total_fields * len(DM.purposes)
