"""Access export and erasure of one data subject, through the service layer, at store sizes N.

    python bench/dsr.py --subjects 100000,1000000 [--targets 50] [--records-per-target 20]
                        [--data-dir DIR] [--database-url URL] [--load-workers 2]
                        [--profile FILE.prof]

Issue 5 (Speed): the access export and the erasure of one subject cost in proportion to that
subject's data, not the store's size; p50 <= 50 ms for a subject with 20 records at
N = 100,000 and N = 1,000,000, and the ratio between the two sizes <= 1.5.

``--subjects`` takes one size or several, ascending; each size gets its own store of N filler
subjects (one realistic ``persons`` record each, through the real Importer in batches of
1,000; ``--load-workers`` processes import disjoint slices side by side), all open in this
process. In each store K target subjects are written, each with R records over the default
collections, and given some history (their records listed and two read, marketing consent
granted and withdrawn, an access and an erasure request). Then, on a quiet machine,
``rt.packager.build`` (the access package: every record decrypted, collections, consent
history, the audit trail through ``audit_subjects``, JSON + HTML sealed under the subject's
key and written) is timed once per target, then ``rt.eraser.erase`` (rows and blind index
deleted, certificate, audit event, the data key destroyed in the key store, the subject's
package files deleted) once per target. Each operation runs in blocks of half
the targets, stores in order then reversed (A B B A), so a drift or a burst of other work on
the machine falls on every size alike. Three more targets per store go through both
operations untimed first.

Targets are customers whose dealings ended long ago: their records were written with the
runtime clock set back to 2014 (``created_at`` then), policies ended and claims closed before
2015. Claims, claim notes and medical records carry a 7-year statutory retention duty in the
default data map (claim notes and medical records counted from creation), so only with such
dates is the erasure complete: nothing kept, the data key destroyed. The JSON says so per size
(``erasure``). The data keys of the targets are dropped from the process's key cache before
timing (a request comes days after the last access), so each operation reads its key from the
key store.

``--data-dir DIR`` keeps the stores (DIR/n<N>; SQLite, or a kept PostgreSQL schema per size):
a later run imports only what is missing and writes new targets.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import random
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import (
    PRINCIPAL,
    CpuWatch,
    describe_url,
    emit,
    fresh_database_url,
    import_encrypted,
    log,
    machine,
    make_row,
    progress_logger,
    source_state,
    temp_root,
    wait_for_quiet,
)

from fiduciary.config import Settings
from fiduciary.demo import ADJUSTERS, ICD10, PURPOSE, DemoGenerator
from fiduciary.errors import FieldProblem
from fiduciary.runtime import Runtime, is_initialised, open_runtime
from fiduciary.storage.schema import audit_events, subjects
from fiduciary.vault.importer import Importer, ParsedRow

STATE_FILE = "bench-dsr-state.json"
TARGET_P50_MS = 50.0
TARGET_RATIO = 1.5
#: Untimed targets per size, run through both operations before the timed ones.
WARMUP_TARGETS = 3
#: Seconds between WAL checkpoints while worker processes load a SQLite store.
CHECKPOINT_EVERY_S = 5.0
#: The date the targets' records were written (the clock is set back to it meanwhile).
WRITTEN_AT = datetime(2014, 6, 16, 10, 0, tzinfo=UTC)

#: The records of a target after its ``persons`` record, in order, repeated if R > 20.
PLAN = ("policies:auto", "vehicles", "claims", "claim_notes", "payment_methods:card",
        "policies:life", "beneficiaries", "underwriting_answers", "claims", "claim_notes",
        "medical_records", "policies:home", "quotes", "claim_notes", "vehicles",
        "payment_methods:bank_account", "beneficiaries", "quotes", "claim_notes")


class ShiftedClock:
    """The system clock, optionally set back (to write the targets' old records)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def set_to(self, at: datetime | None) -> None:
        self.offset = timedelta(0) if at is None else at - datetime.now(UTC)


# -- filler ---------------------------------------------------------------------------------

class FillerPersons:
    """DemoGenerator persons, ~20x faster: Faker makes a pool of people once; each filler row
    takes a pool person's names, address, occupation and region, and gets its own identifiers
    (national id, phone, email, licence, passport) and birth date from a seeded RNG, all in
    the formats the data map validates."""

    def __init__(self, seed: int, pool: int = 2000) -> None:
        gen = DemoGenerator(seed)
        self.pool = [gen.person() for _ in range(pool)]
        self.rng = random.Random(seed)
        self.today = date.today()

    def person(self, n: int) -> dict[str, Any]:
        r = self.rng
        p = dict(r.choice(self.pool))
        area = r.randint(1, 899)
        p["national_id"] = f"{667 if area == 666 else area:03d}-{r.randint(1, 99):02d}-" \
                           f"{r.randint(1, 9999):04d}"
        p["phone"] = f"+1 {r.randint(201, 989)}-{r.randint(200, 999)}-{r.randint(0, 9999):04d}"
        local, domain = p["email"].split("@")
        p["email"] = f"{local}{n}@{domain}"
        p["drivers_licence_number"] = f"{r.choice('ABCDEFGHJKLMNPRSTWY')}" \
                                      f"{r.randint(0, 9_999_999):07d}"
        p["passport_number"] = f"{r.choice('ACEFGHJKLMNPRTVWXY')}{r.randint(0, 99_999_999):08d}"
        p["date_of_birth"] = (self.today - timedelta(days=r.randint(18 * 365, 85 * 365))
                              ).isoformat()
        p["vip"] = r.random() < 0.02
        p["employee"] = r.random() < 0.03
        return p


def _filler_rows(start: int, count: int, seed: int) -> Iterator[ParsedRow]:
    gen = FillerPersons(seed * 1_000_003 + start)
    for n in range(start, start + count):
        yield make_row(n + 1, gen.person(n))


def _load_slice(data_dir: str, url: str | None, start: int, count: int, seed: int,
                every: int) -> int:
    """A load worker (own process, own runtime): filler subjects start .. start+count-1."""
    rt = open_runtime(Settings(data_dir=Path(data_dir), database_url=url))
    try:
        report = import_encrypted(rt.vault, _filler_rows(start, count, seed),
                                  progress=progress_logger(count, f"slice {start:,}+", every))
    finally:
        rt.close()
    return report.imported


def checkpoint(rt: Runtime) -> None:
    """Fold SQLite's write-ahead logs into the database files and truncate them.

    With two processes importing side by side, the WAL never restarts: a writer's automatic
    checkpoint runs after it released the write lock, the other writer is already appending,
    so the log only grows (15 GB and a falling import rate at 650,000 subjects), and every
    page read searches a huge WAL index. The load therefore checkpoints it every few seconds.
    """
    if not rt.db.is_sqlite:
        return
    for url in (rt.settings.resolved_database_url(), rt.settings.resolved_keystore_url()):
        path = sa.make_url(url).database
        if not path:
            continue
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()


def grow(rt: Runtime, url: str | None, have: int, want: int, seed: int, workers: int) -> float:
    """Import filler subjects have .. want-1; returns seconds taken."""
    count = want - have
    log(f"loading {count:,} filler persons ({have:,} -> {want:,}) with {workers} process(es)")
    t0 = time.perf_counter()
    if workers <= 1 or count < 10_000:
        report = import_encrypted(rt.vault, _filler_rows(have, count, seed),
                                  progress=progress_logger(count, "imported"))
        done = report.imported
    else:
        step = -(-count // workers)
        slices = [(have + i * step, min(step, count - i * step)) for i in range(workers)]
        every = max(100_000 // workers, 10_000)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_load_slice, str(rt.settings.data_dir), url, s, c, seed,
                                   every) for s, c in slices if c > 0]
            while wait(futures, timeout=CHECKPOINT_EVERY_S).not_done:
                checkpoint(rt)
            done = sum(f.result() for f in futures)
    checkpoint(rt)
    load_s = time.perf_counter() - t0
    if done != count:
        raise SystemExit(f"imported {done:,} of {count:,} filler rows")
    log(f"loaded {count:,} in {load_s:.1f} s ({count / load_s:,.0f} rows/s)")
    return load_s


# -- targets --------------------------------------------------------------------------------

def _day(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, (last - first).days))


def target_records(gen: DemoGenerator, subject_id: str, count: int
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count`` records besides the subject's persons record, made as DemoGenerator makes them
    but dated 2008-2014: policies ended, claims closed, payment methods last used before 2015.
    PLAN puts every policy before what refers to it and a claim before its notes."""
    f, r = gen.fake, gen.rng
    policies: dict[str, tuple[str, date]] = {}
    claim = ("", date(2014, 1, 1))
    for i in range(count):
        collection, _, variant = PLAN[i % len(PLAN)].partition(":")
        if collection == "policies":
            number = f"POL-{r.randint(0, 99_999_999):08d}"
            start = _day(r, date(2008, 1, 1), date(2013, 6, 30))
            policies[variant] = (number, start)
            yield "policies", {
                "subject_id": subject_id, "policy_number": number, "product": variant,
                "status": r.choice(["expired", "lapsed", "cancelled"]),
                "start_date": start.isoformat(),
                "end_date": (start + timedelta(days=365)).isoformat(),
                "premium": f"{r.uniform(200, 4000):.2f}",
                "sum_insured": f"{r.choice([25_000, 50_000, 100_000, 250_000, 500_000])}.00"}
        elif collection == "vehicles":
            yield "vehicles", {
                "subject_id": subject_id, "vin": f.vin(), "policy_number": policies["auto"][0],
                "licence_plate": f"{r.randint(1, 9)}{f.lexify('???').upper()}"
                                 f"{r.randint(100, 999)}",
                "make": r.choice(["Toyota", "Ford", "Honda", "Chevrolet", "Tesla", "BMW"]),
                "model": f.word().title(), "year": r.randint(2000, 2013)}
        elif collection == "claims":
            number, start = policies["auto"]
            loss = _day(r, start, start + timedelta(days=300))
            claim = (f"CLM-{r.randint(0, 99_999_999):08d}", loss)
            yield "claims", {
                "subject_id": subject_id, "claim_number": claim[0], "policy_number": number,
                "status": "closed", "loss_date": loss.isoformat(),
                "reported_at": f"{(loss + timedelta(days=2)).isoformat()}T09:30:00Z",
                "closed_at": (loss + timedelta(days=90)).isoformat(),
                "assigned_adjuster": r.choice(ADJUSTERS), "restricted": False,
                "description": f.paragraph(nb_sentences=3),
                "amount_claimed": f"{r.uniform(500, 40_000):.2f}",
                "amount_paid": f"{r.uniform(100, 20_000):.2f}"}
        elif collection == "claim_notes":
            yield "claim_notes", {
                "subject_id": subject_id, "claim_number": claim[0],
                "author": r.choice(ADJUSTERS), "note": f.sentence(nb_words=15)}
        elif collection == "medical_records":
            codes = r.sample(ICD10, 3)
            yield "medical_records", {
                "subject_id": subject_id, "claim_number": claim[0],
                "primary_icd_code": codes[0], "secondary_icd_codes": ",".join(codes[1:]),
                "treatment": f.sentence(nb_words=10),
                "treatment_date": (claim[1] + timedelta(days=1)).isoformat(),
                "provider_name": f"{f.last_name()} Medical Center"}
        elif collection == "payment_methods":
            used = _day(r, date(2013, 1, 1), date(2014, 5, 31)).isoformat()
            holder = {"subject_id": subject_id, "account_holder_name": f.name(),
                      "last_used_on": used}
            if variant == "card":
                yield "payment_methods", {**holder, "kind": "card",
                                          "card_number": f.credit_card_number(),
                                          "card_expiry": "09/15"}
            else:
                yield "payment_methods", {**holder, "kind": "bank_account",
                                          "bank_account_number": str(
                                              r.randint(10_000_000, 9_999_999_999)),
                                          "routing_number": f.aba(), "iban": f.iban()}
        elif collection == "beneficiaries":
            yield "beneficiaries", {
                "subject_id": subject_id, "policy_number": policies["life"][0],
                "full_name": f.name(),
                "relationship": r.choice(["spouse", "child", "parent", "partner"]),
                "date_of_birth": _day(r, date(1940, 1, 1), date(2012, 1, 1)).isoformat(),
                "national_id": f.ssn(), "share_percent": "50"}
        elif collection == "underwriting_answers":
            number, start = policies["life"]
            yield "underwriting_answers", {
                "subject_id": subject_id, "policy_number": number,
                "answered_on": start.isoformat(), "smoker": r.random() < 0.15,
                "bmi": f"{r.uniform(18, 38):.1f}", "alcohol_units_per_week": r.randint(0, 30),
                "medical_history": f.sentence(nb_words=12)}
        elif collection == "quotes":
            yield "quotes", {
                "subject_id": subject_id,
                "quote_number": f"QTE-{r.randint(0, 99_999_999):08d}",
                "product": r.choice(["auto", "home", "life"]),
                "decision": r.choice(["accepted", "declined"]),
                "decision_date": _day(r, date(2012, 1, 1), date(2014, 5, 31)).isoformat(),
                "premium_quoted": f"{r.uniform(200, 3000):.2f}"}


class Target:
    __slots__ = ("access_request", "erase_request", "subject_id")

    def __init__(self, subject_id: str, access_request: str, erase_request: str) -> None:
        self.subject_id = subject_id
        self.access_request = access_request
        self.erase_request = erase_request


def _import(rt: Runtime, collection: str, rows: list[dict[str, Any]]) -> list[str]:
    problems: list[tuple[int, list[FieldProblem]]] = []
    report = Importer(rt.vault).run(
        PRINCIPAL, collection, (make_row(i, row) for i, row in enumerate(rows, start=1)),
        PURPOSE[collection], lambda line, p: problems.append((line, p)))
    if problems:
        line, first = problems[0]
        raise SystemExit(f"{len(problems)} {collection} target rows were rejected; first: line "
                         f"{line}: {[p.as_dict() for p in first]}")
    return report.created_subject_ids


def make_targets(rt: Runtime, clock: ShiftedClock, count: int, per_target: int,
                 seed: int) -> tuple[list[Target], Counter[str]]:
    """``count`` subjects with ``per_target`` records each, written with the clock at
    WRITTEN_AT; then, at today's time, some history: the subject's records listed and two of
    them read, marketing consent granted then withdrawn, an access and an erasure request."""
    gen = DemoGenerator(seed)
    clock.set_to(WRITTEN_AT)
    try:
        ids = _import(rt, "persons", [gen.person() for _ in range(count)])
        by_collection: dict[str, list[dict[str, Any]]] = {}
        for sid in ids:
            for collection, row in target_records(gen, sid, per_target - 1):
                by_collection.setdefault(collection, []).append(row)
        for collection, rows in by_collection.items():
            _import(rt, collection, rows)
    finally:
        clock.set_to(None)
    made = Counter({"persons": len(ids), **{c: len(r) for c, r in by_collection.items()}})
    targets = []
    for sid in ids:
        found = rt.vault.list_subject_records(PRINCIPAL, sid, "legal_obligation")
        if len(found) != per_target:
            raise SystemExit(f"target {sid} holds {len(found)} records, not {per_target}")
        for rec in found[:2]:
            rt.vault.get_record(PRINCIPAL, rec.collection, rec.id, PURPOSE[rec.collection])
        rt.consent.record(PRINCIPAL, sid, "marketing", True, "privacy-notice", "2024.1",
                          "web_form", "website")
        rt.consent.record(PRINCIPAL, sid, "marketing", False, None, None, "email")
        access = rt.dsr.create(PRINCIPAL, sid, "access", "gdpr", channel="email")
        erase = rt.dsr.create(PRINCIPAL, sid, "erasure", "gdpr", channel="email")
        targets.append(Target(sid, access.id, erase.id))
    return targets, made


# -- timing ---------------------------------------------------------------------------------

def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    k = max(0, min(len(sorted_ns) - 1, round(q / 100 * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[k] / 1e6


def summary(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)
    return {"p50_ms": round(percentile(s, 50), 2), "p95_ms": round(percentile(s, 95), 2),
            "mean_ms": round(statistics.fmean(s) / 1e6, 2), "min_ms": round(s[0] / 1e6, 2),
            "max_ms": round(s[-1] / 1e6, 2)}


def run_access(rt: Runtime, targets: list[Target], per_target: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for t in targets:
        t0 = clock()
        result = rt.packager.build(PRINCIPAL, t.subject_id, t.access_request)
        out.append(clock() - t0)
        if result["records"] != per_target:
            raise SystemExit(f"access package of {t.subject_id} holds {result['records']} "
                             f"records, not {per_target}")
        # The package files stay: the subject's erasure deletes them, as it does in service.
    return out


def run_erase(rt: Runtime, targets: list[Target], per_target: int,
              outcomes: Counter[str]) -> tuple[list[int], list[int]]:
    """(latency of each erase, of which: the data key's destruction in the key store)."""
    out: list[int] = []
    clock = time.perf_counter_ns
    keys = rt.eraser.keys
    destroy = keys.destroy
    in_keystore: list[int] = []

    def timed_destroy(subject_ids: Any, reason: str) -> int:
        t0 = clock()
        try:
            return destroy(subject_ids, reason)
        finally:
            in_keystore.append(clock() - t0)

    keys.destroy = timed_destroy  # type: ignore[method-assign]  # instrument, same behaviour
    try:
        for t in targets:
            t0 = clock()
            cert = rt.eraser.erase(PRINCIPAL, t.subject_id, t.erase_request)
            out.append(clock() - t0)
            complete = (cert["status"] == "complete" and not cert["kept"]
                        and cert["data_key"]["state"] == "destroyed"
                        and cert["erased"]["records"] == per_target)
            outcomes["complete" if complete else "incomplete"] += 1
            outcomes["records_kept"] += len(cert["kept"])
    finally:
        del keys.destroy  # type: ignore[method-assign]
    return out, in_keystore


def forget_keys(rt: Runtime, targets: list[Target]) -> None:
    """A request is fulfilled days after the last access: no data key in the process cache."""
    for t in targets:
        rt.vault.keys.forget(t.subject_id)


class Store:
    """One store of ``n`` filler subjects, its runtime and, once made, its targets."""

    def __init__(self, n: int, rt: Runtime, clock: ShiftedClock, url: str | None, have: int,
                 save: Callable[[int], None]) -> None:
        self.n, self.rt, self.clock, self.url, self.have, self.save = n, rt, clock, url, have, save
        self.load_s: float | None = None
        self.sync_s: float | None = None
        self.targets: list[Target] = []
        self.made: Counter[str] = Counter()
        self.access: list[int] = []
        self.erase: list[int] = []
        self.in_keystore: list[int] = []
        self.outcomes: Counter[str] = Counter()
        self.waited = 0.0
        self.foreign = 0.0


def kept_url(database_url: str | None, n: int) -> str | None:
    """With --data-dir: PostgreSQL gets a kept schema per size; SQLite lives in the data dir."""
    if database_url is None:
        return None
    url = sa.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise SystemExit("with --data-dir, give no --database-url (SQLite in the data "
                         "directory) or a PostgreSQL one")
    schema = f"fdy_bench_dsr_{n}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        engine.dispose()
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


def open_store(stack: ExitStack, args: argparse.Namespace, n: int, root: Path | None
               ) -> Store:
    clock = ShiftedClock()
    if args.data_dir is None:
        assert root is not None
        url = stack.enter_context(fresh_database_url(args.database_url, f"dsr{n}"))
        rt = open_runtime(Settings(data_dir=root / f"n{n}", database_url=url), create=True,
                          clock=clock)
        stack.callback(rt.close)
        return Store(n, rt, clock, url, 0, lambda _: None)
    data_dir: Path = args.data_dir / f"n{n}"
    url = kept_url(args.database_url, n)
    settings = Settings(data_dir=data_dir, database_url=url)
    state = data_dir / STATE_FILE

    def save(count: int) -> None:
        state.write_text(json.dumps({"filler": count, "seed": args.seed}))

    if is_initialised(settings) and state.exists():
        kept = json.loads(state.read_text())
        if kept["seed"] != args.seed or kept["filler"] > n:
            raise SystemExit(f"{data_dir} holds {kept['filler']:,} filler subjects made with "
                             f"seed {kept['seed']}; use another --data-dir")
        rt = open_runtime(settings, clock=clock)
        stack.callback(rt.close)
        log(f"reusing the {kept['filler']:,} filler subjects kept in {data_dir}")
        if kept["filler"] == n:
            prewarm(rt)
        return Store(n, rt, clock, url, int(kept["filler"]), save)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SystemExit(f"{data_dir} is neither empty nor a store kept by this benchmark")
    rt = open_runtime(settings, create=True, clock=clock)
    stack.callback(rt.close)
    save(0)
    return Store(n, rt, clock, url, 0, save)


def prewarm(rt: Runtime) -> None:
    """Read a kept SQLite store once, so the page cache holds it as right after a load."""
    if rt.db.is_sqlite:
        for path in sorted(rt.settings.data_dir.glob("*.db*")):
            with path.open("rb") as fh:
                while fh.read(1 << 24):
                    pass


def fill(store: Store, args: argparse.Namespace) -> None:
    if store.have < store.n:
        store.load_s = round(grow(store.rt, store.url, store.have, store.n, args.seed,
                                  args.load_workers), 1)
        store.have = store.n
        store.save(store.n)
        # Erasure waits on fsyncs (key store): let the load's writeback finish first.
        t0 = time.perf_counter()
        os.sync()
        store.sync_s = round(time.perf_counter() - t0, 1)
        log(f"sync after the load: {store.sync_s} s")


def prepare(store: Store, args: argparse.Namespace, index: int) -> None:
    """Targets and their history; the warm-up ones go through both operations untimed."""
    k, r = args.targets, args.records_per_target
    log(f"N = {store.n:,}: writing {k} + {WARMUP_TARGETS} warm-up targets, {r} records each")
    targets, store.made = make_targets(store.rt, store.clock, k + WARMUP_TARGETS, r,
                                       args.seed + 7919 * (index + 1))
    warm, store.targets = targets[:WARMUP_TARGETS], targets[WARMUP_TARGETS:]
    forget_keys(store.rt, warm)
    run_access(store.rt, warm, r)
    run_erase(store.rt, warm, r, Counter())
    forget_keys(store.rt, store.targets)


def timed_blocks(stores: list[Store], op: str, args: argparse.Namespace,
                 profiled: Store | None, profiler: cProfile.Profile | None) -> None:
    """Each store's targets in two halves, stores in order then reversed (A B B A): a drift
    or a burst of other work on the machine falls on both sizes alike."""
    half = (args.targets + 1) // 2
    seen: set[int] = set()
    for store in [*stores, *reversed(stores)]:
        part = store.targets[half:] if id(store) in seen else store.targets[:half]
        seen.add(id(store))
        if not part:
            continue
        gc.collect()
        store.waited += wait_for_quiet(args.quiet_wait)
        log(f"N = {store.n:,}: timing {len(part)} {op}")
        watch = CpuWatch()
        on = profiler is not None and store is profiled
        if on:
            profiler.enable()  # type: ignore[union-attr]
        if op == "access packages":
            store.access += run_access(store.rt, part, args.records_per_target)
        else:
            ns, keystore_ns = run_erase(store.rt, part, args.records_per_target,
                                        store.outcomes)
            store.erase += ns
            store.in_keystore += keystore_ns
        if on:
            profiler.disable()  # type: ignore[union-attr]
        store.foreign += watch.foreign_s()


def report(store: Store) -> dict[str, Any]:
    a, e = summary(store.access), summary(store.erase)
    log(f"N = {store.n:,}: access p50 {a['p50_ms']} ms p95 {a['p95_ms']} ms; "
        f"erase p50 {e['p50_ms']} ms p95 {e['p95_ms']} ms")
    with store.rt.db.read() as conn:
        by_status = conn.execute(sa.select(subjects.c.status, sa.func.count())
                                 .group_by(subjects.c.status)).all()
        events = conn.execute(sa.select(sa.func.count()).select_from(audit_events)
                              ).scalar_one()
    o = store.outcomes
    return {
        "subjects": store.n,
        "access_p50_ms": a["p50_ms"], "access_p95_ms": a["p95_ms"],
        "erase_p50_ms": e["p50_ms"], "erase_p95_ms": e["p95_ms"],
        "access": a, "erase": e,
        # Inside erase: the key store's delete, commit and WAL checkpoint (its fsyncs).
        "erase_key_destruction": summary(store.in_keystore),
        "erasure": {"complete": o["complete"], "incomplete": o["incomplete"],
                    "records_kept": o["records_kept"], "data_keys_destroyed": o["complete"]},
        "store_subjects_by_status": {s: c for s, c in by_status},
        "audit_events": events,
        "target_records_by_collection": dict(sorted(store.made.items())),
        "load_s": store.load_s,
        "sync_after_load_s": store.sync_s,
        "waited_for_quiet_s": round(store.waited, 1),
        "other_processes_cpu_s": round(store.foreign, 2),
    }


def sizes(text: str) -> list[int]:
    try:
        out = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated subject counts") from None
    if not out or out != sorted(set(out)) or out[0] < 0:
        raise argparse.ArgumentTypeError("one or more subject counts, ascending")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=sizes, default=sizes("2000,20000"),
                   help="filler subjects per store: one size or several ascending, "
                        "e.g. 100000,1000000 (default 2000,20000)")
    p.add_argument("--targets", type=int, default=50, help="timed subjects per size (50)")
    p.add_argument("--records-per-target", type=int, default=20,
                   help="records of each target subject, persons included (20)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="keep the stores here (DIR/n<N>); a rerun imports only what is missing")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL; default SQLite in each store's data directory. "
                        "postgresql+psycopg://... gets a fresh schema per store (dropped at "
                        "the end), or with --data-dir a kept one")
    p.add_argument("--load-workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes importing filler side by side (default 2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    p.add_argument("--quiet-wait", type=float, default=300.0,
                   help="before each timed block wait at most this many seconds for other "
                        "processes to go quiet (default 300; 0 disables)")
    p.add_argument("--profile", type=Path, default=None,
                   help="cProfile the timed operations on the largest store into this file")
    args = p.parse_args()
    if args.targets < 1 or args.records_per_target < 1:
        raise SystemExit("--targets and --records-per-target must be at least 1")

    source = source_state()  # at the start: a long run may outlive HEAD
    with ExitStack() as stack:
        root = stack.enter_context(temp_root()) if args.data_dir is None else None
        stores = [open_store(stack, args, n, root) for n in args.subjects]
        for store in stores:
            fill(store, args)
        for i, store in enumerate(stores):
            prepare(store, args, i)
        profiler = cProfile.Profile() if args.profile else None
        for op in ("access packages", "erasures"):
            timed_blocks(stores, op, args, stores[-1], profiler)
        runs = [report(store) for store in stores]
    if profiler:
        profiler.dump_stats(args.profile)
        log(f"profile of N = {args.subjects[-1]:,} written to {args.profile}")
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)

    last, first = runs[-1], runs[0]
    result: dict[str, Any] = {
        "benchmark": "dsr",
        "subjects": last["subjects"],
        "targets": args.targets,
        "records_per_target": args.records_per_target,
        "access_p50_ms": last["access_p50_ms"], "access_p95_ms": last["access_p95_ms"],
        "erase_p50_ms": last["erase_p50_ms"], "erase_p95_ms": last["erase_p95_ms"],
    }
    met = {"p50_le_50ms": all(r[f"{op}_p50_ms"] <= TARGET_P50_MS
                              for r in runs for op in ("access", "erase"))}
    if len(runs) > 1:
        result["access_ratio"] = round(last["access_p50_ms"] / first["access_p50_ms"], 3)
        result["erase_ratio"] = round(last["erase_p50_ms"] / first["erase_p50_ms"], 3)
        result["ratio_sizes"] = [first["subjects"], last["subjects"]]
        met["ratio_le_1_5"] = max(result["access_ratio"], result["erase_ratio"]) <= TARGET_RATIO
    complete = all(r["erasure"]["incomplete"] == 0 for r in runs)
    result.update({
        "target_p50_ms": TARGET_P50_MS, "target_ratio": TARGET_RATIO, "met": met,
        "erasure_complete": complete,
        "erasure_note": "targets' records dated 2008-2014 (claims closed before 2015): no "
                        "retention duty or hold applies, every erasure deleted all records "
                        "and destroyed the data key" if complete else
                        "some erasures kept records (see by_size[].erasure)",
        "by_size": runs,
        "warmup_targets": WARMUP_TARGETS,
        "load_workers": args.load_workers,
        "database": (describe_url(args.database_url) if args.database_url or not args.data_dir
                     else f"sqlite in {args.data_dir}/n<N>"),
        **machine(),
        "source": source,
    })
    emit(result)


if __name__ == "__main__":
    main()
