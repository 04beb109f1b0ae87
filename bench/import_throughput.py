"""Bulk-import throughput: the real Importer (encrypted + blind-indexed) against the same rows
stored as plaintext through the same storage layer, the peer a team would build, and the floor.

    python bench/import_throughput.py --records 100000 [--database-url URL] [--repeats 3]

Rows are generated before any timing. Each timed run writes into its own fresh, empty database
(SQLite: a new file in a new data directory; PostgreSQL: a new schema), so neither side pays for
the other's rows in its B-trees. Sides alternate (plaintext first in odd repeats, encrypted first
in even ones) and the median of the repeats is reported. The last stdout line is one JSON object.

Beside them (issue 16, target 6), each in its own fresh database too:
``pipelined`` — the importer sealing in a second process while the first inserts
(``Importer(pipeline=True)``, as ``fiduciary import`` runs it; its CPU includes the child's);
``peer`` — SQLAlchemy-Utils ``StringEncryptedType`` (AES-GCM, one key) + HMAC lookup columns
(``_peers.UtilsPeer``); ``floor`` (SQLite) — the plaintext rows and index rows through bare
``sqlite3.executemany`` with time-ordered ids (``_peers.raw_floor``); ``pgcrypto``
(PostgreSQL) — ``pgp_sym_encrypt`` (tuned) + ``hmac()`` in the server (``_peers.PgcryptoPeer``).

PostgreSQL only: ``--pg-floor`` adds the floor there too, the same plaintext rows through bare
psycopg ``executemany`` (``floor``) and through ``COPY`` (``floor_copy``), to price that lever;
``--pg-statements`` profiles each side in the server (``_pgprofile.ServerProfile``: top
statements by execution time, planning time, commits, WAL, server CPU; the server must preload
``pg_stat_statements``: ``python bench/_pgprofile.py -- python bench/import_throughput.py
--pg-statements ...`` starts one), and times, inside the importer's sides, the key store's
inserts and the database write transactions from the client.
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import (
    BATCH_SIZE,
    CpuWatch,
    as_rows,
    common_args,
    describe_url,
    emit,
    fresh_runtime,
    generate_persons,
    import_encrypted,
    insert_plaintext,
    log,
    machine,
    temp_root,
    wait_for_quiet,
)
from _peers import PgcryptoPeer, UtilsPeer, peer_engine, pg_floor, raw_floor
from _pgprofile import ServerProfile, format_profile, timing_calls

from fiduciary.runtime import Runtime


def own_cpu_s() -> float:
    """CPU of this process and of its children that have ended (the pipelined importer's
    sealing process)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(run: Callable[[], Any],
          start: Callable[[], None] | None = None) -> tuple[float, float, float, Any]:
    """(wall s, our CPU s with our children's, other processes' CPU s, result); ``start``
    runs first, untimed (the server profile's reset, after a side's setup)."""
    if start is not None:
        start()
    watch = CpuWatch()
    wall, cpu = time.perf_counter(), own_cpu_s()
    result = run()
    used = own_cpu_s() - cpu
    return time.perf_counter() - wall, used, watch.foreign_s(used), result


def main() -> None:
    p = common_args(__doc__.splitlines()[0], default_records=10_000)
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per side, alternating order; the median is reported")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--pg-statements", action="store_true",
                   help="PostgreSQL: profile each side in the server (pg_stat_statements)")
    p.add_argument("--pg-floor", action="store_true",
                   help="PostgreSQL: add the floor by psycopg executemany and by COPY")
    args = p.parse_args()
    n, batch = args.records, args.batch_size
    postgres = bool(args.database_url) and args.database_url.startswith("postgresql")
    if (args.pg_statements or args.pg_floor) and not postgres:
        p.error("--pg-statements and --pg-floor need a postgresql+psycopg:// --database-url")
    # Before the rows are generated: a server without the extension fails at once.
    profile = ServerProfile(args.database_url) if args.pg_statements else None

    log(f"generating {n:,} persons (seed {args.seed}) before timing")
    rows = as_rows(generate_persons(n, args.seed))

    sides = ["plaintext", "encrypted", "pipelined", "peer", "pgcrypto" if postgres else "floor"]
    if args.pg_floor:
        sides += ["floor", "floor_copy"]
    profiles: dict[str, list[dict[str, Any]]] = {label: [] for label in sides}
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in sides}
    people = [values for _, values, _ in rows]
    # The generated rows live through every side: out of the collector's way, as a stream
    # read from a file would be (each full collection otherwise walks all N of them).
    gc.collect()
    gc.freeze()
    foreign: list[float] = []
    waited = [0.0]
    with temp_root() as root:
        def side(label: str, rt: Runtime) -> None:
            waited[0] += wait_for_quiet(args.quiet_wait)
            spec = rt.vault.collection("persons")
            # Client-side seconds in the key store's inserts and in the write transactions.
            keystore_s, write_s = [0.0], [0.0]
            if profile is not None:
                timing_calls(rt.vault.keys.store, "put", keystore_s)
                timing_calls(rt.vault.db, "write", write_s, context=True)
            reset = profile.reset if profile is not None else None
            if label in ("encrypted", "pipelined"):
                wall, cpu, other, report = timed(lambda: import_encrypted(
                    rt.vault, rows, batch, pipeline=label == "pipelined"), reset)
                assert report.imported == n, report
            elif label == "peer":
                utils = UtilsPeer(peer_engine(rt.vault.db.engine.url), spec)
                wall, cpu, other, done = timed(lambda: utils.load(people), reset)
                utils.engine.dispose()
                assert done == n
            elif label == "pgcrypto":
                pg = PgcryptoPeer(peer_engine(rt.vault.db.engine.url), spec)
                wall, cpu, other, done = timed(lambda: pg.load(people), reset)
                pg.engine.dispose()
                assert done == n
            elif label in ("floor", "floor_copy") and postgres:
                engine = peer_engine(rt.vault.db.engine.url)
                wall, cpu, other, done = timed(lambda: pg_floor(
                    engine, spec, people, "bench_plain_persons", copy=label == "floor_copy"), reset)
                engine.dispose()
                assert done == n
            elif label == "floor":
                path = str(rt.vault.db.engine.url.database)
                wall, cpu, other, done = timed(
                    lambda: raw_floor(path, spec, people, "bench_plain_persons"))
                assert done == n
            else:
                wall, cpu, other, ids = timed(
                    lambda: insert_plaintext(rt.vault, rows, batch), reset)
                assert len(ids) == n
            runs[label].append((wall, cpu))
            foreign.append(other)
            log(f"{label}: {n:,} rows in {wall:.2f} s ({n / wall:,.0f} rows/s, cpu {cpu:.2f} s, "
                f"other processes' cpu {other:.2f} s)")
            if profile is not None:
                # Closed connections hand their transaction counts to the statistics.
                rt.vault.db.engine.dispose()
                found = profile.read(wall, cpu)
                if found["server_cpu_s"] is not None:
                    found["other_processes_cpu_s"] = round(
                        max(other - found["server_cpu_s"], 0.0), 2)
                if label in ("encrypted", "pipelined", "plaintext"):
                    found["client_write_transactions_s"] = round(write_s[0], 3)
                    found["client_keystore_put_s"] = round(keystore_s[0], 3)
                profiles[label].append(found)
                log(format_profile(label, found))
                if label in ("encrypted", "pipelined", "plaintext"):
                    log(f"{label}: client-side {write_s[0]:.2f} s in write transactions, "
                        f"{keystore_s[0]:.2f} s in the key store's inserts")

        # Warm-up (imports, compiled statements, AES-GCM/HMAC objects) on a throwaway database.
        with fresh_runtime(args.database_url, root, "warmup") as rt:
            warm = rows[: min(n, 2 * batch)]
            import_encrypted(rt.vault, warm, batch)
            insert_plaintext(rt.vault, warm, batch)
        for i in range(args.repeats):
            order = sides if i % 2 == 0 else sides[::-1]
            for label in order:
                with fresh_runtime(args.database_url, root, f"{label}-{i}") as rt:
                    side(label, rt)
                shutil.rmtree(root / f"{label}-{i}", ignore_errors=True)

    enc = statistics.median(w for w, _ in runs["encrypted"])
    plain = statistics.median(w for w, _ in runs["plaintext"])
    rate = {label: round(n / statistics.median(w for w, _ in v)) for label, v in runs.items()}
    emit({
        "benchmark": "import_throughput",
        "records": n,
        "encrypted_s": round(enc, 3),
        "plaintext_s": round(plain, 3),
        "ratio": round(enc / plain, 3),
        "records_per_s": round(n / enc),
        "plaintext_records_per_s": round(n / plain),
        "encrypted_cpu_s": round(statistics.median(c for _, c in runs["encrypted"]), 3),
        "plaintext_cpu_s": round(statistics.median(c for _, c in runs["plaintext"]), 3),
        "runs": {k: [round(w, 3) for w, _ in v] for k, v in runs.items()},
        "records_per_s_by_side": rate,
        "cpu_s_by_side": {k: round(statistics.median(c for _, c in v), 3)
                          for k, v in runs.items()},
        "vs_peer": {k: round(rate[k] / rate["peer"], 3) for k in ("encrypted", "pipelined")},
        "vs_floor": ({k: round(rate[k] / rate["floor"], 3) for k in ("encrypted", "pipelined")}
                     if "floor" in rate and not postgres else None),
        "vs_pgcrypto": ({k: round(rate[k] / rate["pgcrypto"], 3)
                         for k in ("encrypted", "pipelined")} if "pgcrypto" in rate else None),
        "repeats": args.repeats,
        "other_processes_cpu_s_max": max(foreign),
        "waited_for_quiet_s": round(waited[0], 1),
        "batch_size": batch,
        "database": describe_url(args.database_url),
        "pg_server": profile.settings if profile is not None else None,
        "pg_statements": profiles if profile is not None else None,
        "vs_pg_floor": ({k: round(rate[k] / rate["floor"], 3)
                         for k in ("encrypted", "pipelined", "pgcrypto", "floor_copy")}
                        if args.pg_floor else None),
        "fresh_database_per_run": True,
        "target": {"ratio_max": 1.5, "records_per_s_min": 20_000, "vs_peer_min": 1.5,
                   "vs_floor_min": 0.5, "vs_pgcrypto_min": 1.0},
        **machine(),
    })


if __name__ == "__main__":
    main()
