"""``fiduciary audit verify`` against the plain-Python read-and-hash loop, in one run
(issue 16, target 5: >= 100,000 events/s over 1,000,000 events on SQLite and >= 0.5x the loop).

    python bench/audit_verify.py [--events N] [--repeats R] [--data-dir DIR]
                                 [--database-url URL] [--quiet-wait S] [--profile FILE]
                                 [--workers W] [--no-tamper]

Builds a trail of N events through the audit package's own code (``AuditLog.event`` and
``append_many`` in big transactions, then ``AuditTrail.sequence`` in rounds of
``audit_checkpoint_events`` with a signed checkpoint each, as ``serve`` leaves it). The mix:
record reads (some refused, some masked), searches with counts and query digests, subject
lists and exports; 1 % carry a non-ASCII detail. Then it times, alternating L V V L:

- L, the loop: every sequenced event read in leaf order through the raw driver, its
  RFC 9162 leaf hash, and the tree's root (``merkle.LevelNodes``); no check at all;
- V, ``audit.verify.verify``, what the CLI runs: every event proved canonical, its id and
  recorded leaf hash compared, every checkpoint's signature, root and consistency checked,
  with ``--workers`` processes (default one per core, as the CLI); and V1, the same in one
  process, for the record (phases L V V1 V1 V L).

Then the CLI itself once (``fiduciary audit verify``, a process of its own), and the same
verification on a tampered copy: one changed byte, one deleted event, one reordered pair,
each undone afterwards, with the message reported. With ``--data-dir`` a trail already built
there is reused. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import CpuWatch, describe_url, emit, log, machine, temp_root, wait_for_quiet

from fiduciary.audit import merkle
from fiduciary.audit.events import AuditEvent, AuditLog
from fiduciary.audit.trail import public_key_bytes
from fiduciary.audit.verify import verify
from fiduciary.config import Settings
from fiduciary.errors import VerificationFailed
from fiduciary.principal import ActorKind, Principal
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import audit_events

FIELDS = ["address_line", "birth_date", "email", "first_name", "last_name", "national_id",
          "phone", "postal_code"]
ROLES = [("claims_adjuster",), ("call_center_agent",), ("fraud_investigator",),
         ("privacy_officer",)]
BUILD_BATCH = 20_000


def staff(n: int, rng: random.Random) -> list[Principal]:
    return [Principal(id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                      kind=ActorKind.USER, username=f"staff{i:03d}", roles=rng.choice(ROLES))
            for i in range(n)]


def make_events(log_: AuditLog, people: list[Principal], n: int,
                rng: random.Random) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    for _ in range(n):
        who = rng.choice(people)
        subject = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        record = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        fields = rng.sample(FIELDS, rng.randint(2, 6))
        roll = rng.random()
        if roll < 0.70:
            deny = rng.random() < 0.03
            ev = log_.event(who, "record.read", collection="persons", record_ids=[record],
                            subject_ids=[subject], fields=[] if deny else fields,
                            purpose="customer_service", decision="deny" if deny else "allow",
                            reason="relationship_required" if deny else None,
                            details={"masked": ["national_id"]} if rng.random() < 0.5 else {})
        elif roll < 0.85:
            hits = [str(uuid.UUID(int=rng.getrandbits(128), version=4))
                    for _ in range(rng.randint(0, 3))]
            ev = log_.event(who, "record.search", collection="persons", record_ids=hits,
                            subject_ids=hits, fields=fields, purpose="claims_handling",
                            details={"result_count": len(hits), "fields_queried": ["email"],
                                     "query_digests": {"email": f"{rng.getrandbits(64):016x}"}})
        elif roll < 0.99:
            ev = log_.event(who, "subject.records", subject_ids=[subject],
                            record_ids=[record], purpose="claims_handling",
                            details={"collections": ["claims", "persons"]})
        else:  # a non-ASCII detail: these take the exact (slower) path
            ev = log_.event(who, "export.persons", collection="persons", fields=fields,
                            purpose="policy_administration",
                            details={"file": f"Zoë-Ærø-{rng.randint(1, 99)}.csv"})
        out.append(ev)
    return out


def build(rt: Runtime, n: int, seed: int) -> None:
    rng = random.Random(seed)
    people = staff(50, rng)
    have = rt.audit.count()
    t0 = time.monotonic()
    while have < n:
        batch = make_events(rt.audit, people, min(BUILD_BATCH, n - have), rng)
        with rt.db.write() as conn:
            rt.audit.append_many(conn, batch)
        have += len(batch)
        # Rounds of checkpoint_every events: a signed checkpoint (and its event) each time.
        while rt.trail.sequence(batch_size=rt.trail.checkpoint_every,
                                force_checkpoint=True) < rt.audit.count():
            pass
        log(f"built {have:,}/{n:,} events ({have / (time.monotonic() - t0):,.0f}/s)")


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def plain_loop(rt: Runtime) -> tuple[int, bytes]:
    """Read every sequenced event in leaf order and hash it RFC 9162-style: the floor."""
    with rt.db.read() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor() if rt.db.is_sqlite else raw.cursor(name="bench_plain_loop")
        cur.execute("SELECT event FROM audit_events WHERE leaf_index IS NOT NULL "
                    "ORDER BY leaf_index")
        leaves: list[bytes] = []
        while rows := cur.fetchmany(10_000):
            leaves.extend(merkle.leaf_hash(r[0].encode()) for r in rows)
        cur.close()
    tree = merkle.LevelNodes(leaves)
    return tree.size, merkle.root(tree.size, tree.get_node)


def tampered(rt: Runtime, key: bytes) -> dict[str, str]:
    """Verify after each of three tamperings, each undone before the next."""
    with rt.db.read() as conn:
        size = int(conn.execute(sa.select(sa.func.max(audit_events.c.leaf_index))).scalar_one())
    mid = size // 2
    cases = {
        "changed_byte": ["UPDATE audit_events SET event = substr(event, 1, 20) || 'X' || "
                         "substr(event, 22) WHERE leaf_index = :i"],
        "deleted_event": ["DELETE FROM audit_events WHERE leaf_index = :i"],
        "reordered_pair": ["UPDATE audit_events SET leaf_index = -1 WHERE leaf_index = :i",
                           "UPDATE audit_events SET leaf_index = :i WHERE leaf_index = :i + 1",
                           "UPDATE audit_events SET leaf_index = :i + 1 WHERE leaf_index = -1"],
    }
    out: dict[str, str] = {}
    touched = audit_events.c.leaf_index.in_([mid, mid + 1])
    for name, statements in cases.items():
        with rt.db.read() as conn:
            before = [dict(r._mapping) for r in conn.execute(sa.select(audit_events)
                                                             .where(touched))]
        with rt.db.write() as conn:
            for sql in statements:
                conn.execute(sa.text(sql), {"i": mid})
        t0 = time.monotonic()
        try:
            verify(rt.db, key)
            out[name] = "verified (NOT caught)"
        except VerificationFailed as exc:
            out[name] = f"{exc} ({time.monotonic() - t0:.1f} s)"
        with rt.db.write() as conn:  # undo
            conn.execute(audit_events.delete().where(
                audit_events.c.seq.in_([r["seq"] for r in before])))
            conn.execute(audit_events.insert(), before)
        log(f"{name}: {out[name]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2, help="L V V L rounds (default 2)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep (or reuse) the trail here; default a temporary directory")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--quiet-wait", type=float, default=300.0)
    ap.add_argument("--profile", type=Path, default=None,
                    help="also write a cProfile of one verification to this file")
    ap.add_argument("--no-tamper", action="store_true", help="skip the tampered runs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes verify uses, as the CLI does (default: one per core)")
    args = ap.parse_args()
    with temp_root() as tmp:
        data_dir = args.data_dir or tmp / "data"
        settings = Settings(data_dir=data_dir, database_url=args.database_url)
        rt = open_runtime(settings, create=True)
        try:
            t0 = time.monotonic()
            build(rt, args.events, args.seed)
            build_s = time.monotonic() - t0
            key = public_key_bytes(rt.trail.key)
            n = rt.trail.sequence()
            result = run(rt, settings, key, n, args)
            result.update(events=n, build_s=round(build_s, 1), backend=rt.db.engine.dialect.name,
                          database=describe_url(args.database_url))
        finally:
            rt.close()
    emit(result)


def run(rt: Runtime, settings: Settings, key: bytes, n: int,
        args: argparse.Namespace) -> dict[str, Any]:
    waited = wait_for_quiet(args.quiet_wait)
    times: dict[str, list[float]] = {"loop": [], "verify": [], "verify_one": []}
    cpu: dict[str, list[float]] = {"loop": [], "verify": [], "verify_one": []}
    watch = CpuWatch()
    helpers_cpu = 0.0
    roots = set()
    for _ in range(args.repeats):
        for which in ("loop", "verify", "verify_one", "verify_one", "verify", "loop"):
            c0, k0, t0 = time.process_time(), children_cpu(), time.perf_counter()
            if which == "loop":
                size, root = plain_loop(rt)
            else:
                done = verify(rt.db, key, workers=args.workers if which == "verify" else 1)
                size, root = done.size, done.root
            times[which].append(time.perf_counter() - t0)
            helpers_cpu += children_cpu() - k0
            # The helper processes' CPU counts as verification's own.
            cpu[which].append(time.process_time() - c0 + children_cpu() - k0)
            roots.add((size, root))
            log(f"{which}: {n / times[which][-1]:,.0f} events/s "
                f"({times[which][-1]:.2f} s, {cpu[which][-1]:.2f} CPU-s)")
    foreign = watch.foreign_s(also_ours=helpers_cpu)
    assert len(roots) == 1, "the loop and verify disagree on the tree"
    if args.profile:
        cProfile.runctx("verify(rt.db, key)", globals(), {"rt": rt, "key": key},
                        str(args.profile))
    env = {**os.environ, "FIDUCIARY_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FIDUCIARY_DATABASE_URL"] = settings.database_url
    t0 = time.perf_counter()
    cli = subprocess.run([str(Path(sys.executable).with_name("fiduciary")), "audit", "verify"],
                         env=env, capture_output=True, text=True)
    cli_s = time.perf_counter() - t0
    log(f"CLI: exit {cli.returncode} in {cli_s:.2f} s: {(cli.stdout + cli.stderr).strip()}")
    loop_s, verify_s = statistics.median(times["loop"]), statistics.median(times["verify"])
    one_s = statistics.median(times["verify_one"])
    return {
        "loop_events_per_s": round(n / loop_s), "verify_events_per_s": round(n / verify_s),
        "ratio": round(loop_s / verify_s, 3), "workers": args.workers,
        "verify_one_process_events_per_s": round(n / one_s),
        "ratio_one_process": round(loop_s / one_s, 3), "target_events_per_s": 100_000,
        "target_ratio": 0.5, "loop_s": [round(t, 2) for t in times["loop"]],
        "verify_s": [round(t, 2) for t in times["verify"]],
        "loop_cpu_s": [round(t, 2) for t in cpu["loop"]],
        "verify_cpu_s": [round(t, 2) for t in cpu["verify"]],
        "verify_one_process_s": [round(t, 2) for t in times["verify_one"]],
        # CPU time is what a shared machine disturbs least: the ratio that carries across runs.
        "ratio_cpu": round(statistics.median(cpu["loop"]) / statistics.median(cpu["verify"]), 3),
        "verify_events_per_cpu_s": round(n / statistics.median(cpu["verify"])),
        "cli_s": round(cli_s, 2), "cli_exit": cli.returncode,
        "cli_events_per_s": round(n / cli_s),
        "tampered": {} if args.no_tamper else tampered(rt, key),
        "quiet_wait_s": waited, "other_processes_cpu_s": foreign, **machine(),
    }


if __name__ == "__main__":
    main()
