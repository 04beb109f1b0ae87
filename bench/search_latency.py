"""Equality-search latency through the blind index: ``VaultService.search`` on existing values.

    python bench/search_latency.py --records 1000000 [--queries 2000] [--database-url URL]

Loads N synthetic persons through the real Importer into a fresh database (rows are generated
while they stream into the importer, so memory stays flat; the load time reported therefore
includes generation), keeps every national_id and email in memory, warms up, then times Q
searches, each on a random existing value of one of the two fields (chosen at random), with
``time.perf_counter_ns`` around the single ``search`` call (digest, query, decryption of every
match, purpose filtering). The last stdout line is one JSON object.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Iterator

from _common import (
    COLLECTION,
    Row,
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
)

from fiduciary.demo import DemoGenerator
from fiduciary.vault.service import VaultService

PURPOSE = "customer_service"
FIELDS = ("national_id", "email")


def streamed_rows(n: int, seed: int, keep: dict[str, list[str]]) -> Iterator[Row]:
    """Generate persons one by one for the importer, remembering the searchable values."""
    gen = DemoGenerator(seed)
    for i in range(1, n + 1):
        person = gen.person()
        for f in FIELDS:
            keep[f].append(person[f])
        yield make_row(i, person)


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    k = max(0, min(len(sorted_ns) - 1, round(q / 100 * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[k] / 1e6


def run_queries(vault: VaultService, values: dict[str, list[str]], count: int,
                rng: random.Random) -> tuple[dict[str, list[int]], list[int]]:
    lat: dict[str, list[int]] = {f: [] for f in FIELDS}
    hits: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(count):
        field = rng.choice(FIELDS)
        where = {field: rng.choice(values[field])}
        t0 = clock()
        found = vault.search(COLLECTION, where, PURPOSE)
        lat[field].append(clock() - t0)
        hits.append(len(found))
    return lat, hits


def main() -> None:
    p = common_args(__doc__.splitlines()[0], default_records=50_000)
    p.add_argument("--queries", type=int, default=2000, help="timed searches (default 2000)")
    p.add_argument("--warmup", type=int, default=500, help="untimed searches first (default 500)")
    args = p.parse_args()
    n = args.records

    values: dict[str, list[str]] = {f: [] for f in FIELDS}
    with temp_root() as root, fresh_runtime(args.database_url, root, "search") as rt:
        log(f"loading {n:,} persons through the importer ({describe_url(args.database_url)})")
        t0 = time.perf_counter()
        report = import_encrypted(rt.vault, streamed_rows(n, args.seed, values),
                                  progress=progress_logger(n, "imported"))
        load_s = time.perf_counter() - t0
        assert report.imported == n, report
        log(f"loaded {n:,} in {load_s:.1f} s; warming up with {args.warmup} searches")
        gc.collect()
        rng = random.Random(args.seed + 1)
        run_queries(rt.vault, values, args.warmup, rng)
        log(f"timing {args.queries} searches")
        lat, hits = run_queries(rt.vault, values, args.queries, rng)

    every = sorted(ns for f in FIELDS for ns in lat[f])
    result = {
        "benchmark": "search_latency",
        "records": n,
        "queries": len(every),
        "p50_ms": round(percentile(every, 50), 3),
        "p99_ms": round(percentile(every, 99), 3),
        "mean_ms": round(statistics.fmean(every) / 1e6, 3),
        "max_ms": round(every[-1] / 1e6, 3),
        "target_p99_ms": 2.0,
        "by_field": {
            f: {"queries": len(lat[f]),
                "p50_ms": round(percentile(sorted(lat[f]), 50), 3),
                "p99_ms": round(percentile(sorted(lat[f]), 99), 3),
                "mean_ms": round(statistics.fmean(lat[f]) / 1e6, 3)}
            for f in FIELDS if lat[f]
        },
        "matches_per_query": {"mean": round(statistics.fmean(hits), 3), "max": max(hits)},
        "purpose": PURPOSE,
        "warmup_queries": args.warmup,
        "load_s": round(load_s, 1),
        "database": describe_url(args.database_url),
        **machine(),
    }
    emit(result)


if __name__ == "__main__":
    main()
