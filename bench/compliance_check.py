"""Compliance posture and evidence pack over a full-size store (issue 14, Speed).

    python bench/compliance_check.py [--subjects 100000] [--staff 500] [--events 1000000]
                                     [--database-url URL] [--profile] [--seed 1]

Seeds (not timed) a store as an insurer would have it at the end of a quarter: ``--staff``
trained staff with MFA of the usual roles, ``--subjects`` customers imported through the real
importer (encrypted, blind-indexed, audited), a review campaign decided, data-subject
requests (open, denied), then ``--events`` audit events of that staff's work (sign-ins, reads,
searches, a few refusals) spread over the quarter 2026-07-01..2026-09-29. The events are
written straight into the trail with their leaf indexes and tree nodes, and a signed
checkpoint (with its own ``audit.checkpoint`` event) every 50,000 leaves, as the sequencer
would have left them: ``fiduciary audit verify`` accepts the result.

Timed: (a) ``rt.posture.check()`` on the last day of the quarter, every control of the
catalogue (target <= 60 s on SQLite); (b) the evidence pack for the quarter,
``rt.evidence.pack`` five days later, its verifier run on it too (target <= 120 s; the
verifier's time is reported apart). ``--profile`` reruns (a) under cProfile and reports each
control's share. Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import (
    CpuWatch,
    as_rows,
    emit,
    fresh_database_url,
    generate_persons,
    import_encrypted,
    log,
    machine,
    temp_root,
    wait_for_quiet,
)
from _staff import REGIONS, ROLE_PURPOSE, train_fully

from fiduciary.audit import merkle
from fiduciary.audit.events import AuditEvent, canonical
from fiduciary.audit.trail import CHECKPOINT_ACTION, AuditTrail, b64, checkpoint_message
from fiduciary.clock import FixedClock, iso
from fiduciary.compliance.evidence import Period
from fiduciary.config import Settings
from fiduciary.principal import SYSTEM, Principal
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import (
    audit_checkpoints,
    audit_events,
    audit_nodes,
    audit_subjects,
    records,
    users,
)

TARGET_CHECK_S = 60.0
TARGET_PACK_S = 120.0
QUARTER = "2026-07-01..2026-09-30"
QUARTER_START = datetime(2026, 7, 1, tzinfo=UTC)
#: The check runs on the last day of the quarter; the pack is made five days later.
CHECK_AT = datetime(2026, 9, 30, 18, 0, tzinfo=UTC)
PACK_AT = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)
ROLES = {"call_center_agent": 0.45, "claims_adjuster": 0.22, "underwriter": 0.15,
         "fraud_investigator": 0.08, "dpo": 0.03, "compliance_officer": 0.02,
         "security_analyst": 0.03, "admin": 0.02}
#: The purpose each working role reads for (the benchmarks' shared table).
PURPOSE = {role: p for role, p in ROLE_PURPOSE.items() if role in ROLES}
PERSON_FIELDS = ["address_line", "city", "date_of_birth", "email", "first_name", "last_name",
                 "phone", "postal_code", "region", "state"]
CHECKPOINT_EVERY = 50_000
INSERT_CHUNK = 20_000


# -- seeding -------------------------------------------------------------------------------
def create_staff(rt: Runtime, n: int, seed: int) -> list[Principal]:
    """``n`` staff of the usual roles, trained in every course, MFA enrolled (set directly:
    enrolment is a person's TOTP dance, which seeding 500 people through would only slow)."""
    rng = random.Random(seed)
    roles = [r for r, share in ROLES.items() for _ in range(max(1, round(n * share)))]
    staff = []
    for i, role in enumerate(roles[:n]):
        regions = [rng.choice(REGIONS)] if role == "call_center_agent" else []
        made = rt.users.create(f"staff{i:04d}", [role], regions, issue_code=False)
        train_fully(rt, made.user.username)
        staff.append(Principal(id=made.user.id, kind="user", username=made.user.username,
                               roles=(role,)))
    with rt.db.write() as conn:
        conn.execute(users.update().values(mfa_enrolled_at=rt.clock.now()))
    return staff


def import_subjects(rt: Runtime, n: int, seed: int) -> list[tuple[str, str]]:
    """(subject id, persons record id) of ``n`` customers imported through the importer."""
    people = generate_persons(n, seed)
    report = import_encrypted(rt.vault, as_rows(people))
    assert report.imported == n, report
    with rt.db.read() as conn:
        return [(r.subject_id, r.id) for r in conn.execute(
            sa.select(records.c.subject_id, records.c.id).where(
                records.c.collection == "persons"))]


def review_access(rt: Runtime) -> int:
    """A campaign over every account, every item kept by the security analysts' pool."""
    campaign = rt.campaigns.start(SYSTEM)
    items = rt.campaigns.overview(SYSTEM, campaign.id).items
    for item in items:
        rt.campaigns.decide(SYSTEM, campaign.id, item.id, "keep")
    return len(items)


def subject_requests(rt: Runtime, subjects: list[tuple[str, str]], rng: random.Random) -> int:
    """Requests of the last week: half still open (within their deadlines), half denied."""
    now = rt.clock.now()
    for k, (subject, _) in enumerate(rng.sample(subjects, min(150, len(subjects)))):
        regime, kind = ("ccpa", "know") if k % 2 else ("gdpr", "access")
        req = rt.dsr.create(SYSTEM, subject, kind, regime, channel="web_form",
                            received_at=now - timedelta(hours=rng.uniform(1, 120)))
        if k % 2 == 0:
            rt.dsr.deny(SYSTEM, req.id, "The requester did not complete verification")
    return 150


def keep_house(rt: Runtime, staff: list[Principal]) -> None:
    """What a diligent insurer did this week: the HR feed applied (everyone active), the
    retention job run, the records of processing generated, the documents attested."""
    feed = "username,status\n" + "".join(f"{p.username},active\n" for p in staff)
    rt.hr.sync_text(feed, SYSTEM)
    rt.retention.run(SYSTEM)
    rt.ropa.generate(SYSTEM, "json")
    for control in ("incident-response-plan", "risk-assessment", "asset-inventory"):
        rt.posture.attest(SYSTEM, control, f"{control} v3 (DMS-{control})",
                          rt.clock.now().date() - timedelta(days=30), "Chief Risk Officer")


class TrailWriter:
    """Appends events to the Merkle log as the sequencer would, without its per-row
    UPDATE: leaf index, tree nodes and signed checkpoints written in bulk."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.trail: AuditTrail = rt.trail
        self.size = rt.trail.sequence(force_checkpoint=True)
        #: The newest node of each level: every left sibling an append needs, and every
        #: node a root over the current size reads.
        self.frontier: dict[int, tuple[int, bytes]] = {}
        self.pending: list[dict[str, Any]] = []
        self.subjects: list[dict[str, str]] = []
        self.nodes: list[dict[str, Any]] = []

    def _get(self, level: int, index: int) -> bytes:
        hit = self.frontier.get(level)
        if hit is not None and hit[0] == index:
            return hit[1]
        with self.rt.db.read() as conn:
            return AuditTrail.node_reader(conn)(level, index)

    def append(self, event: AuditEvent, at: datetime) -> None:
        # RFC 8785 for what these events hold (ASCII keys, strings, integers, no floats) is
        # sorted keys without whitespace; the pure-Python encoder would take minutes for a
        # million events. Checked against it on a sample.
        text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if self.size % 9973 == 0 and canonical(event).decode() != text:
            raise SystemExit(f"event {event['id']}: not canonical JSON as written")
        leaf = merkle.leaf_hash(text.encode())
        for level, index, h in merkle.nodes_to_store(self.size, leaf, self._get):
            self.frontier[level] = (index, h)
            self.nodes.append({"level": level, "index": index, "hash": h})
        actor = event["actor"]
        self.pending.append({
            "event_id": event["id"], "at": at, "action": event["action"],
            "actor": str(actor["id"] or actor["kind"])[:128],
            "subject_ids": " ".join(event["subject_ids"]),
            "record_ids": " ".join(event["record_ids"]), "event": text,
            "leaf_index": self.size})
        self.subjects += [{"subject_id": s, "event_id": event["id"]}
                          for s in event["subject_ids"]]
        self.size += 1
        if len(self.pending) >= INSERT_CHUNK:
            self.flush()

    def checkpoint(self, at: datetime) -> None:
        root = merkle.root(self.size, self._get)
        self.flush()
        with self.rt.db.write() as conn:
            conn.execute(audit_checkpoints.insert(), [{
                "size": self.size, "root": root, "timestamp": at,
                "signature": self.trail.key.sign(checkpoint_message(self.size, root, at)),
                "public_key": self.trail.public_key}])
        event = self.rt.audit.event(None, CHECKPOINT_ACTION, details={
            "size": self.size, "root": b64(root), "timestamp": iso(at)})
        event["time"] = iso(at)
        self.append(event, at)

    def flush(self) -> None:
        if not self.pending:
            return
        with self.rt.db.write() as conn:
            conn.execute(audit_events.insert(), self.pending)
            if self.subjects:
                conn.execute(audit_subjects.insert(), self.subjects)
            conn.execute(audit_nodes.insert(), self.nodes)
        self.pending, self.subjects, self.nodes = [], [], []


def write_events(rt: Runtime, staff: list[Principal], customers: list[tuple[str, str]],
                 n: int, seed: int, start: datetime, end: datetime) -> dict[str, int]:
    """``n`` events of staff work, evenly from ``start`` to ``end``, then a checkpoint."""
    rng = random.Random(seed)
    writer = TrailWriter(rt)
    workers = [p for p in staff if p.roles[0] in PURPOSE]
    span = (end - start).total_seconds()
    counts = {"auth.login": 0, "record.read": 0, "record.search": 0, "denied": 0}
    audit = rt.audit
    started = time.perf_counter()
    for k in range(n):
        at = start + timedelta(seconds=span * k / n)
        p = rng.choice(workers)
        subject, record = rng.choice(customers)
        purpose = PURPOSE[p.roles[0]]
        roll = rng.random()
        if roll < 0.1:
            event = audit.event(p, "auth.login", details={"mfa": "totp"})
            counts["auth.login"] += 1
        elif roll < 0.25:
            event = audit.event(p, "record.search", collection="persons", purpose=purpose,
                                record_ids=[record], subject_ids=[subject],
                                fields=PERSON_FIELDS, details={
                                    "result_count": 1, "fields_queried": ["email"],
                                    "query_digests": {"email": uuid.uuid4().hex}})
            counts["record.search"] += 1
        elif roll < 0.252:
            event = audit.event(p, "record.read", collection="persons", purpose=purpose,
                                record_ids=[record], decision="deny",
                                reason="relationship_required")
            counts["denied"] += 1
        else:
            event = audit.event(p, "record.read", collection="persons", purpose=purpose,
                                record_ids=[record], subject_ids=[subject],
                                fields=PERSON_FIELDS, details={"result_count": 1})
            counts["record.read"] += 1
        event["time"] = iso(at)
        writer.append(event, at)
        if writer.size % CHECKPOINT_EVERY == 0:
            writer.checkpoint(at + timedelta(seconds=1))
        if (k + 1) % 100_000 == 0:
            log(f"wrote {k + 1:,}/{n:,} events ({time.perf_counter() - started:.0f} s)")
    writer.checkpoint(end)
    return counts


def seed_store(rt: Runtime, clock: FixedClock, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    staff = create_staff(rt, args.staff, args.seed)
    log(f"{len(staff)} staff created and trained ({time.perf_counter() - t0:.0f} s)")
    customers = import_subjects(rt, args.subjects, args.seed)
    log(f"{len(customers):,} customers imported ({time.perf_counter() - t0:.0f} s)")
    reviewed = review_access(rt)
    log(f"review campaign: {reviewed} items kept ({time.perf_counter() - t0:.0f} s)")
    counts = write_events(rt, staff, customers, args.events, args.seed, QUARTER_START,
                          CHECK_AT - timedelta(days=1))
    log(f"trail written ({time.perf_counter() - t0:.0f} s)")
    clock.advance(seconds=(CHECK_AT - clock.now()).total_seconds())
    requests = subject_requests(rt, customers, rng)
    keep_house(rt, staff)
    with rt.db.write() as conn:  # everyone signed in this week (no dormant account)
        conn.execute(users.update().values(last_login_at=clock.now() - timedelta(days=2)))
    size = rt.trail.sequence(force_checkpoint=True)
    return {"staff": len(staff), "subjects": len(customers), "review_items": reviewed,
            "subject_requests": requests, "events_by_kind": counts, "trail_size": size,
            "seed_s": round(time.perf_counter() - t0, 1),
            "_staff": staff, "_customers": customers}


# -- timing --------------------------------------------------------------------------------
def timed(what: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, this process's CPU seconds)."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = what()
    return result, time.perf_counter() - w0, time.process_time() - c0


def profile_check(rt: Runtime, top: int = 25) -> dict[str, Any]:
    """Each check function's cumulative time in a run that verifies the trail from its
    first event, as the first run on a store does."""
    prof = cProfile.Profile()
    prof.enable()
    rt.posture.check(full_audit=True)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    by_check: dict[str, float] = {}
    rows = []
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.endswith(("compliance/checks.py", "compliance/trail_check.py")):
            by_check[name] = round(cumulative, 3)
        rows.append((cumulative, f"{Path(filename).name}:{name}"))
    rows.sort(reverse=True)
    return {"by_function_s": dict(sorted(by_check.items(), key=lambda kv: -kv[1])[:top]),
            "top_cumulative": [f"{c:.2f}s {n}" for c, n in rows[:top]]}


def verify_offline(pack: Path) -> tuple[int, float, str]:
    where = pack.parent / "examiner"
    where.mkdir()
    with zipfile.ZipFile(pack) as z:
        (where / "verify_pack.py").write_bytes(z.read("verify_pack.py"))
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-I", "verify_pack.py", str(pack)], cwd=where,
                         capture_output=True, text=True, check=False)
    return run.returncode, time.perf_counter() - t0, run.stdout.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=100_000)
    p.add_argument("--staff", type=int, default=500)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL (default: SQLite in a temporary data directory); "
                        "postgresql+psycopg://... uses a fresh schema, dropped at the end")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true",
                   help="rerun the check under cProfile and report each control's share")
    p.add_argument("--quiet-wait", type=float, default=300.0)
    args = p.parse_args()
    out: dict[str, Any] = {"benchmark": "compliance_check", "subjects": args.subjects,
                           "staff": args.staff, "events": args.events,
                           "backend": "postgresql" if args.database_url else "sqlite"}
    clock = FixedClock(QUARTER_START - timedelta(days=10))
    with temp_root() as root, fresh_database_url(args.database_url, "compliance") as url:
        rt = open_runtime(Settings(data_dir=root / "data", database_url=url,
                                   monitor_interval_seconds=0), create=True, clock=clock)
        try:
            out["store"] = seed_store(rt, clock, args)
            staff, customers = out["store"].pop("_staff"), out["store"].pop("_customers")
            out["waited_for_quiet_s"] = wait_for_quiet(args.quiet_wait)
            watch = CpuWatch()
            results, wall, cpu = timed(rt.posture.check)
            out["check_s"] = round(wall, 2)
            out["check_cpu_s"] = round(cpu, 2)
            out["check_other_processes_cpu_s"] = watch.foreign_s()
            out["controls"] = {s: sum(1 for r in results if r.status.value == s)
                               for s in ("pass", "fail", "not_applicable")}
            out["failing"] = sorted(r.control.id for r in results if r.status.value == "fail")
            log(f"posture check: {wall:.1f} s ({cpu:.1f} s CPU), {out['controls']}")
            # The daily run: a day's work later, only the new events are verified.
            day = max(args.events // 90, 1)
            write_events(rt, staff, customers, day, args.seed + 1, CHECK_AT,
                         CHECK_AT + timedelta(hours=23))
            clock.advance(days=1)
            watch = CpuWatch()
            _, wall, cpu = timed(rt.posture.check)
            out["daily_check"] = {"new_events": day, "s": round(wall, 2),
                                  "cpu_s": round(cpu, 2),
                                  "other_processes_cpu_s": watch.foreign_s()}
            log(f"daily check after {day:,} new events: {wall:.1f} s ({cpu:.1f} s CPU)")
            if args.profile:
                out["check_profile"] = profile_check(rt)
            clock.advance(seconds=(PACK_AT - clock.now()).total_seconds())
            pack = root / "evidence" / "pack.zip"
            pack.parent.mkdir()
            watch = CpuWatch()
            summary, wall, cpu = timed(lambda: rt.evidence.pack(
                SYSTEM, Period.parse(QUARTER), pack))
            out["pack_s"] = round(wall, 2)
            out["pack_cpu_s"] = round(cpu, 2)
            out["pack_other_processes_cpu_s"] = watch.foreign_s()
            out["pack"] = {"bytes": pack.stat().st_size, "files": summary.files,
                           "inclusion_proofs": summary.proofs,
                           "checked_at_packing": summary.checked_now}
            log(f"evidence pack: {wall:.1f} s, {summary.files} files, "
                f"{pack.stat().st_size:,} bytes")
            code, verify_s, last = verify_offline(pack)
            out["verify"] = {"exit": code, "s": round(verify_s, 2), "last_line": last}
        finally:
            rt.close()
    out["targets"] = {"check_s": TARGET_CHECK_S, "pack_s": TARGET_PACK_S}
    out["met"] = {"check": out["check_s"] <= TARGET_CHECK_S,
                  "daily_check": out["daily_check"]["s"] <= TARGET_CHECK_S,
                  "pack": out["pack_s"] <= TARGET_PACK_S and out["verify"]["exit"] == 0}
    out["machine"] = machine()
    emit(out)


if __name__ == "__main__":
    main()
