"""Audited single-record reads per second against the same reads with auditing switched off
(a bench-only switch), in the same run, alternating phases. Target (issue 4): ratio >= 0.5.

    python bench/audit_append.py [--records N] [--concurrency C] [--seconds S]
                                 [--database-url URL]

Reads go through the service layer (decision, decryption, masking, audit) from C threads.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from fiduciary.access import SYSTEM
from fiduciary.config import Settings
from fiduciary.demo import DemoGenerator
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.vault.importer import Importer

PURPOSE = "customer_service"


def load(rt: Runtime, n: int) -> list[str]:
    gen = DemoGenerator(seed=11)
    rows = ((i, gen.person(), []) for i in range(1, n + 1))
    report = Importer(rt.vault).run(SYSTEM, "persons", rows, "policy_administration",
                                    lambda line, p: None)
    assert report.imported == n, report
    return [r.id for r in rt.vault.export(SYSTEM, "persons", "policy_administration")]


def phase(rt: Runtime, ids: list[str], threads: int, seconds: float) -> int:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def reader(k: int) -> None:
        rng = random.Random(k)
        while time.monotonic() < stop:
            rt.vault.get_record(SYSTEM, "persons", rng.choice(ids), PURPOSE)
            done[k] += 1

    pool = [threading.Thread(target=reader, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rt = open_runtime(Settings(data_dir=Path(tmp) / "data", database_url=args.database_url),
                          create=True)
        try:
            if any(True for _ in rt.vault.export(SYSTEM, "persons", "policy_administration",
                                                 batch_size=1)):
                sys.exit("the database is not empty: give a fresh --database-url (its rows "
                         "belong to another keyring)")
            ids = load(rt, args.records)
            half = args.seconds / 4
            counts = {True: 0, False: 0}
            for audited in (True, False, True, False):  # alternate: fair to both
                rt.vault.audit.enabled = audited
                counts[audited] += phase(rt, ids, args.concurrency, half)
            rt.vault.audit.enabled = True
            audited_rps = counts[True] / (args.seconds / 2)
            plain_rps = counts[False] / (args.seconds / 2)
            events = rt.audit.count()
            backend = rt.db.engine.dialect.name
        finally:
            rt.close()
    print(f"{backend}: audited {audited_rps:.0f}/s, unaudited {plain_rps:.0f}/s",
          file=sys.stderr)
    print(json.dumps({"backend": backend, "records": args.records,
                      "concurrency": args.concurrency, "seconds": args.seconds,
                      "audited_reads_per_s": round(audited_rps),
                      "unaudited_reads_per_s": round(plain_rps),
                      "ratio": round(audited_rps / plain_rps, 3), "target_ratio": 0.5,
                      "events_written": events}))


if __name__ == "__main__":
    main()
