"""The composition root: builds every service from one :class:`Settings`."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher

from fiduciary.access import ApiKeyService
from fiduciary.access.approvals import ApprovalService
from fiduciary.access.authcache import AuthCache, GenerationProbe
from fiduciary.access.passwords import Passwords
from fiduciary.access.policy import PolicyEngine, load_policy
from fiduciary.access.reviews import AccessReviewService
from fiduciary.access.throttle import LoginThrottle
from fiduciary.access.users import TrainingRequirements, UserService
from fiduciary.audit.events import AuditLog
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock, SystemClock
from fiduciary.compliance.catalogue import load_controls
from fiduciary.compliance.evidence import EvidencePacker
from fiduciary.compliance.filings import FilingService
from fiduciary.compliance.posture import PostureService
from fiduciary.config import Settings
from fiduciary.crypto.keyring import KEYRING_FILE, FileKeyring, open_file_keyring
from fiduciary.crypto.keystore import SubjectKeyStore
from fiduciary.datamap import DataMap, load
from fiduciary.errors import ConfigurationError
from fiduciary.incidents.batches import LETTERS_DIR, LetterBatches
from fiduciary.incidents.letters import LetterService
from fiduciary.incidents.register import IncidentService
from fiduciary.incidents.rules import load_rules
from fiduciary.incidents.scope import ScopeCalculator
from fiduciary.monitoring.alerts import AlertService, Notes
from fiduciary.monitoring.delivery import AlertDelivery, check_settings
from fiduciary.monitoring.engine import Monitor
from fiduciary.monitoring.pack import DetectionPack, load_detections
from fiduciary.monitoring.profiles import StaffProfiles
from fiduciary.principal import SYSTEM
from fiduciary.privacy.access_package import AccessPackager
from fiduciary.privacy.consent import ConsentDesk, ConsentLedger
from fiduciary.privacy.deadlines import statutory_calendar
from fiduciary.privacy.dsr import DsrService
from fiduciary.privacy.erasure import Eraser
from fiduciary.privacy.gates import PrivacyGate, Restriction
from fiduciary.privacy.holds import HoldService
from fiduciary.privacy.retention import RetentionService
from fiduciary.privacy.ropa import RopaService, configuration_digests
from fiduciary.storage import Database
from fiduciary.storage.lease import Lease
from fiduciary.storage.schema import subject_keys, system_state
from fiduciary.vault import SubjectKeys, VaultService, rollback
from fiduciary.workforce.catalogue import Catalogue, load_catalogue
from fiduciary.workforce.hr import HrSync
from fiduciary.workforce.reviews import ReviewCampaigns
from fiduciary.workforce.speakup import (
    RECEIPT_FAILURES,
    REPORTS,
    AddressLimiter,
    CaseSealer,
    Receipts,
    SpeakUpService,
)
from fiduciary.workforce.speakup_watch import RetaliationWatch
from fiduciary.workforce.training import TrainingService

log = logging.getLogger("fiduciary.runtime")
#: The lease whose holder runs the background work (one process of several).
BACKGROUND_LEASE = "background"


@dataclass
class Runtime:
    """Every service, built once in dependency order; owns the background work (the audit
    sequencer and the retention schedule) that a long-running host starts and stops."""

    settings: Settings
    datamap: DataMap
    db: Database
    keyring: FileKeyring
    vault: VaultService
    api_keys: ApiKeyService
    users: UserService
    policy: PolicyEngine
    reviews: AccessReviewService
    audit: AuditLog
    trail: AuditTrail
    consent: ConsentLedger
    dsr: DsrService
    holds: HoldService
    restriction: Restriction
    eraser: Eraser
    retention: RetentionService
    packager: AccessPackager
    ropa: RopaService
    approvals: ApprovalService
    #: Consent as callers record and read it (relationships, scopes, GPC).
    consent_desk: ConsentDesk
    detections: DetectionPack
    monitor: Monitor
    alerts: AlertService
    delivery: AlertDelivery
    profiles: StaffProfiles
    incidents: IncidentService
    letters: LetterBatches
    #: The training catalogue, assessments, status and reminders.
    training: TrainingService
    #: Access review campaigns; the HR feed and dormant accounts.
    campaigns: ReviewCampaigns
    hr: HrSync
    speakup: SpeakUpService
    #: The speak-up channel's retaliation watch (its own alert queue).
    speakup_watch: RetaliationWatch
    #: The compliance posture: controls checked, results kept, attestations.
    posture: PostureService
    #: Evidence packs an examiner verifies offline.
    evidence: EvidencePacker
    #: The NYDFS certification draft (kept five years) and the CCPA 7102 metrics.
    filings: FilingService
    clock: Clock = field(default_factory=SystemClock)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False, repr=False)
    #: ``serve --workers N``: the lease thread, and the background lease once started.
    _leader: list[threading.Thread] = field(default_factory=list, init=False, repr=False)
    _work_stop: threading.Event = field(default_factory=threading.Event, init=False,
                                        repr=False)
    _lease: Lease | None = field(default=None, init=False, repr=False)
    _held_until: float | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in [*self._threads, *self._leader])

    @property
    def leading(self) -> bool:
        """This process holds the background lease and runs the background work."""
        return bool(self._threads)

    def start(self) -> None:
        """Start the background work of a long-running host (``fiduciary serve`` and the
        ASGI lifespan) in whichever process holds the ``background`` lease (one of
        ``serve --workers N``, or of several servers on one database): the audit sequencer,
        and the retention job every ``retention_interval_hours`` (0: never; run it from cron
        instead), the monitor and the other schedules. Every other process keeps trying to
        take the lease and starts the work when it does (the holder died). Idempotent."""
        if self._leader:
            return
        self._stop.clear()
        self._lease = Lease(self.db, BACKGROUND_LEASE, self.settings.lease_seconds)
        self._lead()  # at once: a single server starts its work before it serves
        self._spawn_into(self._leader, "lease", self._lead_forever)

    def _lead_forever(self) -> None:
        while not self._stop.wait(self.settings.lease_seconds / 3):
            self._lead()

    def _lead(self) -> None:
        """Take or renew the lease; start the work on taking it, stop it on losing it (or
        a third of the lease before it could be taken, when the database cannot be reached)."""
        assert self._lease is not None
        try:
            held = self._lease.acquire()
        except Exception:
            log.exception("background lease: renewal failed")
            held = self._held_until
        self._held_until = held
        if held is not None and held - self.settings.lease_seconds / 3 > time.time():
            if not self._threads:
                log.info("background lease taken (%s): starting the background work",
                         self._lease.holder)
                self._start_work()
        elif self._threads:
            log.warning("background lease lost (%s): stopping the background work",
                        self._lease.holder)
            self._stop_work()

    def _start_work(self) -> None:
        self._work_stop.clear()
        stop = self._work_stop
        self._spawn("audit-sequencer", self.trail.run_forever, stop)
        hours = self.settings.retention_interval_hours
        if hours > 0:
            self._spawn("retention", self.retention.run_forever, SYSTEM, stop, hours * 3600)
        if self.settings.monitor_interval_seconds > 0:
            self._spawn("monitor", self.monitor.run_forever, stop,
                        self.settings.monitor_interval_seconds)
            self._spawn("alert-delivery", self.delivery.run_forever, stop)
        if self.settings.speakup_watch_interval_seconds > 0:
            self._spawn("speakup-watch", self.speakup_watch.run_forever, stop,
                        self.settings.speakup_watch_interval_seconds)
        hours = self.settings.dormant_check_interval_hours
        if hours > 0:  # accounts unused for dormant_disable_days are disabled
            self._spawn("dormant-accounts", self.hr.run_forever, SYSTEM, stop, hours * 3600)
        for gap in self.training.audience_gaps():  # staff who could never take a course
            log.warning("training catalogue: %s", gap)
        hours = self.settings.training_reminder_interval_hours
        if hours > 0:
            self._spawn("training-reminders", self.training.run_forever, stop, hours * 3600)
        hours = self.settings.compliance_check_interval_hours
        if hours > 0:  # every control, daily by default
            self._spawn("compliance-check", self.posture.run_forever, stop, hours * 3600)
        hours = self.settings.records_check_interval_hours
        if hours > 0:  # no silent rollback: rows against their latest write events
            self._spawn("records-check", rollback.run_forever, self.vault, stop, hours * 3600)

    def _stop_work(self) -> None:
        self._work_stop.set()
        for t in self._threads:
            t.join()
        self._threads.clear()

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        self._spawn_into(self._threads, name, target, *args)

    @staticmethod
    def _spawn_into(threads: list[threading.Thread], name: str,
                    target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        threads.append(thread)

    def stop(self) -> None:
        """Stop the background work, waiting for a round in progress to finish; the lease
        holder leaves a checkpoint over everything appended so far and gives the lease up."""
        if not self._leader:
            return
        self._stop.set()
        for t in self._leader:
            t.join()
        self._leader.clear()
        leading = bool(self._threads)
        self._stop_work()
        if not leading:
            return
        try:
            self.trail.sequence(force_checkpoint=True)
        except Exception:
            # A trail that cannot be extended (damaged, or the database gone) must not stop
            # the shutdown; `fiduciary audit verify` names what is wrong.
            log.exception("final audit checkpoint failed")
        try:
            assert self._lease is not None
            self._lease.release()
        except Exception:
            log.exception("background lease: release failed (it expires by itself)")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.users.auth_cache.close()
            self.audit.close()
            self.db.dispose()
            self.vault.keys.store.dispose()


def is_initialised(settings: Settings) -> bool:
    return (settings.data_dir / KEYRING_FILE).exists()


def open_runtime(settings: Settings, *, create: bool = False,
                 clock: Clock | None = None) -> Runtime:
    """Open (or with ``create``, initialise) the data directory, keyring and database."""
    clock = clock or SystemClock()
    data_dir = settings.data_dir
    if create:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings.log_dir.mkdir(exist_ok=True, mode=0o700)
    elif not is_initialised(settings):
        raise ConfigurationError(
            f"{data_dir} is not an initialised Fiduciary data directory: run "
            f"'fiduciary init --data-dir {data_dir}' first")
    datamap = load(settings.datamap)
    pack = load_policy(settings.policy, datamap)  # an invalid pack fails before anything opens
    detections = load_detections(settings.detections, datamap)
    breach_rules = load_rules(settings.breach_rules)
    catalogue = load_catalogue(settings.training_catalogue, pack.roles)
    controls = load_controls(settings.compliance_controls)
    check_settings(settings)  # alert channels, before anything opens
    master = settings.master_key.get_secret_value() if settings.master_key else None
    keyring = open_file_keyring(data_dir, master, create)
    db = Database(settings.resolved_database_url())
    db.migrate()
    if not db.is_sqlite and not settings.keystore_url:
        logging.getLogger("fiduciary.keystore").warning(
            "the database is shared but the key store is this machine's %s: every node must "
            "use one key store, set FIDUCIARY_KEYSTORE_URL", data_dir / "keys.db")
    store = SubjectKeyStore(settings.resolved_keystore_url())
    _move_keys_out_of_database(db, store)
    _tighten(data_dir)
    keys = SubjectKeys(keyring, store, clock, cache_seconds=settings.dek_cache_seconds)
    audit = AuditLog(db, clock)
    consent = ConsentLedger(db, datamap, clock, audit)
    # Consent-based purposes (marketing) are decided against the ledger.
    policy = PolicyEngine(pack, datamap, consent=consent)
    passwords = Passwords(pack.settings.password_min_length, PasswordHasher(
        time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib),
        concurrency=settings.password_hash_concurrency)
    throttle = LoginThrottle(settings.login_rate_per_client, settings.login_rate_global,
                             settings.login_rate_window_seconds)
    # One cache of verified tokens for keys and sessions, checked against the database's
    # generation counter on every use (every worker sees a revocation at once).
    auth_cache = AuthCache(GenerationProbe(db), settings.auth_cache_seconds)
    users = UserService(db, clock, keyring, policy, audit, passwords, throttle=throttle,
                        enrolment_hours=settings.enrolment_code_hours,
                        training=_training_requirements(catalogue, settings),
                        auth_cache=auth_cache)
    vault = VaultService(db, datamap, keyring, clock, policy, audit, keys,
                         break_glass_log=users.record_break_glass_use, gate=PrivacyGate())
    api_keys = ApiKeyService(db, clock, policy, audit, settings.api_key_default_days,
                             settings.api_key_max_days, auth_cache=auth_cache)
    approvals = ApprovalService(db, clock, audit, policy, users, api_keys)
    reviews = AccessReviewService(db, clock, policy, users, api_keys)
    trail = AuditTrail(db, keyring, clock, audit, settings.audit_checkpoint_events,
                       settings.audit_checkpoint_seconds)
    holds = HoldService(db, datamap, clock, audit, two_person=settings.privacy_two_person)
    restriction = Restriction(db, audit)
    packager = AccessPackager(vault, policy, consent, trail, audit, clock,
                              data_dir / "exports")
    letter_service = LetterService(vault, audit, clock, data_dir / LETTERS_DIR)

    def erased(subject_id: str) -> None:
        packager.delete_for(subject_id)
        letter_service.delete_for(subject_id)

    # Copies made from an erased subject's records (access packages, breach letters) go
    # with them.
    eraser = Eraser(db, datamap, clock, audit, keys, consent, on_erased=erased)
    retention = RetentionService(db, datamap, clock, audit, consent, eraser.shred,
                                 eraser.finish, sweep=eraser.destroy_leftover_keys)
    dsr = DsrService(db, clock, audit, restriction, consent, packager=packager, eraser=eraser,
                     calendar=statutory_calendar(settings),
                     two_person=settings.privacy_two_person)
    ropa = RopaService(datamap, policy, keyring, settings, clock, audit)
    delivery = AlertDelivery(db, clock, settings)
    monitor = Monitor(db, clock, audit, trail, detections, datamap, delivery)
    notes = Notes(keyring)
    alerts = AlertService(db, clock, audit, trail, users, notes)
    profiles = StaffProfiles(db, audit, vault)
    incidents = IncidentService(db, clock, audit, trail, notes, breach_rules,
                                ScopeCalculator(db, datamap, trail), alerts,
                                holidays=settings.holidays())
    letters = LetterBatches(db, clock, audit, incidents, letter_service)
    sealer = CaseSealer(keyring)
    speakup = SpeakUpService(
        db, clock, audit, sealer,
        Receipts(keyring, settings.speakup_kdf_time_cost, settings.speakup_kdf_memory_kib,
                 settings.password_hash_concurrency),
        AddressLimiter({REPORTS: settings.speakup_reports_per_hour,
                        RECEIPT_FAILURES: settings.speakup_receipt_failures_per_hour}))
    speakup_watch = RetaliationWatch(db, clock, trail, keyring, sealer, speakup)
    campaigns = ReviewCampaigns(db, clock, audit, users, api_keys, reviews, policy, vault,
                                notes, settings.review_due_days)
    hr = HrSync(db, clock, audit, users, api_keys, settings.dormant_disable_days)
    training = TrainingService(db, clock, audit, users, catalogue, delivery,
                               attempts_per_day=settings.training_attempts_per_day,
                               home_page=settings.training_xapi_home_page)
    posture = PostureService(db, clock, audit, controls, settings, datamap, policy, users,
                             trail, keyring, delivery)
    evidence = EvidencePacker(db, clock, audit, trail, posture, ropa)
    filings = FilingService(db, clock, audit, posture.results_between,
                            lambda: posture.catalogue.controls, zone=dsr.calendar.zone)
    _record_configuration(db, audit, datamap, policy, catalogue)
    return Runtime(settings, datamap, db, keyring, vault, api_keys, users, policy, reviews,
                   audit, trail, consent, dsr, holds, restriction, eraser, retention, packager,
                   ropa, approvals, ConsentDesk(consent, vault), detections, monitor, alerts,
                   delivery, profiles, incidents, letters, campaigns=campaigns, hr=hr,
                   training=training, speakup=speakup,
                   speakup_watch=speakup_watch, posture=posture, evidence=evidence,
                   filings=filings, clock=clock)


def _training_requirements(catalogue: Catalogue, settings: Settings) -> TrainingRequirements:
    """The gate's rules from the catalogue, as the access layer takes them (plain data)."""
    return TrainingRequirements(
        unlocks=catalogue.unlocks(), versions=catalogue.versions(),
        validity_days=catalogue.validity(), grace_days=settings.training_grace_days,
        grace_classes=frozenset(c.value for c in catalogue.grace_classes))


def _record_configuration(db: Database, audit: AuditLog, datamap: DataMap,
                          policy: PolicyEngine, catalogue: Catalogue) -> None:
    """A changed data map, policy pack or training catalogue leaves an audit event when it
    first takes effect (a new course version is a material change: HIPAA 164.530(b))."""
    digest = {**configuration_digests(datamap, policy),
              "datamap_source": datamap.source, "policy_source": policy.pack.source,
              "catalogue_sha256": catalogue.digest(), "catalogue_source": catalogue.source}
    value = json.dumps(digest, sort_keys=True)
    with db.write() as conn:
        current = conn.execute(sa.select(system_state.c.value).where(
            system_state.c.key == "configuration")).scalar()
        if current == value:
            return
        previous = json.loads(current) if current else {}
        if current is None:
            conn.execute(system_state.insert(), [{"key": "configuration", "value": value}])
        else:
            conn.execute(system_state.update().where(system_state.c.key == "configuration")
                         .values(value=value))
        changed = [k for k in ("datamap_sha256", "policy_sha256", "catalogue_sha256")
                   if previous.get(k) != digest[k]]
        audit.append(conn, audit.event(None, "config.changed", details={
            **digest, "changed": changed, "previous": previous or None}))


def _move_keys_out_of_database(db: Database, store: SubjectKeyStore) -> None:
    """Stores made before the key store kept wrapped data keys in ``subject_keys``: move them
    (a key in the database would survive an erasure in every backup)."""
    with db.read() as conn:  # every start: no write lock unless there is something to move
        if conn.execute(sa.select(subject_keys.c.subject_id).limit(1)).first() is None:
            return
    with db.write() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(subject_keys))]
        have = store.get(r["subject_id"] for r in rows)
        store.put([r for r in rows if r["subject_id"] not in have])
        conn.execute(subject_keys.delete())


def _tighten(data_dir: Path) -> None:
    # The data directory holds the database and keyring: owner only.
    for p in [data_dir, *data_dir.iterdir()]:
        if p.is_file() or p.is_dir():
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
