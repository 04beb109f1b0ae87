"""Insider detection, scored: N staff by role do D days of their assigned work through the real
services under a fake clock, a few insiders per scenario do something else besides, then one
``rt.monitor.run_once()`` reads the whole trail and its alerts are scored against what was
injected.

    python bench/monitor_eval.py [--staff 500] [--days 60] [--seed 1] [--instances K]
                                 [--customers C] [--intensity 1.0]

Scored per scenario (11 scenarios, K insiders or addresses each): recall (an instance is
detected when an alert names its insider, or for password spraying its address, with evidence
from the scenario's time on; from the scenario's own detection or any other), overall precision
(alerts attributable to an injected instance / all alerts) and false alerts per 1,000 staff-days
(the other alerts / (N x D) x 1000). Targets: recall >= 0.9 for every scenario, <= 5 false
alerts per 1,000 staff-days. Progress goes to stderr; the last line of stdout is one JSON
object. The world and the scenarios are described in ``_monitor_sim.py``.

Everything goes through the services in-process (no HTTP): sign-in with password and TOTP,
session authentication, record reads, searches, exports, break glass; only Argon2id runs at a
lower cost than production (it changes no event) and the login throttle is opened (it counts
real time, and the whole office signs in within seconds of real time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from _common import emit, log, machine, temp_root, wait_for_quiet
from _monitor_sim import FIRST_DAY, SCENARIOS, Instance, Simulation, role_counts

from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.runtime import open_runtime
from fiduciary.storage.schema import alerts, audit_events, monitor_days, users

RECALL_TARGET = 0.9
FALSE_PER_1000_TARGET = 5.0


def sequence_all(rt: Any) -> int:
    size = -1
    while True:
        now = rt.trail.sequence(batch_size=50_000)
        if now == size:
            return size
        size = now


#: Detections of an amount over time: their evidence is the event that crossed the line, which
#: may be ordinary work done on the day of (or the week after) the insider's extra reads.
AGGREGATE = {"volume_spike", "slow_drip", "bulk_export"}


def load_alerts(rt: Any, tagged: dict[str, int]) -> list[dict[str, Any]]:
    """Every alert, with the time span of its evidence events and the scenario instances
    whose actions (by request id) are among them."""
    with rt.db.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(alerts))]
        ids = sorted({e for r in rows for e in r["event_ids"].split()})
        facts: dict[str, tuple[datetime, int | None]] = {}
        for i in range(0, len(ids), 500):
            for r in conn.execute(sa.select(audit_events.c.event_id, audit_events.c.at,
                                            audit_events.c.event)
                                  .where(audit_events.c.event_id.in_(ids[i:i + 500]))):
                at = r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC)
                rid = json.loads(r.event).get("request_id") if r.event else None
                facts[r.event_id] = (at, tagged.get(rid) if rid else None)
    for r in rows:
        r["details"] = json.loads(r["details"])
        got = [facts[e] for e in r["event_ids"].split() if e in facts]
        r["first"] = min(a for a, _ in got) if got else None
        r["last"] = max(a for a, _ in got) if got else None
        r["tags"] = {t for _, t in got if t is not None}
    return rows


def matches(alert: dict[str, Any], inst: Instance, drip_days: int) -> bool:
    """Attributable to the instance: its evidence holds one of the instance's own events; or,
    for an aggregate detection, it names the insider from the instance's start until a
    detection window after its end."""
    if inst.start is None or inst.end is None:
        return False
    if inst.index in alert["tags"]:
        return True
    if inst.scenario == "password_spraying":
        return str(alert["details"].get("client")) == inst.who
    return (alert["detection"] in AGGREGATE and alert["principal_name"] == inst.who
            and alert["last"] is not None
            and inst.start - timedelta(minutes=1) <= alert["last"]
            <= inst.end + timedelta(days=drip_days))


def score(sim: Simulation, found: list[dict[str, Any]], staff_days: int) -> dict[str, Any]:
    by_instance: dict[int, list[dict[str, Any]]] = defaultdict(list)
    attributable: set[str] = set()
    drip_days = sim.rt.detections.detections.slow_drip.window_days
    for a in found:
        for k, inst in enumerate(sim.instances):
            if matches(a, inst, drip_days):
                by_instance[k].append(a)
                attributable.add(a["id"])
    scenarios: dict[str, Any] = {}
    for name, expected in SCENARIOS.items():
        insts = [(k, i) for k, i in enumerate(sim.instances) if i.scenario == name]
        ran = [(k, i) for k, i in insts if i.start is not None]
        hit_any = [i for k, i in ran if by_instance[k]]
        hit_exp = [i for k, i in ran if any(a["detection"] == expected
                                             for a in by_instance[k])]
        fired = Counter(a["detection"] for k, _ in ran for a in by_instance[k])
        scenarios[name] = {
            "expected_detection": expected, "instances": len(ran),
            "detected": len(hit_any), "detected_by_expected": len(hit_exp),
            "recall": round(len(hit_any) / len(ran), 3) if ran else None,
            "recall_expected": round(len(hit_exp) / len(ran), 3) if ran else None,
            "alerts_by_detection": dict(fired.most_common()),
            "missed": [{"who": i.who, "role": i.role, "day": i.day, "variant": i.variant}
                       for k, i in ran if not by_instance[k]],
            "variants": sorted({i.variant for _, i in ran if i.variant}),
        }
    false = [a for a in found if a["id"] not in attributable]
    members = sim.by_name
    insiders = {i.who for i in sim.instances}
    cold_end = sim.at(sim.rt.detections.detections.off_hours.min_history_days, 6.0)

    def kind(a: dict[str, Any]) -> str:
        m = members.get(a["principal_name"] or "")
        if m is None:
            return str(a["principal_kind"])
        tags = [m.role]
        if m.night:
            tags.append("night shift")
        if m.desk:
            tags.append("watch-list desk")
        if m.username in insiders:
            tags.append("insider, outside the scenario")
        return ", ".join(tags)

    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in sorted(false, key=lambda a: a["created_at"]):
        ex = examples[a["detection"]]
        if len(ex) < 3:
            local = a["last"].astimezone(sim.zone) if a["last"] else None
            ex.append({"principal": kind(a), "reason": a["reason"],
                       "details": {k: v for k, v in a["details"].items()
                                   if k not in ("coworker_user_id",)},
                       "local_time": local.strftime("%a %H:%M") if local else None,
                       "day": (local.date() - FIRST_DAY).days if local else None})
    false_by_det = Counter(a["detection"] for a in false)
    # The brief's own measure: alerts naming a principal (or address) with no scenario at all.
    bystander = [a for a in found if a["principal_name"] not in insiders
                 and str(a["details"].get("client")) not in insiders]
    cold = [a for a in false if a["last"] is not None and a["last"] < cold_end]
    rate = len(false) / staff_days * 1000 if staff_days else 0.0
    recalls = {n: s["recall"] for n, s in scenarios.items() if s["recall"] is not None}
    return {
        "scenarios": scenarios,
        "alerts_total": len(found),
        "alerts_attributable": len(attributable),
        "precision": round(len(attributable) / len(found), 4) if found else None,
        "false_alerts": len(false),
        "false_alerts_per_1000_staff_days": round(rate, 2),
        "false_alerts_by_detection": dict(false_by_det.most_common()),
        "alerts_on_principals_without_scenario": len(bystander),
        "alerts_per_1000_staff_days_on_principals_without_scenario": round(
            len(bystander) / staff_days * 1000, 2) if staff_days else None,
        "false_alerts_by_principal": dict(Counter(kind(a) for a in false).most_common()),
        "false_alerts_in_first_week": len(cold),
        "false_alerts_per_1000_staff_days_after_first_week": round(
            (len(false) - len(cold)) / staff_days * 1000, 2) if staff_days else None,
        "false_alerts_per_1000_staff_days_without_break_glass": round(
            (len(false) - false_by_det.get("break_glass", 0)) / staff_days * 1000, 2)
        if staff_days else None,
        "false_alert_examples": dict(examples),
        "alerts_by_detection": dict(Counter(a["detection"] for a in found).most_common()),
        "targets": {
            "recall_each": RECALL_TARGET, "false_alerts_per_1000_staff_days":
                FALSE_PER_1000_TARGET},
        "pass": {
            "recall": {n: r >= RECALL_TARGET for n, r in recalls.items()},
            "recall_all": all(r >= RECALL_TARGET for r in recalls.values()),
            "false_alerts": rate <= FALSE_PER_1000_TARGET,
            "alerts_on_principals_without_scenario":
                len(bystander) / staff_days * 1000 <= FALSE_PER_1000_TARGET
                if staff_days else False,
        },
    }


def volume_diagnostics(rt: Any, sim: Simulation) -> dict[str, list[dict[str, Any]]]:
    """For the burst and slow-drip insiders: what they did against what the detections
    compare it with, recomputed from the day baselines the monitor stored (``monitor_days``),
    so a miss can be explained by numbers."""
    spike = rt.detections.detections.volume_spike
    drip = rt.detections.detections.slow_drip
    with rt.db.read() as conn:
        ids = {r.username: r.id for r in conn.execute(sa.select(users.c.username, users.c.id))}
        days: dict[str, dict[date, int]] = defaultdict(dict)
        role: dict[str, str] = {}
        for r in conn.execute(sa.select(monitor_days)):
            days[r.principal_id][date.fromisoformat(r.day)] = r.subjects
            role[r.principal_id] = r.role
    insiders = {ids.get(i.who) for i in sim.instances}

    def week_sums(pid: str) -> dict[date, int]:
        d = days[pid]
        return {end: sum(n for x, n in d.items() if end - timedelta(days=drip.window_days - 1)
                         <= x <= end) for end in d}

    out: dict[str, list[dict[str, Any]]] = {"burst_before_resignation": [], "slow_drip": []}
    for inst in sim.instances:
        pid = ids.get(inst.who)
        if inst.scenario not in out or pid is None or inst.start is None:
            continue
        peers = [p for p in days if role.get(p) == role.get(pid) and p not in insiders]
        day = inst.start.astimezone(sim.zone).date()
        if inst.scenario == "burst_before_resignation":
            past = [n for x, n in days[pid].items()
                    if day - timedelta(days=spike.history_days) <= x < day]
            med = statistics.median(past) if past else 0
            mad = statistics.median(abs(x - med) for x in past) if past else 0
            peer = sorted(n for p in peers for n in days[p].values())
            out[inst.scenario].append({
                "who": inst.who, "role": inst.role, "subjects_that_day": days[pid].get(day),
                "own_limit": round(med + spike.mad_factor * max(mad, 1.0), 1),
                "peer_p99_all_days": peer[int(0.99 * (len(peer) - 1))] if peer else None})
        else:
            end = inst.end.astimezone(sim.zone).date() if inst.end else day
            mine = [n for x, n in week_sums(pid).items() if day <= x <= end]
            sums = sorted(n for p in peers for n in week_sums(p).values())
            p99 = sums[int(0.99 * (len(sums) - 1))] if sums else 0
            out[inst.scenario].append({
                "who": inst.who, "role": inst.role, "variant": inst.variant,
                "max_7_day_sum": max(mine) if mine else None,
                "peers_p99_7_day_sum": p99,
                "limit_peer_factor_x_p99": round(drip.peer_factor * p99, 1)})
    return out


def write_alerts(path: str, sim: Simulation, found: list[dict[str, Any]]) -> None:
    drip_days = sim.rt.detections.detections.slow_drip.window_days
    with open(path, "w") as fh:
        for a in sorted(found, key=lambda a: (a["last"] or a["created_at"], a["id"])):
            m = sim.by_name.get(a["principal_name"] or "")
            local = a["last"].astimezone(sim.zone) if a["last"] else None
            fh.write(json.dumps({
                "detection": a["detection"], "severity": a["severity"],
                "principal": a["principal_name"], "role": m.role if m else None,
                "night": m.night if m else None, "desk": m.desk if m else None,
                "reason": a["reason"], "details": a["details"],
                "subjects": len(a["subject_ids"].split()),
                "evidence_local": local.isoformat() if local else None,
                "day": (local.date() - FIRST_DAY).days if local else None,
                "attributed_to": [f"{i.scenario}:{i.who}" for i in sim.instances
                                  if matches(a, i, drip_days)]}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--staff", type=int, default=500)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instances", type=int, default=None,
                    help="insiders per scenario (default max(3, staff // 100))")
    ap.add_argument("--customers", type=int, default=None,
                    help="customers (default max(4000, 40 x staff))")
    ap.add_argument("--intensity", type=float, default=0.4,
                    help="scales every role's daily customers; 1.0 is agent 14, adjuster 9, "
                         "underwriter 7, fraud investigator 12 a day (median); default 0.4, "
                         "so that the default size runs in about 10 minutes here")
    ap.add_argument("--alerts-out", default=None,
                    help="also write every alert (detection, principal, reason, details, "
                         "evidence times, attribution) as JSON lines to this file")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="before timing the monitor, wait at most this long for a quiet "
                         "machine (default 120; 0 disables)")
    args = ap.parse_args()
    if args.days < 12:
        raise SystemExit("--days must be at least 12 (baselines need a week of history)")
    k = args.instances or max(3, args.staff // 100)
    n_customers = args.customers or max(4000, 40 * args.staff)
    with temp_root() as root:
        settings = Settings(data_dir=root / "data", argon2_time_cost=1, argon2_memory_kib=64,
                            login_rate_per_client=10**9, login_rate_global=10**9,
                            monitor_interval_seconds=0, retention_interval_hours=0,
                            records_check_interval_hours=0)
        start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, 16, tzinfo=UTC) \
            - timedelta(days=121)
        clock = FixedClock(start)
        rt = open_runtime(settings, create=True, clock=clock)
        try:
            sim = Simulation(rt, clock, staff=args.staff, days=args.days, seed=args.seed,
                             customers=n_customers, instances=k, intensity=args.intensity,
                             log=log)
            t0 = time.perf_counter()
            sim.build()
            setup_s = time.perf_counter() - t0
            log(f"setup {setup_s:.1f} s; simulating {args.days} days of {args.staff} staff")
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            sim.simulate()
            sim_s = time.perf_counter() - t0
            sim_cpu = time.process_time() - cpu0
            t0 = time.perf_counter()
            events = sequence_all(rt)
            seq_s = time.perf_counter() - t0
            log(f"simulation {sim_s:.1f} s, {events:,} events sequenced "
                f"(final sequencing {seq_s:.1f} s)")
            waited = wait_for_quiet(args.quiet_wait)
            log("running the monitor over the whole trail")
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            run = rt.monitor.run_once()
            mon_s = time.perf_counter() - t0
            mon_cpu = time.process_time() - cpu0
            log(f"monitor: {run.events:,} events, {run.alerts} alerts in {mon_s:.1f} s")
            found = load_alerts(rt, sim.tagged)
            result = score(sim, found, args.staff * args.days)
            result["volume_diagnostics"] = volume_diagnostics(rt, sim)
            if args.alerts_out:
                write_alerts(args.alerts_out, sim, found)
        finally:
            rt.close()
    ops_total = sum(sim.ops.values())
    out: dict[str, Any] = {
        "benchmark": "monitor_eval",
        "params": {"staff": args.staff, "days": args.days, "seed": args.seed,
                   "instances_per_scenario": k, "customers": n_customers,
                   "intensity": args.intensity, "first_day": FIRST_DAY.isoformat(),
                   "timezone": str(sim.zone)},
        "population": role_counts(args.staff) | {
            "night_shift": sum(m.night for m in sim.members),
            "watch_list_desk": sum(m.desk for m in sim.members),
            "linked_to_own_customer_record": sum(m.own is not None for m in sim.members),
            "vip_customers": sum(c.vip for c in sim.customers)},
        "route": "in-process services (users.login + TOTP, users.authenticate, vault.get_record"
                 "/search/export, users.break_glass, alerts.list_alerts); Argon2id "
                 "t=1 m=64 KiB; no HTTP",
        "events": events,
        "operations": dict(sim.ops.most_common()),
        "operation_failures": dict(sim.failures.most_common()),
        "operation_cpu_ms": {op: round(s / sim.ops[op] * 1000, 3)
                             for op, s in sim.op_cpu.items() if sim.ops[op]},
        "clock_went_back": sim.backwards,
        "timings_s": {"setup": round(setup_s, 1), "simulation": round(sim_s, 1),
                      "simulation_cpu": round(sim_cpu, 1),
                      "final_sequencing": round(seq_s, 1), "monitor_run": round(mon_s, 2),
                      "monitor_cpu": round(mon_cpu, 2), "quiet_wait": waited},
        "simulation_operations_per_s": round(ops_total / sim_s, 1) if sim_s else None,
        "monitor_events_per_s": round(run.events / mon_s, 1) if mon_s else None,
        "monitor_run": run.as_dict(),
        **result,
        "machine": machine(),
    }
    emit(out)


if __name__ == "__main__":
    main()
