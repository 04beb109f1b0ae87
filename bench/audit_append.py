"""Audited single-record reads per second against the same reads with auditing switched off
(a bench-only switch), in the same run, alternating phases. Target (issue 4): ratio >= 0.5.
Then the append itself (issue 16, target 3), group commit off and on in the same run:
microseconds per ``append_committed`` from one thread, events/s from ``--appenders``
threads appending as fast as they can (phases off, on, on, off), and the canonical JSON of
a read's event through the fast path and through ``rfc8785``.

    python bench/audit_append.py [--records N] [--concurrency C] [--seconds S]
                                 [--appenders A] [--append-seconds S] [--database-url URL]

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
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import log, machine

from fiduciary.access import SYSTEM
from fiduciary.audit.events import AuditEvent
from fiduciary.audit.jcs import canonical, canonical_reference
from fiduciary.config import Settings
from fiduciary.demo import DemoGenerator
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.vault.importer import Importer

PURPOSE = "customer_service"
FIELDS = ["address_line", "birth_date", "email", "first_name", "last_name", "national_id"]


def load(rt: Runtime, n: int) -> list[str]:
    gen = DemoGenerator(seed=11)
    rows = ((i, gen.person(), []) for i in range(1, n + 1))
    report = Importer(rt.vault).run(SYSTEM, "persons", rows, "policy_administration",
                                    lambda line, p: None)
    assert report.imported == n, report
    return [r.id for r in rt.vault.export(SYSTEM, "persons", "policy_administration")]


def hammer(threads: int, seconds: float, work: Callable[[random.Random], None]) -> int:
    """Calls of ``work`` completed by ``threads`` threads calling it for ``seconds``."""
    done = [0] * threads
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        rng = random.Random(k)
        while time.monotonic() < stop:
            work(rng)
            done[k] += 1

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done)


def phase(rt: Runtime, ids: list[str], threads: int, seconds: float) -> int:
    return hammer(threads, seconds,
                  lambda rng: rt.vault.get_record(SYSTEM, "persons", rng.choice(ids), PURPOSE))


def read_event(rt: Runtime, rng: random.Random) -> AuditEvent:
    """The event a service read writes (ids, field names, purpose), fresh each time."""
    return rt.audit.event(SYSTEM, "record.read", collection="persons",
                          record_ids=[str(uuid.uuid4())], subject_ids=[str(uuid.uuid4())],
                          fields=rng.sample(FIELDS, 4), purpose=PURPOSE,
                          details={"masked": ["national_id"]})


def single_append_us(rt: Runtime, n: int) -> float:
    rng = random.Random(1)
    events = [read_event(rt, rng) for _ in range(n)]
    t0 = time.perf_counter()
    for e in events:
        rt.audit.append_committed(e)
    return (time.perf_counter() - t0) / n * 1e6


def concurrent_appends(rt: Runtime, threads: int, seconds: float) -> int:
    return hammer(threads, seconds, lambda rng: rt.audit.append_committed(read_event(rt, rng)))


def appends(rt: Runtime, threads: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(2)
    event = read_event(rt, rng)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        canonical(event)
    fast_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(n):
        canonical_reference(event)
    reference_us = (time.perf_counter() - t0) / n * 1e6
    single: dict[bool, list[float]] = {False: [], True: []}
    counts: dict[bool, int] = {False: 0, True: 0}
    for grouped in (False, True, True, False):
        rt.audit.group_commit = grouped
        single[grouped].append(single_append_us(rt, 500))
        counts[grouped] += concurrent_appends(rt, threads, seconds / 4)
        log(f"group commit {'on' if grouped else 'off'}: {single[grouped][-1]:.0f} µs "
            f"per append alone, {counts[grouped]:,} appended by {threads} threads so far")
    rt.audit.group_commit = True
    per_s = {g: counts[g] / (seconds / 2) for g in (False, True)}
    return {"canonical_us": round(fast_us, 1), "rfc8785_us": round(reference_us, 1),
            "append_us_group_off": round(min(single[False]), 1),
            "append_us_group_on": round(min(single[True]), 1),
            "appenders": threads,
            "events_per_s_group_off": round(per_s[False]),
            "events_per_s_group_on": round(per_s[True]),
            "group_commit_gain": round(per_s[True] / per_s[False], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--appenders", type=int, default=8)
    ap.add_argument("--append-seconds", type=float, default=8.0)
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
            append = appends(rt, args.appenders, args.append_seconds)
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
                      "events_written": events, **append, **machine()}))


if __name__ == "__main__":
    main()
