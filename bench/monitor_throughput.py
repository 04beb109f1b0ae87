"""Monitor throughput and alert latency.

    python bench/monitor_throughput.py [--events 200000] [--staff 300] [--customers 10000]
                                       [--trials 30] [--profile] [--seed 1]

(a)/(b) Pre-writes N realistic audit events (sign-ins, searches with their attempt events and
query digests, record reads of persons/claims/quotes, a few refusals) by ``--staff`` staff of
several roles over as many working days as it takes, naming real subjects of an imported
customer base (some VIPs, some staff linked to their own customer record, surnames set), in
time order through ``AuditLog.event``/``append`` in batches (this measures the detector, not
the services); sequences them (``trail.sequence`` until done); then, in the same run,
(a) reads the same events in leaf order without detections (batches of the engine's size,
every event's JSON parsed, nothing else) and (b) runs ``rt.monitor.run_once()`` over them
(which parses only the events some detection reads). Reports events/s of both and their
ratio, by wall time and by this process's CPU time (the machine may be shared: CPU time is
what the detector costs). Target: >= 20,000 events/s on one core. ``--profile`` reruns (b) from
a reset monitor state under cProfile and reports the top functions.

(c) Alert latency in ``serve``: a fresh runtime with a real clock, ``rt.start()`` with
``monitor_interval_seconds=1`` (sequencer and monitor threads each wake every second); a
staff member linked to a new customer record each trial reads it (``self_access``); the time
from the read's return to the alert row appearing, p50/p99 over ``--trials``. Target:
p99 <= 5 s.

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyotp
import sqlalchemy as sa
from _common import CpuWatch, emit, log, machine, temp_root, wait_for_quiet
from _monitor_sim import FIRST_DAY, PASSWORD, REGIONS, Surnames

from fiduciary.audit.events import AuditEvent, RequestContext, request_context
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.demo import DemoGenerator
from fiduciary.principal import SYSTEM, Principal
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import (
    alert_deliveries,
    alerts,
    audit_events,
    monitor_days,
    system_state,
)
from fiduciary.vault.importer import Importer

TARGET_EVENTS_PER_S = 20_000
TARGET_P99_S = 5.0
ROLES = {"call_center_agent": 0.45, "claims_adjuster": 0.25, "underwriter": 0.15,
         "fraud_investigator": 0.10, "dpo": 0.05}
#: Median distinct customers per working day and the collection/purpose a read uses.
DAILY = {"call_center_agent": 14, "claims_adjuster": 9, "underwriter": 7,
         "fraud_investigator": 12, "dpo": 2}
PURPOSE = {"call_center_agent": "customer_service", "claims_adjuster": "claims_handling",
           "underwriter": "underwriting", "fraud_investigator": "fraud_prevention",
           "dpo": "legal_obligation"}
PERSON_FIELDS = ["address_line", "city", "date_of_birth", "email", "first_name", "last_name",
                 "phone", "postal_code", "region", "state"]


def settings_for(root: Path, label: str, **extra: Any) -> Settings:
    return Settings(data_dir=root / label, argon2_time_cost=1, argon2_memory_kib=64,
                    login_rate_per_client=10**9, login_rate_global=10**9,
                    retention_interval_hours=0, records_check_interval_hours=0, **extra)


def import_customers(rt: Runtime, n: int, seed: int) -> list[tuple[str, str, str, bool]]:
    """(subject id, persons record id, region, vip) of ``n`` imported customers (1% VIP)."""
    gen = DemoGenerator(seed)
    rng = random.Random(seed)
    surname = Surnames(random.Random(seed + 2), gen.fake.last_name)
    people = []
    for _ in range(n):
        p = gen.person()
        p["last_name"] = surname()
        p["vip"] = rng.random() < 0.01
        p["employee"] = False
        people.append(p)
    report = Importer(rt.vault, batch_size=1000).run(
        SYSTEM, "persons", ((i, p, []) for i, p in enumerate(people, start=1)),
        "policy_administration", lambda line, problems: None)
    assert report.imported == n, report
    with rt.db.read() as conn:
        rows = conn.execute(sa.text("SELECT id, subject_id FROM records "
                                    "WHERE collection = 'persons' ORDER BY rowid")).all()
    return [(r.subject_id, r.id, p["region"], p["vip"])
            for r, p in zip(rows, people, strict=True)]


# -- (a) and (b) ----------------------------------------------------------------------------------

def write_events(rt: Runtime, clock: FixedClock, n_events: int, n_staff: int,
                 customers: list[tuple[str, str, str, bool]], seed: int) -> dict[str, Any]:
    """``n_events`` audit events of ``n_staff`` staff working weekdays, in time order."""
    rng = random.Random(seed)
    zone = ZoneInfo(rt.detections.settings.timezone)
    plain = [c for c in customers if not c[3]]
    names = DemoGenerator(seed + 1)
    staff: list[dict[str, Any]] = []
    role_list = [r for r, share in ROLES.items() for _ in range(round(n_staff * share))]
    for i, role in enumerate(role_list[:n_staff]):
        username = f"s{i:04d}.{names.fake.last_name().lower().replace(' ', '')}"
        regions = [rng.choice(REGIONS)] if role == "call_center_agent" else []
        made = rt.users.create(username, [role], regions, issue_code=False)
        book = rng.sample(plain, 40) if role in ("claims_adjuster", "underwriter") else []
        # (a book may hold a staff customer: an adjuster handling a colleague's claim)
        staff.append({"p": Principal(id=made.user.id, kind="user", username=username,
                                     roles=(role,)), "role": role, "regions": regions,
                      "book": book, "factor": rng.uniform(0.75, 1.25),
                      "start": rng.uniform(7.5, 9.5), "address": f"10.30.{i // 250}.{i % 250 + 2}"})
    # A third of staff are customers too; everyone's surname is set (the detections use both).
    linked = rng.sample(staff, len(staff) // 3)
    own = rng.sample(plain, len(linked))
    for s, c in zip(linked, own, strict=True):
        rt.profiles.link_subject(SYSTEM, s["p"].username, c[0])
    surname = Surnames(random.Random(seed + 3), names.fake.last_name)
    for s in staff:
        rt.profiles.set_surname(SYSTEM, s["p"].username, surname())
    # Ordinary work reads ordinary customers; VIPs and staff customers now and then (0.3%).
    taken = {c[0] for c in own}
    by_region: dict[str, list[tuple[str, str, str, bool]]] = {r: [] for r in REGIONS}
    for c in plain:
        if c[0] not in taken:
            by_region[c[2]].append(c)
    ordinary = [c for r in REGIONS for c in by_region[r]]
    events: list[tuple[datetime, Principal, str, str, dict[str, Any]]] = []
    written = 0
    kinds: Counter[str] = Counter()
    day = 0
    audit = rt.audit
    query_key = rt.vault.query_digests
    while written < n_events:
        d = FIRST_DAY + timedelta(days=day)
        day += 1
        if d.weekday() >= 5:
            continue
        events.clear()
        for s in staff:
            if rng.random() < 0.05:
                continue
            p: Principal = s["p"]
            role = s["role"]
            start = s["start"] + rng.gauss(0, 0.25)
            local0 = datetime(d.year, d.month, d.day, tzinfo=zone)

            def at(h: float, _l: datetime = local0) -> datetime:
                return (_l + timedelta(hours=h)).astimezone(UTC)

            purpose = PURPOSE[role]
            events.append((at(start), p, "login", s["address"], {}))
            events.append((at(start + 4.5), p, "login", s["address"], {}))
            for _ in range(round(DAILY[role] * s["factor"] * rng.lognormvariate(0, 0.25))):
                t = at(start + rng.uniform(0.1, 8.4))
                if role == "call_center_agent":
                    c = rng.choice(by_region[s["regions"][0]])
                    if rng.random() < 0.25:
                        events.append((t, p, "search", s["address"], {
                            "purpose": purpose, "where": {"phone": f"+1 {rng.randint(0, 10**9)}"},
                            "subjects": [c[0]], "records": [c[1]]}))
                    if rng.random() < 0.01:
                        events.append((t, p, "denied", s["address"], {"purpose": purpose,
                                                                        "records": [c[1]]}))
                        continue
                elif s["book"]:
                    c = rng.choice(s["book"])
                else:
                    c = rng.choice(ordinary)
                if rng.random() < 0.003:
                    c = rng.choice(customers)
                events.append((t + timedelta(seconds=20), p, "read", s["address"],
                               {"purpose": purpose, "subjects": [c[0]], "records": [c[1]]}))
        events.sort(key=lambda e: e[0])
        batch: list[AuditEvent] = []
        for t, p, kind, address, info in events:
            if written + len(batch) >= n_events:
                break
            clock.advance(seconds=(t - clock.now()).total_seconds())
            token = request_context.set(RequestContext(request_id=uuid.uuid4().hex,
                                                       client=address))
            try:
                kinds[kind] += 1
                if kind == "login":
                    batch.append(audit.event(p, "auth.login", details={"mfa": "totp"}))
                elif kind == "search":
                    where = info["where"]
                    batch.append(audit.event(p, "record.search.attempt", collection="persons"))
                    batch.append(audit.event(
                        p, "record.search", collection="persons", purpose=info["purpose"],
                        record_ids=info["records"], subject_ids=info["subjects"],
                        fields=PERSON_FIELDS, details={
                            "result_count": len(info["records"]),
                            "fields_queried": sorted(where), "query_digests": query_key(where)}))
                elif kind == "denied":
                    batch.append(audit.event(p, "record.read", collection="persons",
                                             purpose=info["purpose"],
                                             record_ids=info["records"], decision="deny",
                                             reason="relationship_required"))
                else:
                    batch.append(audit.event(
                        p, "record.read", collection="persons", purpose=info["purpose"],
                        record_ids=info["records"], subject_ids=info["subjects"],
                        fields=PERSON_FIELDS, details={"result_count": 1}))
            finally:
                request_context.reset(token)
        for i in range(0, len(batch), 5000):
            with rt.db.write() as conn:
                for ev in batch[i:i + 5000]:
                    audit.append(conn, ev)
        written += len(batch)
    return {"staff": len(staff), "working_days": sum(
        1 for k in range(day) if (FIRST_DAY + timedelta(days=k)).weekday() < 5),
        "events_written": written, "by_kind": dict(kinds)}


def sequence_all(rt: Runtime) -> int:
    size = -1
    while True:
        now = rt.trail.sequence(batch_size=20_000)
        if now == size:
            return size
        size = now


def read_only(rt: Runtime, batch_size: int) -> int:
    """The engine's read loop without detections: batches in leaf order, every event parsed
    with the parser the monitor uses (orjson), so the ratio is the detections' own cost."""
    cursor = n = 0
    while True:
        with rt.db.read() as conn:
            rows = conn.execute(
                sa.select(audit_events.c.leaf_index, audit_events.c.event)
                .where(audit_events.c.leaf_index >= cursor)
                .order_by(audit_events.c.leaf_index).limit(batch_size)).all()
        if not rows:
            return n
        parsed = [orjson.loads(r.event) for r in rows if r.event is not None]
        n += len(parsed)
        cursor = rows[-1].leaf_index + 1


def reset_monitor(rt: Runtime) -> None:
    """Forget what the monitor did (cursor, alerts, baselines), to run it again from 0."""
    with rt.db.write() as conn:
        conn.execute(alert_deliveries.delete())
        conn.execute(alerts.delete())
        conn.execute(monitor_days.delete())
        conn.execute(system_state.delete().where(system_state.c.key.like("monitor.%")))
    rt.monitor._detectors = None
    rt.monitor._seen = -1


def profile_run(rt: Runtime, top: int) -> dict[str, Any]:
    reset_monitor(rt)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run = rt.monitor.run_once(sequence=False)
    prof.disable()
    elapsed = time.perf_counter() - t0
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": ncalls,
                     "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
    by_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    ours = [r for r in rows if any(k in r["function"] for k in
                                   ("detectors.py", "engine.py", "alerts.py"))]
    by_cum = sorted(ours, key=lambda r: -r["cumtime_s"])[:top]
    return {"events": run.events, "seconds_under_profiler": round(elapsed, 2),
            "top_by_own_time": by_tot, "monitor_functions_by_cumulative_time": by_cum}


# -- (c) ------------------------------------------------------------------------------------------

def alert_latency(root: Path, trials: int, seed: int) -> dict[str, Any]:
    rt = open_runtime(settings_for(root, "serve", monitor_interval_seconds=1.0), create=True)
    try:
        customers = import_customers(rt, trials + 20, seed)
        made = rt.users.create("latency.agent", ["call_center_agent"], REGIONS)
        assert made.enrolment_code is not None
        rt.users.record_training("latency.agent", "data-protection",
                                 datetime.now(UTC).date() - timedelta(days=3))
        secret = rt.users.enrol("latency.agent", made.enrolment_code, PASSWORD).totp_secret
        session = rt.users.login("latency.agent", PASSWORD, pyotp.TOTP(secret).now())
        rt.start()
        waits: list[float] = []
        timeouts = 0
        for i in range(trials):
            sid, rid, _, _ = customers[i]
            rt.profiles.link_subject(SYSTEM, "latency.agent", sid)
            # The monitor reads the staff profiles at the start of each run: let one pass.
            time.sleep(1.1)
            principal = rt.users.authenticate(session.token)
            rt.vault.get_record(principal, "persons", rid, "customer_service")
            t0 = time.perf_counter()
            while True:
                with rt.db.read() as conn:
                    hit = conn.execute(sa.select(alerts.c.id).where(
                        alerts.c.detection == "self_access",
                        alerts.c.subject_ids.contains(sid))).first()
                waited = time.perf_counter() - t0
                if hit is not None:
                    waits.append(waited)
                    break
                if waited > 30:
                    timeouts += 1
                    break
                time.sleep(0.01)
            if (i + 1) % 10 == 0:
                log(f"latency: {i + 1}/{trials} trials, p50 so far "
                    f"{statistics.median(waits) if waits else float('nan'):.2f} s")
    finally:
        rt.close()
    waits.sort()

    def pct(q: float) -> float | None:
        return round(waits[min(len(waits) - 1, int(q * len(waits)))], 3) if waits else None

    p99 = pct(0.99)
    return {"trials": trials, "alerts_seen": len(waits), "timeouts_30s": timeouts,
            "p50_s": pct(0.5), "p90_s": pct(0.9), "p99_s": p99,
            "max_s": round(waits[-1], 3) if waits else None,
            "target_p99_s": TARGET_P99_S,
            "met": p99 is not None and timeouts == 0 and p99 <= TARGET_P99_S}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--staff", type=int, default=300)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=30, help="alert-latency trials (0: skip)")
    ap.add_argument("--profile", action="store_true",
                    help="rerun the monitor from a reset state under cProfile")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="before timing, wait at most this long for a quiet machine")
    args = ap.parse_args()
    out: dict[str, Any] = {"benchmark": "monitor_throughput",
                           "params": {"events": args.events, "staff": args.staff,
                                      "customers": args.customers, "trials": args.trials,
                                      "seed": args.seed}}
    with temp_root() as root:
        start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, 12,
                         tzinfo=UTC) - timedelta(days=2)
        clock = FixedClock(start)
        rt = open_runtime(settings_for(root, "throughput", monitor_interval_seconds=0),
                          create=True, clock=clock)
        try:
            t0 = time.perf_counter()
            customers = import_customers(rt, args.customers, args.seed)
            log(f"imported {len(customers):,} customers in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            out["written"] = write_events(rt, clock, args.events, args.staff, customers,
                                          args.seed)
            out["write_s"] = round(time.perf_counter() - t0, 1)
            log(f"wrote {out['written']['events_written']:,} events in {out['write_s']} s")
            t0 = time.perf_counter()
            size = sequence_all(rt)
            out["sequence_s"] = round(time.perf_counter() - t0, 1)
            out["trail_size"] = size
            log(f"sequenced: trail of {size:,} events in {out['sequence_s']} s")
            batch = rt.monitor.batch_size
            out["waited_for_quiet_s"] = wait_for_quiet(args.quiet_wait)
            watch = CpuWatch()
            t0, c0 = time.perf_counter(), time.process_time()
            n_read = read_only(rt, batch)
            read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
            log(f"(a) read + parse: {n_read:,} events in {read_s:.2f} s")
            t0, c0 = time.perf_counter(), time.process_time()
            run = rt.monitor.run_once()
            mon_s, mon_cpu = time.perf_counter() - t0, time.process_time() - c0
            log(f"(b) monitor: {run.events:,} events, {run.alerts} alerts in {mon_s:.2f} s "
                f"({mon_cpu:.2f} s CPU; read {read_cpu:.2f} s CPU)")
            out["other_processes_cpu_s"] = watch.foreign_s()
            with rt.db.read() as conn:
                by_det: dict[str, int] = {
                    str(d): int(n) for d, n in conn.execute(
                        sa.select(alerts.c.detection, sa.func.count())
                        .group_by(alerts.c.detection))}
            a_rate = n_read / read_s
            b_rate = run.events / mon_s
            out["read_only"] = {"events": n_read, "seconds": round(read_s, 2),
                                "cpu_s": round(read_cpu, 2),
                                "events_per_s": round(a_rate, 1),
                                "events_per_cpu_s": round(n_read / read_cpu, 1)
                                if read_cpu else None}
            out["monitor"] = {**run.as_dict(), "seconds": round(mon_s, 2),
                              "cpu_s": round(mon_cpu, 2), "events_per_s": round(b_rate, 1),
                              "events_per_cpu_s": round(run.events / mon_cpu, 1)
                              if mon_cpu else None,
                              "batch_size": batch, "alerts_by_detection": by_det}
            out["ratio_monitor_to_read"] = round(b_rate / a_rate, 4)
            # CPU time of this process: what the detector costs whatever the neighbours do.
            out["ratio_monitor_to_read_cpu"] = round(read_cpu / mon_cpu, 4) if mon_cpu else None
            out["target_events_per_s"] = TARGET_EVENTS_PER_S
            out["throughput_met"] = b_rate >= TARGET_EVENTS_PER_S
            out["throughput_met_cpu"] = bool(mon_cpu) and run.events / mon_cpu \
                >= TARGET_EVENTS_PER_S
            if args.profile:
                log("(b) again under cProfile")
                out["profile"] = profile_run(rt, args.top)
        finally:
            rt.close()
        if args.trials > 0:
            log(f"(c) alert latency in serve, {args.trials} trials")
            out["alert_latency"] = alert_latency(root, args.trials, args.seed)
    out["machine"] = machine()
    emit(out)


if __name__ == "__main__":
    main()
