"""Equality-search latency through the blind index: ``VaultService.search`` on existing values,
beside the SQLAlchemy-Utils encrypted-columns + HMAC-lookup peer (``_peers.UtilsPeer``).

    python bench/search_latency.py --records 1000000 [--queries 2000] [--database-url URL]
                                   [--data-dir DIR] [--no-peer]

Loads N synthetic persons through the real Importer into a fresh database (rows are generated
while they stream into the importer, so memory stays flat; the load time reported therefore
includes generation), keeps every national_id and email in memory, warms up, then times Q
searches, each on the value of a random existing record in one of the two fields (chosen at
random), with ``time.perf_counter_ns`` around the single ``search`` call (digest, query,
policy decision and decryption of every match). Every match is decrypted, so latency grows with
the number of matches: the JSON also breaks latency down by field and by match count.

``--data-dir DIR`` keeps the loaded store (SQLite in DIR, or the given ``--database-url`` used
as is) and the query values in DIR, and a later run with the same DIR, N and seed skips the
load: a 1,000,000-record load takes ~15 minutes on 2 cores, the queries seconds.

The peer holds the same persons in its own table (same database: SQLite file or PostgreSQL
schema) and answers the same query sequence: one indexed SELECT on the HMAC column, its 14
encrypted fields decrypted by the column type, no policy, no per-subject key, no audit event.
The two sides are timed in alternating blocks (A B B A), so a disturbance hits both.
Then, on SQLite, the ceiling: the same queries digested as the vault does and answered by one
raw ``sqlite3`` SELECT from the blind index to the records (``ceiling`` in the JSON).
The last stdout line is one JSON object.
"""

from __future__ import annotations

import gc
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import (
    COLLECTION,
    PRINCIPAL,
    CpuWatch,
    common_args,
    describe_url,
    emit,
    fresh_runtime,
    import_encrypted,
    log,
    machine,
    make_row,
    progress_logger,
    temp_root,
    wait_for_quiet,
)
from _peers import UtilsPeer, peer_engine

from fiduciary.config import Settings
from fiduciary.datamap.values import validate
from fiduciary.demo import DemoGenerator
from fiduciary.runtime import Runtime, is_initialised, open_runtime
from fiduciary.vault.importer import ParsedRow
from fiduciary.vault.service import VaultService

PURPOSE = "customer_service"
FIELDS = ("national_id", "email")
VALUES_FILE = "bench-search-values.json"
#: Match-count buckets: a search decrypts every match, so latency grows with matches.
BUCKETS = ((1, 1), (2, 5), (6, 20), (21, 10**9))


def streamed_rows(n: int, seed: int, keep: dict[str, list[str]],
                  people: list[dict[str, Any]] | None = None) -> Iterator[ParsedRow]:
    """Generate persons one by one for the importer, remembering the searchable values (and
    the persons, in ``people``, for the peer)."""
    gen = DemoGenerator(seed)
    for i in range(1, n + 1):
        person = gen.person()
        for f in FIELDS:
            keep[f].append(person[f])
        if people is not None:
            people.append(dict(person))
        yield make_row(i, person)


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    k = max(0, min(len(sorted_ns) - 1, round(q / 100 * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[k] / 1e6


def stats(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)
    return {"queries": len(s), "p50_ms": round(percentile(s, 50), 3),
            "p99_ms": round(percentile(s, 99), 3),
            "mean_ms": round(statistics.fmean(s) / 1e6, 3)}


def plan(values: dict[str, list[str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(field, value) of ``count`` queries on random existing records."""
    out = []
    for _ in range(count):
        field = rng.choice(FIELDS)
        out.append((field, rng.choice(values[field])))
    return out


def run_queries(vault: VaultService, queries: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """(field, latency ns, matches) per query."""
    out: list[tuple[str, int, int]] = []
    clock = time.perf_counter_ns
    for field, value in queries:
        where = {field: value}
        t0 = clock()
        found = vault.search(PRINCIPAL, COLLECTION, where, PURPOSE)
        out.append((field, clock() - t0, len(found)))
    return out


def run_peer(peer: UtilsPeer, queries: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """The same queries against the peer, each in its own connection checkout (as a request
    would), the 14 encrypted fields of every match decrypted."""
    out: list[tuple[str, int, int]] = []
    clock = time.perf_counter_ns
    engine = peer.engine
    for field, value in queries:
        t0 = clock()
        with engine.connect() as conn:
            found = peer.search(conn, field, value)
        out.append((field, clock() - t0, len(found)))
    return out


def run_ceiling(rt: Runtime, queries: list[tuple[str, str]]) -> list[tuple[str, int, int]] | None:
    """The ceiling (SQLite only): the value validated and blind-index digested as the vault
    does, then one raw ``sqlite3`` SELECT from the index to the record rows — no policy, no
    key, no decryption, no audit event."""
    url = rt.vault.db.engine.url
    if url.get_backend_name() != "sqlite":
        return None
    spec = rt.vault.collection(COLLECTION)
    codec = rt.vault.codec
    sql = ("SELECT r.id, r.subject_id, r.clear, r.sealed FROM blind_index b JOIN records r "
           "ON r.id = b.record_id WHERE b.digest = ? AND b.collection = ? AND b.field = ?")
    out: list[tuple[str, int, int]] = []
    clock = time.perf_counter_ns
    conn = sqlite3.connect(str(url.database))
    try:
        for field, value in queries:
            t0 = clock()
            digest = codec.digest(spec, field, validate(spec.fields[field], value))
            rows = conn.execute(sql, (digest, spec.name, field)).fetchall()
            out.append((field, clock() - t0, len(rows)))
    finally:
        conn.close()
    return out


def load(rt: Runtime, n: int, seed: int, with_peer: bool
         ) -> tuple[dict[str, list[str]], float, UtilsPeer | None]:
    values: dict[str, list[str]] = {f: [] for f in FIELDS}
    people: list[dict[str, Any]] | None = [] if with_peer else None
    log(f"loading {n:,} persons through the importer")
    t0 = time.perf_counter()
    report = import_encrypted(rt.vault, streamed_rows(n, seed, values, people),
                              progress=progress_logger(n, "imported"))
    load_s = time.perf_counter() - t0
    assert report.imported == n, report
    log(f"loaded {n:,} in {load_s:.1f} s")
    peer = None
    if people is not None:
        peer = UtilsPeer(peer_engine(rt.vault.db.engine.url), rt.vault.collection(COLLECTION))
        t0 = time.perf_counter()
        peer.load(people)
        log(f"peer loaded {n:,} in {time.perf_counter() - t0:.1f} s")
    return values, load_s, peer


def prewarm(data_dir: Path) -> None:
    """Read a kept SQLite store once, so the OS page cache holds it as it does right after a
    load: otherwise the first queries of a rerun measure the disk, not the vault."""
    for path in sorted(data_dir.glob("*.db*")):
        with path.open("rb") as fh:
            while fh.read(1 << 24):
                pass


def open_store(stack: ExitStack, data_dir: Path | None, url: str | None, n: int,
               seed: int, with_peer: bool
               ) -> tuple[Runtime, dict[str, list[str]], float | None, UtilsPeer | None]:
    """(runtime, query values, load seconds or None when a kept store was reused, peer)."""
    if data_dir is None:
        rt = stack.enter_context(fresh_runtime(url, stack.enter_context(temp_root()), "search"))
        return rt, *load(rt, n, seed, with_peer)
    settings = Settings(data_dir=data_dir, database_url=url)
    saved = data_dir / VALUES_FILE
    if is_initialised(settings) and saved.exists():
        kept = json.loads(saved.read_text())
        if (kept["records"], kept["seed"]) != (n, seed):
            raise SystemExit(f"{data_dir} holds {kept['records']:,} records (seed "
                             f"{kept['seed']}); use another --data-dir")
        rt = open_runtime(settings)
        stack.callback(rt.close)
        log(f"reusing the {n:,} records kept in {data_dir}")
        prewarm(data_dir)
        peer = None
        if with_peer and kept.get("peer_keys"):
            peer = UtilsPeer(peer_engine(rt.vault.db.engine.url), rt.vault.collection(COLLECTION),
                             tuple(kept["peer_keys"]))
        elif with_peer:
            log("this kept store has no peer table: timing the vault alone")
        return rt, kept["values"], None, peer
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SystemExit(f"{data_dir} is neither empty nor a store kept by this benchmark")
    rt = open_runtime(settings, create=True)
    stack.callback(rt.close)
    values, load_s, peer = load(rt, n, seed, with_peer)
    saved.write_text(json.dumps({"records": n, "seed": seed, "values": values,
                                 "peer_keys": [peer.key, peer.hkey.hex()] if peer else None}))
    return rt, values, load_s, peer


def main() -> None:
    p = common_args(__doc__.splitlines()[0], default_records=20_000)
    p.add_argument("--queries", type=int, default=2000, help="timed searches (default 2000)")
    p.add_argument("--warmup", type=int, default=500, help="untimed searches first (default 500)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="keep the loaded store here and reuse it on later runs")
    p.add_argument("--no-peer", action="store_true",
                   help="time the vault alone (no SQLAlchemy-Utils peer table)")
    args = p.parse_args()
    n = args.records

    peer_timed: list[tuple[str, int, int]] = []
    with ExitStack() as stack:
        rt, values, load_s, peer = open_store(stack, args.data_dir, args.database_url, n,
                                              args.seed, not args.no_peer)
        log(f"warming up with {args.warmup} searches")
        gc.collect()
        rng = random.Random(args.seed + 1)
        warm = plan(values, args.warmup, rng)
        run_queries(rt.vault, warm)
        if peer is not None:
            run_peer(peer, warm)
        queries = plan(values, args.queries, rng)
        waited = wait_for_quiet(args.quiet_wait)
        log(f"timing {args.queries} searches" + (" on each side, A B B A" if peer else ""))
        watch = CpuWatch()
        timed: list[tuple[str, int, int]] = []
        if peer is None:
            timed = run_queries(rt.vault, queries)
        else:
            half = len(queries) // 2
            timed += run_queries(rt.vault, queries[:half])
            peer_timed += run_peer(peer, queries[:half])
            peer_timed += run_peer(peer, queries[half:])
            timed += run_queries(rt.vault, queries[half:])
            peer.engine.dispose()
        foreign = watch.foreign_s()
        ceiling = run_ceiling(rt, queries)
        # What the committed audit event costs a search: the same queries with auditing off
        # (untimed for the headline figures; this is the profile of the gap to the peer).
        rt.vault.audit.enabled = False
        try:
            unaudited = run_queries(rt.vault, queries)
        finally:
            rt.vault.audit.enabled = True

    every = sorted(ns for _, ns, _ in timed)
    hits = [m for _, _, m in timed]
    peer_side: dict[str, Any] | None = None
    if peer_timed:
        peer_every = sorted(ns for _, ns, _ in peer_timed)
        peer_side = {**stats(peer_every),
                     "matches_agree": [m for _, _, m in peer_timed] == hits,
                     "what": "SQLAlchemy-Utils StringEncryptedType (AesGcmEngine, one key) + "
                             "HMAC lookup columns, 14 fields decrypted"}
    emit({
        "benchmark": "search_latency",
        "records": n,
        "queries": len(every),
        "p50_ms": round(percentile(every, 50), 3),
        "p99_ms": round(percentile(every, 99), 3),
        "mean_ms": round(statistics.fmean(every) / 1e6, 3),
        "max_ms": round(every[-1] / 1e6, 3),
        "target_p99_ms": 2.0,
        "peer": peer_side,
        "ceiling": ({**stats(sorted(ns for _, ns, _ in ceiling)),
                     "matches_agree": [m for _, _, m in ceiling] == hits,
                     "what": "value digested as the vault does, then one raw sqlite3 SELECT "
                             "index -> records (no policy, key, decryption or event)"}
                    if ceiling else None),
        "unaudited": {**stats(sorted(ns for _, ns, _ in unaudited)),
                      "what": "the same searches with the audit event switched off"},
        "p50_vs_peer": (round(percentile(every, 50) / peer_side["p50_ms"], 3)
                        if peer_side else None),
        "by_field": {f: stats([ns for g, ns, _ in timed if g == f]) for f in FIELDS
                     if any(g == f for g, _, _ in timed)},
        "by_matches": {(f"{lo}" if lo == hi else f"{lo}+" if hi > 10**6 else f"{lo}-{hi}"):
                       stats([ns for _, ns, m in timed if lo <= m <= hi])
                       for lo, hi in BUCKETS if any(lo <= m <= hi for m in hits)},
        "matches_per_query": {"mean": round(statistics.fmean(hits), 3), "max": max(hits)},
        "purpose": PURPOSE,
        "warmup_queries": args.warmup,
        "load_s": round(load_s, 1) if load_s is not None else None,
        "waited_for_quiet_s": waited,
        "other_processes_cpu_s": foreign,
        "database": describe_url(args.database_url),
        **machine(),
    })


if __name__ == "__main__":
    main()
