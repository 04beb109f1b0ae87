"""In-process field decisions per second, mixed workload over every default role and collection,
relationship conditions included.

Target (issues 3 and 10): >= 100,000 field decisions/s on one core.

    python bench/policy_decisions.py [--records N] [--subjects S] [--seed S]

``--records`` is the number of requests decided (each decides every field of its record).
Relationship conditions (``related.claim.…``, ``subject.has(claims where …)``,
``subject.has(quotes where …)``) read an in-memory ``related`` lookup: ``--subjects`` customers
(default 10,000), each with 0-2 claims (about 40% assigned to the bench adjuster, 5%
restricted) and 0-2 quotes (about 40% in the bench underwriter's queue), keyed by (subject,
collection) as the vault's per-request lookup is, so every decision that depends on a
relationship pays for the lookup and the scan of the subject's records. Records of claims,
claim notes, medical records and quotes point at one of their subject's claims or quotes
(or, one time in ten, at a claim number the subject does not have). The requests under
relationship conditions are also timed on their own (``relationship_only_field_decisions_per_s``).
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from _common import CpuWatch, machine, wait_for_quiet

from fiduciary.access.policy import PolicyEngine, load_policy
from fiduciary.datamap import load_default
from fiduciary.datamap.model import Classification
from fiduciary.principal import Principal

ADJUSTER, UNDERWRITER = "adj", "uw"
OTHERS = ["a.jones", "m.garcia", "k.chen"]
REGIONS = ["northeast", "southeast", "midwest", "southwest", "west"]
NONE: tuple[Mapping[str, Any], ...] = ()


class InMemoryRelated:
    """``RelatedRecords`` over a dict: the clear fields of each subject's records by
    collection (what the vault reads from its ``records`` table by subject and collection)."""

    def __init__(self, rows: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        self.rows = rows

    def records(self, subject_id: str, collection: str) -> Sequence[Mapping[str, Any]]:
        return self.rows.get((subject_id, collection), NONE)


class CountingRelated(InMemoryRelated):
    """The same lookup, counting calls (an untimed pass, for the JSON)."""

    def __init__(self, rows: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        super().__init__(rows)
        self.calls = 0

    def records(self, subject_id: str, collection: str) -> Sequence[Mapping[str, Any]]:
        self.calls += 1
        return self.rows.get((subject_id, collection), NONE)


def relations(rng: random.Random, subjects: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for n in range(subjects):
        sid = f"s-{n}"
        claims = [{"claim_number": f"CLM-{n}-{k}", "policy_number": f"POL-{n}",
                   "status": rng.choice(["open", "under_review", "closed"]),
                   "assigned_adjuster": ADJUSTER if rng.random() < 0.4 else rng.choice(OTHERS),
                   "restricted": rng.random() < 0.05}
                  for k in range(rng.choice([0, 1, 1, 2]))]
        quotes = [{"quote_number": f"Q-{n}-{k}", "product": "auto", "decision": "pending",
                   "assigned_underwriter": UNDERWRITER if rng.random() < 0.4
                   else rng.choice(OTHERS)}
                  for k in range(rng.choice([0, 1, 1, 2]))]
        if claims:
            rows[sid, "claims"] = claims
        if quotes:
            rows[sid, "quotes"] = quotes
    return rows


def record_for(rng: random.Random, collection: str, sid: str, region: str,
               rows: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """The clear fields of a record of ``collection`` belonging to ``sid``."""
    claims = rows.get((sid, "claims"), [])
    quotes = rows.get((sid, "quotes"), [])
    if collection == "claims":
        return dict(rng.choice(claims)) if claims else {
            "claim_number": "CLM-x", "assigned_adjuster": rng.choice(OTHERS),
            "restricted": False, "status": "open"}
    if collection in ("claim_notes", "medical_records"):
        number = (rng.choice(claims)["claim_number"] if claims and rng.random() < 0.9
                  else "CLM-unknown")
        return {"claim_number": number, "author": rng.choice([ADJUSTER, *OTHERS])}
    if collection == "quotes":
        return dict(rng.choice(quotes)) if quotes else {
            "quote_number": "Q-x", "assigned_underwriter": rng.choice(OTHERS)}
    if collection == "persons":
        return {"region": region}
    return {"policy_number": f"POL-{sid}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quiet-wait", type=float, default=300.0,
                    help="before timing, wait at most this many seconds for other processes "
                         "to go quiet (default 300; 0 disables)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    dm = load_default()
    engine = PolicyEngine(load_policy(None, dm), dm)
    usernames = {"claims_adjuster": ADJUSTER, "underwriter": UNDERWRITER}
    # About one principal in twenty has lapsed training: every data class above internal is
    # then withheld from them, as the gate decides it.
    lapsed = {c.value: "training_expired" for c in Classification
              if c.rank > Classification.INTERNAL.rank}
    principals = []
    for role in engine.pack.roles:
        trained = rng.random() > 0.05
        principals.append(Principal(
            id=f"u-{role}", kind="api_key" if role == "service" else "user",
            username=usernames.get(role, role), roles=(role,), regions=("west",),
            training_current=trained, training_blocked={} if trained else lapsed))
    specs = list(dm.collections.values())
    purposes = list(dm.purposes)
    actions = ["read"] * 6 + ["search", "write", "export", "verify"]
    rows = relations(rng, args.subjects)
    related = InMemoryRelated(rows)
    relational = {(r.name, c, a) for r in engine.pack.roles.values() for g in r.grants
                  for c in g.collections for a in g.actions
                  if any("related." in t or "subject.has(" in t for t in g.condition_text)}
    # Pre-build the workload so only decide() is timed.
    work = []
    # 80% of requests are ones the role is there for: one of its collections and purposes.
    usual = {r.name: [(c, p) for g in r.grants for c in sorted(g.collections)
                      for p in sorted(g.purposes or purposes)] for r in engine.pack.roles.values()}
    for _ in range(args.records):
        who = rng.choice(principals)
        spec, purpose = rng.choice(specs), rng.choice(purposes)
        if usual[who.role] and rng.random() < 0.8:
            name, purpose = rng.choice(usual[who.role])
            spec = dm.collections[name]
        sid = f"s-{rng.randrange(args.subjects)}"
        region = rng.choice(REGIONS)
        record = record_for(rng, spec.name, sid, region, rows)
        subject = {"vip": rng.random() < 0.02, "employee": rng.random() < 0.03,
                   "region": region}
        work.append((who, rng.choice(actions), spec, purpose, list(spec.fields), record,
                     subject, sid))
    fields = sum(len(w[4]) for w in work)
    with_relations = sum(1 for w in work if (w[0].role, w[2].name, w[1]) in relational)

    decide = engine.decide
    waited = wait_for_quiet(args.quiet_wait)
    watch = CpuWatch()
    start = time.perf_counter()
    allowed = 0
    for who, action, spec, purpose, names, record, subject, sid in work:
        out = decide(who, action, spec, purpose, names, record, subject, sid, related=related)
        allowed += sum(1 for d in out.values() if d.masking is not None)
    seconds = time.perf_counter() - start
    rate = fields / seconds

    # The requests under relationship conditions alone, timed the same way.
    subset = [w for w in work if (w[0].role, w[2].name, w[1]) in relational]
    subset_fields = sum(len(w[4]) for w in subset)
    start = time.perf_counter()
    for who, action, spec, purpose, names, record, subject, sid in subset:
        decide(who, action, spec, purpose, names, record, subject, sid, related=related)
    subset_seconds = time.perf_counter() - start
    foreign = watch.foreign_s()

    # Untimed: how many relationship lookups the workload made, and what they decided.
    counting = CountingRelated(rows)
    reached = 0
    for who, action, spec, purpose, names, record, subject, sid in work:
        if (who.role, spec.name, action) in relational:
            out = decide(who, action, spec, purpose, names, record, subject, sid,
                         related=counting)
            reached += any(d.masking is not None for d in out.values())
    print(f"{args.records} requests, {fields} field decisions in {seconds:.2f}s; "
          f"{with_relations} requests under relationship conditions, "
          f"{counting.calls} lookups", file=sys.stderr)
    print(json.dumps({"benchmark": "policy_decisions", "requests": args.records,
                      "field_decisions": fields,
                      "allowed_fraction": round(allowed / fields, 3),
                      "seconds": round(seconds, 3),
                      "field_decisions_per_s": round(rate),
                      "target_per_s": 100_000, "ratio_to_target": round(rate / 100_000, 2),
                      "subjects": args.subjects,
                      "waited_for_quiet_s": waited, "other_processes_cpu_s": foreign,
                      "requests_under_relationship_conditions": with_relations,
                      "relationship_lookups": counting.calls,
                      "relationship_requests_reaching_a_field": reached,
                      "relationship_only_field_decisions_per_s":
                          round(subset_fields / subset_seconds) if subset_seconds else None,
                      **machine()}))


if __name__ == "__main__":
    main()
