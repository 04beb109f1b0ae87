"""In-process field decisions per second, mixed workload over every default role and collection.

Target (issue 3): >= 100,000 field decisions/s on one core.

    python bench/policy_decisions.py [--records N] [--seed S]

``--records`` is the number of requests decided (each decides every field of its record).
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from fiduciary.access.policy import PolicyEngine, load_policy
from fiduciary.datamap import load_default
from fiduciary.principal import Principal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    dm = load_default()
    engine = PolicyEngine(load_policy(None, dm), dm)
    principals = [
        Principal(id=f"u-{role}", kind="api_key" if role == "service" else "user",
                  username="adj" if role == "claims_adjuster" else role, roles=(role,),
                  regions=("west",), training_current=rng.random() > 0.05)
        for role in engine.pack.roles
    ]
    specs = list(dm.collections.values())
    purposes = list(dm.purposes)
    actions = ["read"] * 6 + ["search", "write", "export"]
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
        record = {"assigned_adjuster": rng.choice(["adj", "other"]),
                  "restricted": rng.random() < 0.05, "region": rng.choice(["west", "east"])}
        subject = {"vip": rng.random() < 0.02, "employee": rng.random() < 0.03,
                   "region": record["region"]}
        work.append((who, rng.choice(actions), spec, purpose,
                     list(spec.fields), record, subject, f"s-{rng.randrange(10_000)}"))
    fields = sum(len(w[4]) for w in work)
    decide = engine.decide
    start = time.perf_counter()
    allowed = 0
    for who, action, spec, purpose, names, record, subject, sid in work:
        out = decide(who, action, spec, purpose, names, record, subject, sid)
        allowed += sum(1 for d in out.values() if d.masking is not None)
    seconds = time.perf_counter() - start
    rate = fields / seconds
    print(f"{args.records} requests, {fields} field decisions in {seconds:.2f}s",
          file=sys.stderr)
    print(json.dumps({"requests": args.records, "field_decisions": fields,
                      "allowed_fraction": round(allowed / fields, 3),
                      "seconds": round(seconds, 3),
                      "field_decisions_per_s": round(rate),
                      "target_per_s": 100_000, "ratio_to_target": round(rate / 100_000, 2)}))


if __name__ == "__main__":
    main()
