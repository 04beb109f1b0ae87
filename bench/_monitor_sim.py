"""The insider-monitoring simulation behind ``monitor_eval.py`` (not a benchmark itself).

A population of staff by role does its assigned work day after day under a fake clock, through
the real services in-process (``rt.users.login`` with password + TOTP, ``rt.users.authenticate``,
``rt.vault.get_record`` / ``search`` / ``export``, ``rt.users.break_glass``,
``rt.alerts.list_alerts``), so every audit event is the one the product writes. A few insiders
per scenario do something else besides; :class:`Simulation` remembers who, when and what, so
alerts can be scored against it.

World, as modelled (all staff in the detection pack's time zone, America/New_York):

- customers: ``persons`` rows from ``DemoGenerator``; a few are VIPs; the staff who are also
  customers are ``employee`` customers linked to their user (``profiles.link_subject``);
- adjusters each handle a book of claims (``assigned_adjuster``), underwriters a queue of quotes
  (``assigned_underwriter``); some VIP and employee customers have a claim, so their adjuster
  reads them legitimately (the pack's ``handler_fields``);
- call-center agents serve callers of their region, a quarter of them found by a search (phone,
  email or surname); watched customers' calls go to a desk of one or two agents per region,
  listed as the handlers on the watch list;
- fraud investigators work a case book of 15 customers (70% of their reads) and screen new
  customers (30%);
- DPOs read a few customers a day (subject requests), actuaries make one pseudonymised
  analytics export of ``claims`` in the period, security analysts read the alert list;
- day workers start at a habitual time (07:30-09:30) with daily jitter, lunch, occasional late
  days; some agents work nights (22:00-06:00, Sunday to Thursday nights); absences, vacations,
  password typos, a rare out-of-region refusal and a rare break-glass grant.
"""

from __future__ import annotations

import importlib
import math
import random
import re
import time
import unicodedata
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
import sqlalchemy as sa

from fiduciary.audit.events import RequestContext, request_context
from fiduciary.clock import FixedClock
from fiduciary.demo import DemoGenerator
from fiduciary.errors import FiduciaryError
from fiduciary.principal import SYSTEM, Principal
from fiduciary.runtime import Runtime
from fiduciary.vault.importer import Importer

PASSWORD = "Bench-Mark-Tangerine-42"
REGIONS = ["northeast", "southeast", "midwest", "southwest", "west"]
#: Monday of the first simulated week (April-June: no daylight-saving change inside 60 days).
FIRST_DAY = date(2026, 4, 6)

#: Share of the population per role (the rest are call-center agents).
ROLE_SHARE = {"claims_adjuster": 0.24, "underwriter": 0.14, "fraud_investigator": 0.08,
              "actuary": 0.03, "dpo": 0.02, "security_analyst": 0.02, "admin": 0.01,
              "compliance_officer": 0.01}
#: Median distinct customers a working day, before the personal factor and daily variation.
BASE_VISITS = {"call_center_agent": 14, "claims_adjuster": 9, "underwriter": 7,
               "fraud_investigator": 12, "dpo": 2}
PURPOSE = {"call_center_agent": "customer_service", "claims_adjuster": "claims_handling",
           "underwriter": "underwriting", "fraud_investigator": "fraud_prevention",
           "dpo": "legal_obligation", "actuary": "analytics"}
CLAIMS_PER_ADJUSTER = 50
QUOTES_PER_UNDERWRITER = 30
FRAUD_CASES = 15

#: Faker's US surnames are the census' ~1,000 most frequent; in the 2010 census the 239 most
#: frequent covered a quarter of people and 6.3 million surnames were reported. We assume the
#: list covers about half of customers and staff; the other half get a surname from a long
#: tail (Faker's other locales), few customers each, as real rare surnames are.
HEAD_SURNAME_SHARE = 0.5
_TAIL_LOCALES = ("de_DE", "it_IT", "nl_NL", "fr_FR", "es_ES", "pt_BR", "sv_SE", "cs_CZ",
                 "fi_FI", "hu_HU", "da_DK", "no_NO", "tr_TR", "ro_RO", "hr_HR", "sk_SK",
                 "en_IE", "id_ID", "en_IN")


def tail_surnames() -> list[str]:
    """About 10,000 surnames outside Faker's US list."""
    head = set(importlib.import_module("faker.providers.person.en_US").Provider.last_names)
    out: set[str] = set()
    for loc in _TAIL_LOCALES:
        names = importlib.import_module(f"faker.providers.person.{loc}").Provider.last_names
        out.update(names.keys() if hasattr(names, "keys") else names)
    return sorted(out - head)


class Surnames:
    """A surname as a population has them: a common one half the time, a rare one otherwise."""

    def __init__(self, rng: random.Random, common: Callable[[], str]) -> None:
        self.rng = rng
        self.common = common
        self.tail = tail_surnames()

    def __call__(self) -> str:
        if self.rng.random() < HEAD_SURNAME_SHARE:
            return self.common()
        return self.rng.choice(self.tail)


#: Insider scenarios and the detection each is meant for.
SCENARIOS = {
    "vip_snooping": "watchlist_subject",
    "self_lookup": "self_access",
    "coworker_lookup": "coworker_access",
    "same_surname": "same_surname",
    "slow_drip": "slow_drip",
    "burst_before_resignation": "volume_spike",
    "after_hours": "off_hours",
    "search_enumeration": "search_sweep",
    "bulk_export": "bulk_export",
    "dormant_account": "dormant_account",
    "password_spraying": "failed_login_burst",
}


# -- the world ----------------------------------------------------------------------------------

@dataclass
class Customer:
    subject_id: str
    person_id: str
    region: str
    last_name: str
    email: str
    phone: str
    national_id: str
    vip: bool = False
    #: Username of the staff member who is this customer.
    employee_of: str | None = None
    claim_id: str | None = None
    quote_id: str | None = None

    @property
    def watched(self) -> bool:
        return self.vip or self.employee_of is not None


@dataclass
class Member:
    username: str
    role: str
    regions: list[str]
    address: str
    factor: float
    start_hour: float
    surname: str
    night: bool = False
    desk: bool = False
    dormant: bool = False
    own: Customer | None = None
    #: Adjuster: claims' customers; underwriter: quotes' customers; fraud: open cases.
    book: list[Customer] = field(default_factory=list)
    absent: set[int] = field(default_factory=set)
    totp_secret: str = ""
    token: str | None = None
    principal: Principal | None = None
    recent: deque[Customer] = field(default_factory=lambda: deque(maxlen=40))
    seen: set[str] = field(default_factory=set)

    @property
    def purpose(self) -> str:
        return PURPOSE.get(self.role, "customer_service")


@dataclass
class Instance:
    """One injected insider (or attacker) scenario."""

    scenario: str
    who: str  # username, or the address for password spraying
    role: str
    day: int
    variant: str = ""
    #: Position in ``Simulation.instances``; its actions' request ids map back to it.
    index: int = -1
    start: datetime | None = None
    end: datetime | None = None

    def touch(self, at: datetime) -> None:
        self.start = at if self.start is None or at < self.start else self.start
        self.end = at if self.end is None or at > self.end else self.end


#: (time, tie-break, member or None, operation, argument, scenario instance index or None)
Action = tuple[datetime, int, "Member | None", str, Any, "int | None"]


def role_counts(n: int) -> dict[str, int]:
    counts = {r: max(1, math.floor(n * s)) for r, s in ROLE_SHARE.items()}
    counts["call_center_agent"] = n - sum(counts.values())
    if counts["call_center_agent"] < 5:
        raise SystemExit(f"--staff {n} is too small for the role mix (at least 20)")
    return counts


class Simulation:
    def __init__(self, rt: Runtime, clock: FixedClock, *, staff: int, days: int, seed: int,
                 customers: int, instances: int, intensity: float,
                 log: Callable[[str], None]) -> None:
        self.rt = rt
        self.clock = clock
        self.n = staff
        self.days = days
        self.rng = random.Random(seed)
        self.seed = seed
        self.n_customers = customers
        self.k = instances
        self.intensity = intensity
        self.log = log
        self.zone = ZoneInfo(rt.detections.settings.timezone)
        self.customers: list[Customer] = []
        self.by_region: dict[str, list[Customer]] = defaultdict(list)
        self.plain_by_region: dict[str, list[Customer]] = defaultdict(list)
        self.members: list[Member] = []
        self.by_name: dict[str, Member] = {}
        self.instances: list[Instance] = []
        #: request id -> index of the scenario instance whose action it was (kept here, not
        #: in the events: the monitor must not be able to tell)
        self.tagged: dict[str, int] = {}
        #: day -> (instance, callable making that day's actions of the instance)
        self.extra: dict[int, list[tuple[Instance, Callable[[], list[Action]]]]] = \
            defaultdict(list)
        self._making: Instance | None = None
        self.desk_share = 0.0
        self.ops: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._tie = 0
        #: CPU seconds of this process per operation (wall time depends on the neighbours)
        self.op_cpu: defaultdict[str, float] = defaultdict(float)
        #: Times the clock had to go back (an action planned before the previous one ran).
        self.backwards = 0

    # -- time ------------------------------------------------------------------------------
    def at(self, day: int, hour: float) -> datetime:
        """Local wall-clock ``hour`` (may exceed 24) of simulated ``day``, in UTC."""
        d = FIRST_DAY + timedelta(days=day)
        # Aware + timedelta is wall-clock arithmetic; the offset is that of the wall time.
        local = datetime(d.year, d.month, d.day, tzinfo=self.zone) + timedelta(hours=hour)
        return local.astimezone(UTC)

    def weekday(self, day: int) -> int:
        return (FIRST_DAY + timedelta(days=day)).weekday()

    def set_time(self, at: datetime) -> None:
        delta = (at - self.clock.now()).total_seconds()
        if delta < -1:
            self.backwards += 1
        if delta:
            self.clock.advance(seconds=delta)

    def _action(self, at: datetime, m: Member | None, op: str, arg: Any = None) -> Action:
        """An action at ``at``; while a scenario's actions are being made, it is tagged."""
        self._tie += 1
        tag = self._making
        return (at, self._tie, m, op, arg, tag.index if tag else None)

    # -- building ---------------------------------------------------------------------------
    def build(self) -> None:
        """Customers, claims and quotes (imported), staff (created, trained, enrolled,
        linked, surnamed), the watch list with its desks; plans the scenarios."""
        rng = self.rng
        counts = role_counts(self.n)
        t0 = time.perf_counter()
        gen = DemoGenerator(self.seed)
        surname = Surnames(random.Random(self.seed + 2), gen.fake.last_name)
        people = []
        for _ in range(self.n_customers):
            p = gen.person()
            p["last_name"] = surname()
            p["vip"] = False
            p["employee"] = False
            people.append(p)
        # Staff: usernames, roles, regions; about 40% are customers too.
        names = DemoGenerator(self.seed + 1)
        taken: set[str] = set()
        roles = [r for r, c in counts.items() for _ in range(c)]
        rng.shuffle(roles)
        for i, role in enumerate(roles):
            first, last = names.fake.first_name(), surname()
            base = re.sub(r"[^a-z0-9._-]", "", unicodedata.normalize(
                "NFKD", f"{first[0]}.{last}").encode("ascii", "ignore").decode().lower())
            username = base
            while username in taken:
                username = f"{base}{rng.randint(2, 99)}"
            taken.add(username)
            if role == "call_center_agent":
                regions = [rng.choice(REGIONS)]
                if rng.random() < 0.2:
                    regions.append(rng.choice([r for r in REGIONS if r not in regions]))
            else:
                regions = []
            m = Member(username, role, regions, f"10.{20 + i // 60000}.{(i // 250) % 250}."
                       f"{i % 250 + 2}", rng.uniform(0.75, 1.25), rng.uniform(7.5, 9.5), last)
            self.members.append(m)
            self.by_name[username] = m
        # VIPs: 0.5% of customers (at least 5 per region); staff customers are employees.
        vip_n = max(5 * len(REGIONS), self.n_customers // 200)
        order = list(range(self.n_customers))
        rng.shuffle(order)
        vip_idx = set(order[:vip_n])
        staff_cust: dict[int, Member] = {}
        pool = order[vip_n:]
        for m in self.members:
            if rng.random() < 0.4:
                idx = pool.pop()
                staff_cust[idx] = m
                people[idx]["employee"] = True
                people[idx]["last_name"] = m.surname
                people[idx]["region"] = m.regions[0] if m.regions else people[idx]["region"]
        for i in vip_idx:
            people[i]["vip"] = True
        self.log(f"generated {len(people):,} customers in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        self._import("persons", people, "policy_administration")
        with self.rt.db.read() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, subject_id FROM records WHERE collection = 'persons' "
                "ORDER BY rowid")).all()
        assert len(rows) == len(people), (len(rows), len(people))
        for i, (p, r) in enumerate(zip(people, rows, strict=True)):
            c = Customer(r.subject_id, r.id, p["region"], p["last_name"], p["email"],
                         p["phone"], p["national_id"], vip=i in vip_idx)
            owner = staff_cust.get(i)
            if owner is not None:
                c.employee_of = owner.username
                owner.own = c
            self.customers.append(c)
            self.by_region[c.region].append(c)
            if not c.watched:
                self.plain_by_region[c.region].append(c)
        self.log(f"imported persons in {time.perf_counter() - t0:.1f} s")
        self._assign_books()
        self._plan_people()
        self._plan_scenarios()
        self._create_staff()

    def _import(self, collection: str, rows: list[dict[str, Any]], purpose: str) -> None:
        problems: list[Any] = []
        report = Importer(self.rt.vault, batch_size=1000).run(
            SYSTEM, collection, ((i, dict(r), []) for i, r in enumerate(rows, start=1)),
            purpose, lambda line, p: problems.append((line, p)))
        if problems:
            line, first = problems[0]
            raise SystemExit(f"{len(problems)} {collection} rows rejected; first: line {line}: "
                             f"{[p.as_dict() for p in first]}")
        assert report.imported == len(rows)

    def _assign_books(self) -> None:
        """Claims for adjusters and quotes for underwriters, on distinct ordinary customers;
        some VIP and employee customers have a claim too (their adjuster handles them)."""
        rng = self.rng
        plain = [c for c in self.customers if not c.watched]
        rng.shuffle(plain)
        adjusters = [m for m in self.members if m.role == "claims_adjuster"]
        underwriters = [m for m in self.members if m.role == "underwriter"]
        claims: list[dict[str, Any]] = []
        owners: list[tuple[Customer, Member]] = []
        it = iter(plain)
        for m in adjusters:
            for _ in range(CLAIMS_PER_ADJUSTER):
                c = next(it)
                owners.append((c, m))
        for c in self.customers:
            if (c.vip and rng.random() < 0.4) or (c.employee_of and rng.random() < 0.1):
                owners.append((c, rng.choice(adjusters)))
        for n, (c, m) in enumerate(owners, start=1):
            loss = FIRST_DAY - timedelta(days=rng.randint(5, 200))
            claims.append({
                "subject_id": c.subject_id, "claim_number": f"CLM-{n:08d}",
                "policy_number": f"POL-{rng.randint(0, 99_999_999):08d}",
                "status": rng.choice(["open", "open", "under_review"]),
                "loss_date": loss.isoformat(),
                "reported_at": f"{(loss + timedelta(days=2)).isoformat()}T09:30:00Z",
                "assigned_adjuster": m.username, "restricted": False,
                "description": "Water damage in the kitchen after a pipe burst.",
                "amount_claimed": f"{rng.uniform(500, 40_000):.2f}"})
            m.book.append(c)
        quotes: list[dict[str, Any]] = []
        qowners: list[tuple[Customer, Member]] = []
        for m in underwriters:
            for _ in range(QUOTES_PER_UNDERWRITER):
                c = next(it)
                qowners.append((c, m))
                m.book.append(c)
        for n, (c, m) in enumerate(qowners, start=1):
            quotes.append({
                "subject_id": c.subject_id, "quote_number": f"QT-{n:08d}",
                "product": rng.choice(["auto", "home", "life", "health", "travel"]),
                "decision": "pending", "premium_quoted": f"{rng.uniform(200, 4000):.2f}",
                "assigned_underwriter": m.username})
        t0 = time.perf_counter()
        self._import("claims", claims, "claims_handling")
        self._import("quotes", quotes, "underwriting")
        by_subject = {c.subject_id: c for c in self.customers}
        with self.rt.db.read() as conn:
            for r in conn.execute(sa.text(
                    "SELECT id, subject_id, collection FROM records "
                    "WHERE collection IN ('claims', 'quotes')")):
                c = by_subject[r.subject_id]
                if r.collection == "claims":
                    c.claim_id = r.id
                else:
                    c.quote_id = r.id
        self.log(f"imported {len(claims):,} claims and {len(quotes):,} quotes in "
                 f"{time.perf_counter() - t0:.1f} s")

    def _plan_people(self) -> None:
        rng = self.rng
        agents = [m for m in self.members if m.role == "call_center_agent"]
        # The watched customers' desk: one or two agents per region (when there are enough).
        per_region = 2 if len(agents) >= 60 else 1 if len(agents) >= 10 else 0
        for region in REGIONS:
            cands = [m for m in agents if m.regions == [region] and not m.desk]
            for m in rng.sample(cands, min(per_region, len(cands))):
                m.desk = True
        others = [m for m in agents if not m.desk]
        for m in rng.sample(others, max(1, round(len(agents) * 0.06))):
            m.night = True
        # Watched customers call as often as anyone; all their calls go to the desk.
        desk = sum(m.desk for m in agents)
        watched = sum(c.watched for c in self.customers) / len(self.customers)
        self.desk_share = min(0.6, watched * len(agents) / desk) if desk else 0.0
        for m in self.members:
            if m.role == "fraud_investigator":
                m.book = rng.sample(self.customers, FRAUD_CASES)
                m.book = [c for c in m.book if not c.watched]
            # Absences: 4% of days, and a week's vacation for 30% of staff.
            for d in range(self.days):
                if rng.random() < 0.04:
                    m.absent.add(d)
            if rng.random() < 0.3 and self.days > 10:
                first = rng.randrange(0, self.days - 7)
                m.absent.update(range(first, first + 7))

    # -- scenarios --------------------------------------------------------------------------
    def _workday(self, lo: int, hi: int) -> int:
        days = [d for d in range(lo, hi + 1) if self.weekday(d) < 5]
        return self.rng.choice(days)

    def _plan_scenarios(self) -> None:
        rng = self.rng
        lo = min(max(8, self.days // 4), self.days - 3)
        used: set[str] = set()

        def pick(roles: Iterable[str], ok: Callable[[Member], bool] = lambda m: True
                 ) -> Member | None:
            for role in roles:
                cands = [m for m in self.members if m.role == role and m.username not in used
                         and not m.desk and not m.night and not m.dormant and ok(m)]
                if cands:
                    m = rng.choice(cands)
                    used.add(m.username)
                    return m
            return None

        def roles_mix(i: int, *roles: str) -> list[str]:
            return [*roles[i % len(roles):], *roles[:i % len(roles)]]

        def reach(m: Member) -> list[Customer]:
            if m.role == "fraud_investigator":
                return self.customers
            return [c for r in m.regions for c in self.by_region[r]]

        for name in SCENARIOS:
            for i in range(self.k):
                day = self._workday(lo, self.days - 1)
                if name == "password_spraying":
                    inst = self._register(Instance(name, f"203.0.113.{10 + i}", "attacker",
                                                   day))
                    self.extra[day].append((inst, self._spray(inst)))
                    continue
                if name == "dormant_account":
                    m = pick(["call_center_agent"])
                    if m:
                        m.dormant = True
                elif name == "self_lookup":
                    m = pick(roles_mix(i, "call_center_agent", "fraud_investigator"),
                             lambda m: m.own is not None)
                elif name == "coworker_lookup":
                    m = pick(roles_mix(i, "call_center_agent", "fraud_investigator"),
                             lambda m: any(c.employee_of not in (None, m.username)
                                           for c in reach(m)))
                elif name == "vip_snooping":
                    m = pick(roles_mix(i, "call_center_agent", "fraud_investigator"),
                             lambda m: any(c.vip for c in reach(m)))
                elif name in ("same_surname", "slow_drip", "search_enumeration"):
                    m = pick(roles_mix(i, "call_center_agent", "fraud_investigator"),
                             lambda m: m.own is None)
                elif name == "burst_before_resignation":
                    m = pick(roles_mix(i, "call_center_agent", "fraud_investigator",
                                       "claims_adjuster"))
                elif name == "after_hours":
                    m = pick(roles_mix(i, "call_center_agent", "claims_adjuster",
                                       "underwriter"))
                elif name == "bulk_export":
                    m = pick(["dpo"]) if i % 2 == 0 else None
                    m = m or pick(roles_mix(i, "fraud_investigator", "call_center_agent"))
                else:
                    raise AssertionError(name)
                if m is None:
                    self.log(f"no staff member left for {name} #{i + 1}: skipped")
                    continue
                if name == "slow_drip":
                    day = self._workday(lo, max(lo, self.days - 8))
                inst = self._register(Instance(name, m.username, m.role, day))
                self._inject(inst, m, i, reach(m))

    def _register(self, inst: Instance) -> Instance:
        inst.index = len(self.instances)
        self.instances.append(inst)
        return inst

    def _inject(self, inst: Instance, m: Member, i: int, reach: list[Customer]) -> None:
        rng = self.rng
        name = inst.scenario
        day = inst.day
        m.absent.discard(day)
        if name == "vip_snooping":
            targets = rng.sample([c for c in reach if c.vip and m.username not in
                                  self._desk_of(c)], 2)
            self.extra[day].append((inst, self._reads_during(inst, m, day, targets)))
        elif name == "self_lookup":
            assert m.own is not None
            self.extra[day].append((inst, self._reads_during(inst, m, day, [m.own])))
        elif name == "coworker_lookup":
            cands = [c for c in reach if c.employee_of not in (None, m.username)]
            target = rng.choice(cands)
            self.extra[day].append((inst, self._reads_during(inst, m, day, [target])))
        elif name == "same_surname":
            # A relative: an ordinary customer within reach who shares the insider's surname.
            target = rng.choice([c for c in reach if not c.watched])
            m.surname = target.last_name
            # Nobody calls about the relative by chance (the insider would have met them first).
            self.plain_by_region[target.region].remove(target)
            # Checked on, not glanced at once: one or two more looks on days at work within
            # two weeks (before the first when the period ends first). Drawn from a generator
            # of their own, so the rest of the world is the same as with a single look.
            own = random.Random(f"{self.seed}:same_surname:{i}")
            later = [d for d in range(day + 1, min(self.days, day + 15))
                     if self.weekday(d) < 5 and d not in m.absent]
            if not later:
                later = [d for d in range(max(0, day - 14), day)
                         if self.weekday(d) < 5 and d not in m.absent]
            looks = sorted({day, *own.sample(later, min(len(later), own.randint(1, 2)))})
            inst.variant = f"relative, {len(looks)} looks"
            for d in looks:
                self.extra[d].append((inst, self._reads_during(
                    inst, m, d, [target], None if d == day else own)))
        elif name == "slow_drip":
            extra = max(6, round(BASE_VISITS[m.role] * m.factor * self.intensity
                                 * rng.uniform(0.8, 1.2)))
            inst.variant = f"{extra} extra customers a day"
            last = min(self.days - 1, day + 20)
            for d in range(day, last + 1):
                if self.weekday(d) < 5:
                    m.absent.discard(d)
                    self.extra[d].append((inst, self._drip(inst, m, d, reach, extra)))
        elif name == "burst_before_resignation":
            if m.role == "claims_adjuster":
                targets = list(m.book)
            else:
                n = max(60, round(6 * BASE_VISITS[m.role] * m.factor * self.intensity))
                targets = rng.sample([c for c in reach if not c.watched], n)
            inst.variant = f"{len(targets)} customers in a day"
            self.extra[day].append((inst, self._burst(inst, m, day, targets)))
        elif name == "after_hours":
            self.extra[day].append((inst, self._after_hours(inst, m, day)))
        elif name == "search_enumeration":
            variant = ["few_hits", "one_value_many_fields", "many_values_one_field"][i % 3]
            if variant == "one_value_many_fields" and m.role != "fraud_investigator":
                variant = "few_hits"
            inst.variant = variant
            self.extra[day].append((inst, self._enumerate(inst, m, day, variant, reach)))
        elif name == "bulk_export":
            inst.variant = "export" if m.role == "dpo" else "rapid_reads"
            self.extra[day].append((inst, self._bulk(inst, m, day, reach)))
        elif name == "dormant_account":
            self.extra[day].append((inst, self._dormant(inst, m, day)))

    def _desk_of(self, c: Customer) -> set[str]:
        return {m.username for m in self.members if m.desk and c.region in m.regions}

    # scenario action builders: each returns a thunk producing that day's actions
    def _reads_during(self, inst: Instance, m: Member, day: int, targets: list[Customer],
                      rng: random.Random | None = None) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            out = []
            for c in targets:
                t = self.at(day, m.start_hour + (rng or self.rng).uniform(1.0, 6.5))
                inst.touch(t)
                out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
            return out
        return make

    def _drip(self, inst: Instance, m: Member, day: int, reach: list[Customer], extra: int
              ) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            out = []
            fresh = [c for c in self.rng.sample(reach, min(len(reach), extra * 4))
                     if not c.watched and c.subject_id not in m.seen][:extra]
            for c in fresh:
                m.seen.add(c.subject_id)
                t = self.at(day, m.start_hour + self.rng.uniform(0.3, 8.0))
                inst.touch(t)
                out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
            return out
        return make

    def _burst(self, inst: Instance, m: Member, day: int, targets: list[Customer]
               ) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            out = []
            for c in targets:
                t = self.at(day, m.start_hour + self.rng.uniform(0.2, 8.3))
                inst.touch(t)
                if m.role == "claims_adjuster" and c.claim_id:
                    out.append(self._action(t, m, "read", ("claims", c.claim_id, m.purpose)))
                out.append(self._action(t + timedelta(seconds=20), m, "read",
                                        ("persons", c.person_id, m.purpose)))
            return out
        return make

    def _after_hours(self, inst: Instance, m: Member, day: int) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            start = self.rng.uniform(22.5, 24.5)
            t = self.at(day, start)
            out = [self._action(t, m, "login")]
            inst.touch(t)
            for _ in range(self.rng.randint(6, 12)):
                t += timedelta(seconds=self.rng.uniform(40, 240))
                c = self._customer_for(m, day)
                inst.touch(t)
                out += self._visit(m, c, t)
            return out
        return make

    def _enumerate(self, inst: Instance, m: Member, day: int, variant: str,
                   reach: list[Customer]) -> Callable[[], list[Action]]:
        rng = self.rng

        def fake_ssn() -> str:
            return f"{rng.randint(100, 665):03d}-{rng.randint(10, 99):02d}-" \
                   f"{rng.randint(1000, 9999):04d}"

        def make() -> list[Action]:
            t = self.at(day, m.start_hour + rng.uniform(1.5, 6.0))
            out = []
            searches: list[tuple[str, dict[str, str]]] = []
            fraud = m.role == "fraud_investigator"
            if variant == "few_hits":
                for _ in range(30):
                    if rng.random() < 0.1:
                        c = rng.choice([c for c in reach[:2000] if not c.watched])
                        where = ({"national_id": c.national_id} if fraud else
                                 {"phone": c.phone})
                    else:
                        where = ({"national_id": fake_ssn()} if fraud else
                                 {"phone": f"+1 {rng.randint(201, 989)}-{rng.randint(200, 999)}"
                                           f"-{rng.randint(0, 9999):04d}"})
                    searches.append(("persons", where))
            elif variant == "one_value_many_fields":
                for _ in range(3):
                    v = f"{rng.choice('ABCDEFGHJKLMNPRSTWY')}{rng.randint(0, 9_999_999):07d}"
                    for f in ("passport_number", "drivers_licence_number", "last_name"):
                        searches.append(("persons", {f: v}))
                    searches.append(("vehicles", {"licence_plate": v}))
            else:
                for _ in range(14):
                    where = ({"national_id": fake_ssn()} if fraud else
                             {"email": f"{uuid.uuid4().hex[:10]}@example.net"})
                    searches.append(("persons", where))
            for coll, where in searches:
                t += timedelta(seconds=rng.uniform(12, 25))
                inst.touch(t)
                out.append(self._action(t, m, "search", (coll, where, m.purpose)))
            return out
        return make

    def _bulk(self, inst: Instance, m: Member, day: int, reach: list[Customer]
              ) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            t = self.at(day, m.start_hour + self.rng.uniform(1.0, 6.0))
            inst.touch(t)
            if m.role == "dpo":
                return [self._action(t, m, "export", ("persons", m.purpose))]
            out = []
            for c in self.rng.sample([c for c in reach if not c.watched], 200):
                t += timedelta(seconds=self.rng.uniform(4, 10))
                inst.touch(t)
                out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
            return out
        return make

    def _dormant(self, inst: Instance, m: Member, day: int) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            t = self.at(day, self.rng.uniform(9.0, 15.0))
            inst.touch(t)
            out = [self._action(t, m, "login")]
            for _ in range(self.rng.randint(6, 12)):
                t += timedelta(seconds=self.rng.uniform(30, 200))
                c = self.rng.choice(self.plain_by_region[m.regions[0]])
                inst.touch(t)
                out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
            return out
        return make

    def _spray(self, inst: Instance) -> Callable[[], list[Action]]:
        def make() -> list[Action]:
            rng = self.rng
            # Small hours (after the night shift's day began) or office hours.
            t = self.at(inst.day, rng.choice([rng.uniform(26.0, 29.0), rng.uniform(10.0, 16.0)]))
            real = [m.username for m in rng.sample(self.members, 9)]
            guesses = ["admin", "administrator", "j.smith", "test", "helpdesk", "backup"]
            names = real + rng.sample(guesses, rng.randint(2, 4))
            rng.shuffle(names)
            out = []
            for name in names:
                t += timedelta(seconds=rng.uniform(15, 45))
                inst.touch(t)
                out.append(self._action(t, None, "spray", (inst.who, name)))
            return out
        return make

    # -- staff ------------------------------------------------------------------------------
    def _create_staff(self) -> None:
        """Dormant accounts first (created, enrolled, used once 100 days before the start),
        then everyone else the day before; profiles and the watch list."""
        t0 = time.perf_counter()
        dormant = [m for m in self.members if m.dormant]
        # A weekday about 100 days before the first day (the scenario's sign-in is 90+ later).
        back = next(d for d in range(-100, -110, -1) if self.weekday(d) < 5)
        self.set_time(self.at(back, 10.0))
        for m in dormant:
            self._enrol(m)
            self.run([self._action(self.clock.now(), m, "login")]
                     + [self._action(self.clock.now() + timedelta(minutes=2 + k), m, "read",
                                     ("persons", c.person_id, m.purpose))
                        for k, c in enumerate(self.rng.sample(
                            self.plain_by_region[m.regions[0]], 2))])
        self.set_time(self.at(-1, 11.0))
        for m in self.members:
            if not m.dormant:
                self._enrol(m)
        for m in self.members:
            if m.own is not None:
                self.rt.profiles.link_subject(SYSTEM, m.username, m.own.subject_id)
            self.rt.profiles.set_surname(SYSTEM, m.username, m.surname)
        for c in self.customers:
            if c.watched:
                desk = sorted(self._desk_of(c) - {c.employee_of})
                self.rt.alerts.watch(SYSTEM, c.subject_id, "served by the customer desk",
                                     "vip" if c.vip else "employee", desk)
        self.log(f"created {len(self.members)} staff in {time.perf_counter() - t0:.1f} s "
                 f"(dormant {len(dormant)}, night {sum(m.night for m in self.members)}, "
                 f"desk {sum(m.desk for m in self.members)})")

    def _enrol(self, m: Member) -> None:
        made = self.rt.users.create(m.username, [m.role], m.regions)
        assert made.enrolment_code is not None
        # Every course of the catalogue: staff have the training for the data classes their
        # role reaches (issue 13's gate); an untrained refusal is a setup fault, not insider work.
        for course in self.rt.training.catalogue.courses:
            self.rt.users.record_training(m.username, course.id,
                                          self.clock.now().date() - timedelta(days=20))
        m.totp_secret = self.rt.users.enrol(m.username, made.enrolment_code,
                                            PASSWORD).totp_secret

    # -- ordinary days ----------------------------------------------------------------------
    def _customer_for(self, m: Member, day: int) -> Customer:
        rng = self.rng
        if m.role == "call_center_agent":
            if m.recent and rng.random() < 0.1:
                return rng.choice(m.recent)
            region = rng.choice(m.regions)
            if m.desk and rng.random() < self.desk_share:
                watched = [c for c in self.by_region[region]
                           if c.watched and c.employee_of != m.username]
                if watched:
                    return rng.choice(watched)
            return rng.choice(self.plain_by_region[region])
        if m.role in ("claims_adjuster", "underwriter"):
            # A few files are busy, most are quiet: weights fixed per file.
            k = len(m.book)
            return m.book[min(k - 1, int(k * rng.random() ** 1.6))]
        if m.role == "fraud_investigator":
            if rng.random() < 0.7 and m.book:
                return rng.choice(m.book)
            c = rng.choice(self.customers)
            while c.watched:
                c = rng.choice(self.customers)
            return c
        return rng.choice(self.customers)  # dpo

    def _visit(self, m: Member, c: Customer, t: datetime) -> list[Action]:
        """The reads one piece of work makes, from ``t`` on."""
        rng = self.rng
        out: list[Action] = []
        m.recent.append(c)
        m.seen.add(c.subject_id)
        if m.role == "call_center_agent":
            if rng.random() < 0.25:
                kind = rng.random()
                where = ({"phone": c.phone} if kind < 0.45 else {"email": c.email}
                         if kind < 0.9 else {"last_name": c.last_name})
                out.append(self._action(t, m, "search", ("persons", where, m.purpose)))
                t += timedelta(seconds=rng.uniform(5, 30))
            out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
        elif m.role == "claims_adjuster":
            out.append(self._action(t, m, "read", ("claims", c.claim_id, m.purpose)))
            out.append(self._action(t + timedelta(seconds=rng.uniform(10, 90)), m, "read",
                                    ("persons", c.person_id, m.purpose)))
        elif m.role == "underwriter":
            out.append(self._action(t, m, "read", ("quotes", c.quote_id, m.purpose)))
            out.append(self._action(t + timedelta(seconds=rng.uniform(10, 90)), m, "read",
                                    ("persons", c.person_id, m.purpose)))
        elif m.role == "fraud_investigator":
            out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
            if c.claim_id and rng.random() < 0.6:
                out.append(self._action(t + timedelta(seconds=rng.uniform(10, 90)), m, "read",
                                        ("claims", c.claim_id, m.purpose)))
        else:
            out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
        return out

    def plan_day(self, day: int) -> list[Action]:
        rng = self.rng
        out: list[Action] = []
        weekday = self.weekday(day)
        for m in self.members:
            if m.dormant or day in m.absent:
                continue
            if m.night:
                if weekday not in (6, 0, 1, 2, 3):
                    continue
                start = 22.0 + rng.uniform(-0.25, 0.25)
                blocks = [(start, 26.0), (26.5, 29.8)]
            else:
                if weekday >= 5:
                    continue
                start = m.start_hour + rng.gauss(0, 0.25)
                length = 8.5 + rng.uniform(-0.4, 0.4) + (1.0 if rng.random() < 0.015 else 0)
                lunch = start + rng.uniform(3.5, 4.5)
                # Signed in in the morning and again after lunch (the idle logoff ends the
                # morning's session).
                blocks = [(start, lunch), (lunch + rng.uniform(0.5, 1.0), start + length)]
                blocks = [(a, min(b, 29.8)) for a, b in blocks if b > a]
            for a, _ in blocks:
                t = self.at(day, a)
                if rng.random() < 0.02:
                    out.append(self._action(t - timedelta(seconds=rng.uniform(10, 40)), m,
                                            "login_typo"))
                out.append(self._action(t, m, "login"))
                if m.role == "security_analyst":
                    out.append(self._action(t + timedelta(minutes=2), m, "alerts"))
            base = BASE_VISITS.get(m.role, 0)
            visits = round(base * m.factor * self.intensity * rng.lognormvariate(0, 0.25))
            if m.role == "dpo":
                visits = rng.choice([0, 1, 1, 2, 3])
            span = sum(b - a for a, b in blocks)
            for _ in range(visits):
                x = rng.uniform(0.05, span - 0.05)
                for a, b in blocks:
                    if x < b - a:
                        t = self.at(day, a + x)
                        break
                    x -= b - a
                if m.role == "call_center_agent" and rng.random() < 0.01:
                    # A caller from another region: refused, answered as not found.
                    c = rng.choice(self.plain_by_region[rng.choice(
                        [r for r in REGIONS if r not in m.regions])])
                    out.append(self._action(t, m, "read", ("persons", c.person_id, m.purpose)))
                    continue
                out += self._visit(m, self._customer_for(m, day), t)
            if m.role == "call_center_agent" and not m.night and rng.random() < 0.004:
                # About once a year: an urgent caller from another region, by break glass.
                c = rng.choice(self.plain_by_region[rng.choice(
                    [r for r in REGIONS if r not in m.regions])])
                out.append(self._action(self.at(day, blocks[-1][0] + 0.5), m, "break_glass", c))
            if m.role == "actuary" and day == self._actuary_day(m):
                out.append(self._action(self.at(day, blocks[0][0] + 1.0), m, "export",
                                        ("claims", "analytics")))
        for inst, make in self.extra.get(day, []):
            self._making = inst
            out += make()
            self._making = None
        out.sort(key=lambda a: (a[0], a[1]))
        return out

    def _actuary_day(self, m: Member) -> int:
        r = random.Random(f"{self.seed}:{m.username}")
        days = [d for d in range(min(5, self.days - 1), self.days) if self.weekday(d) < 5]
        return r.choice(days)

    # -- running ----------------------------------------------------------------------------
    def run(self, actions: list[Action]) -> None:
        for at, _, m, op, arg, tag in actions:
            self.set_time(at)
            request_id = uuid.uuid4().hex
            if tag is not None:
                self.tagged[request_id] = tag
            client = arg[0] if op == "spray" else m.address if m else None
            token = request_context.set(RequestContext(request_id=request_id, client=client))
            t0 = time.process_time()
            try:
                self._do(m, op, arg)
            except FiduciaryError as exc:
                self.failures[f"{op}:{type(exc).__name__}"] += 1
            finally:
                request_context.reset(token)
            self.ops[op] += 1
            self.op_cpu[op] += time.process_time() - t0

    def _do(self, m: Member | None, op: str, arg: Any) -> None:
        rt = self.rt
        if op == "spray":
            rt.users.login(arg[1], "Spring2026!", totp=f"{self.rng.randint(0, 999_999):06d}")
            return
        assert m is not None
        if op == "login_typo":
            rt.users.login(m.username, PASSWORD + "x",
                           totp=pyotp.TOTP(m.totp_secret).at(self.clock.now()))
            return
        if op == "login":
            s = rt.users.login(m.username, PASSWORD,
                               totp=pyotp.TOTP(m.totp_secret).at(self.clock.now()))
            m.token = s.token
            m.principal = rt.users.authenticate(s.token)
            return
        if m.principal is None:
            raise AssertionError(f"{m.username} acts before signing in ({op})")
        p = m.principal
        if op == "read":
            collection, record_id, purpose = arg
            rt.vault.get_record(p, collection, record_id, purpose)
        elif op == "search":
            collection, where, purpose = arg
            rt.vault.search(p, collection, where, purpose)
        elif op == "export":
            collection, purpose = arg
            for _ in rt.vault.export(p, collection, purpose):
                pass
        elif op == "alerts":
            rt.alerts.list_alerts(p, limit=50)
        elif op == "break_glass":
            c: Customer = arg
            # A fresh sign-in, the grant, then the session carries it to the read.
            self._do(m, "login", None)
            assert m.token is not None and m.principal is not None
            rt.users.break_glass(m.principal, [c.subject_id],
                                 "Caller transferred from another region's queue", 30)
            m.principal = rt.users.authenticate(m.token)
            rt.vault.get_record(m.principal, "persons", c.person_id, m.purpose)
        else:
            raise AssertionError(op)

    def simulate(self) -> None:
        t0 = time.perf_counter()
        for day in range(self.days):
            actions = self.plan_day(day)
            self.run(actions)
            self.rt.trail.sequence(batch_size=50_000)
            if day % 5 == 4 or day == self.days - 1:
                done = sum(self.ops.values())
                self.log(f"day {day + 1}/{self.days}: {done:,} operations, "
                         f"{done / (time.perf_counter() - t0):,.0f}/s")
