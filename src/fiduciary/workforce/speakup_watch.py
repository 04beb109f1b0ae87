"""The retaliation watch (EU Directive 2019/1937, art. 19): once a reporter chose to identify
as a staff username, what later happens to that account and that person's customer record
raises an alert in the ethics officer's own queue — not the security analysts' (an alert
there would tell them who reported).

It reads the audit trail in leaf order from a cursor (``system_state``), as the monitor does,
and raises for events on or after the day of the report:

- ``user.set_roles`` that removes a role, ``user.disable``, ``apikey.revoke`` of a key the
  user holds (``api_keys.owner_id``): adverse changes to the account;
- any staff user's action on the reporter's own customer record (``users.subject_id``):
  reads, searches, writes, attempts refused — everyone's but the reporter's own.

Watched usernames live only sealed in their cases; each round opens them in memory. An alert's
details are sealed too, and dated by day. The watch writes no audit event: one written when an
alert is raised would sit in the trail right after the change it reacts to and point at the
reporter. Reading the queue is audited (``speakup.alerts_read``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock
from fiduciary.crypto.keyring import Keyring
from fiduciary.ids import new_id
from fiduciary.principal import ActorKind
from fiduciary.storage import Database
from fiduciary.storage.schema import (
    api_keys,
    audit_events,
    speakup_alerts,
    speakup_cases,
    system_state,
    users,
)
from fiduciary.workforce.speakup import CaseSealer, SpeakUpService, day_of, keyed_digest

log = logging.getLogger("fiduciary.speakup")

CURSOR_KEY = "speakup.watch.cursor"
#: Actions on a customer's records or the customer as a whole.
_RECORD_ACTIONS = ("record.", "records.", "subject.")


@dataclass(frozen=True)
class Watched:
    case_id: str
    user_id: str
    username: str
    subject_id: str | None
    since: datetime
    #: The API keys the user holds.
    key_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WatchRun:
    events: int
    alerts: int


class RetaliationWatch:
    def __init__(self, db: Database, clock: Clock, trail: AuditTrail, keyring: Keyring,
                 sealer: CaseSealer, speakup: SpeakUpService, batch_size: int = 5000) -> None:
        self.db = db
        self.clock = clock
        self.trail = trail
        self.sealer = sealer
        self.speakup = speakup
        self.batch_size = batch_size
        self._dedup_key = keyring.derive_key("speakup-alert-dedup")
        self._lock = threading.Lock()

    def watched(self) -> list[Watched]:
        """Reporters who named themselves with a staff username, each with their case."""
        with self.db.read() as conn:
            cases = conn.execute(sa.select(
                speakup_cases.c.id, speakup_cases.c.identity_sealed,
                speakup_cases.c.received_on).where(
                speakup_cases.c.identity_sealed.is_not(None))).all()
            staff = {r.username: r for r in conn.execute(
                sa.select(users.c.id, users.c.username, users.c.subject_id))}
            found = []
            for case in cases:
                identity = self.sealer.open(case.identity_sealed, case.id, "identity").strip()
                user = staff.get(identity) or staff.get(identity.lower())
                if user is not None:
                    found.append((case, user))
            keys: dict[str, set[str]] = {}
            if found:
                for k in conn.execute(sa.select(api_keys.c.id, api_keys.c.owner_id).where(
                        api_keys.c.owner_id.in_({u.id for _, u in found}))):
                    keys.setdefault(k.owner_id, set()).add(k.id)
        return [Watched(case.id, user.id, user.username, user.subject_id, case.received_on,
                        frozenset(keys.get(user.id, ()))) for case, user in found]

    def run_once(self, sequence: bool = True) -> WatchRun:
        """Read every sequenced event after the cursor; raise what the watch finds. Also
        audits the channel's intakes of days that are over (``flush_audit``)."""
        with self._lock:
            if sequence:
                self.trail.sequence()
            self.speakup.flush_audit()
            watched = self.watched()
            events = raised = 0
            while True:
                with self.db.read() as conn:
                    cursor = _cursor(conn)
                    rows = conn.execute(
                        sa.select(audit_events.c.leaf_index, audit_events.c.event)
                        .where(audit_events.c.leaf_index >= cursor)
                        .order_by(audit_events.c.leaf_index).limit(self.batch_size)).all()
                if not rows:
                    break
                findings = [f for r in rows if r.event is not None
                            for f in self._observe(json.loads(r.event), watched)]
                made = self._commit(cursor, rows[-1].leaf_index + 1, findings)
                if made < 0:  # another watch moved the cursor: start again from it
                    continue
                events += len(rows)
                raised += made
            return WatchRun(events, raised)

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        """The loop ``fiduciary serve`` runs in a background thread."""
        while not stop.wait(interval):
            try:
                self.run_once(sequence=False)  # the sequencer thread sequences
            except Exception:
                log.exception("retaliation watch round failed")

    @staticmethod
    def _observe(event: dict[str, Any], watched: Iterable[Watched]
                 ) -> list[tuple[Watched, dict[str, Any]]]:
        at = datetime.fromisoformat(event["time"])
        action = event["action"]
        actor = event.get("actor") or {}
        details = event.get("details") or {}
        found = []
        for w in watched:
            if at < w.since:
                continue
            what: dict[str, Any] | None = None
            about_user = w.user_id in (details.get("user_id"), details.get("owner_id"))
            if about_user and action == "user.disable":
                what = {"kind": "account_disabled"}
            elif about_user and action == "user.set_roles":
                removed = sorted(set(details.get("previous") or []) - set(details.get("roles")
                                                                         or []))
                if removed:
                    what = {"kind": "roles_removed", "roles_removed": removed}
            elif action == "apikey.revoke" and (about_user
                                                or details.get("key_id") in w.key_ids):
                what = {"kind": "api_key_revoked", "key_id": details.get("key_id")}
            elif (w.subject_id is not None and w.subject_id in event.get("subject_ids", ())
                  and action.startswith(_RECORD_ACTIONS)
                  and actor.get("kind") == ActorKind.USER and actor.get("id") != w.user_id):
                what = {"kind": "record_access", "collection": event.get("collection"),
                        "decision": event.get("decision")}
            if what is not None:
                found.append((w, {**what, "username": w.username, "event_id": event["id"],
                                  "action": action, "at": event["time"],
                                  "actor": actor.get("name") or actor.get("id")}))
        return found

    def _commit(self, cursor: int, end: int,
                findings: list[tuple[Watched, dict[str, Any]]]) -> int:
        """Alerts and the new cursor in one transaction; -1 when another watch moved the
        cursor meanwhile."""
        raised_on = day_of(self.clock.now())
        made = 0
        with self.db.write() as conn:
            if _cursor(conn) != cursor:
                return -1
            for w, details in findings:
                dedup = keyed_digest(self._dedup_key, w.case_id, details["event_id"])
                if conn.execute(sa.select(speakup_alerts.c.id).where(
                        speakup_alerts.c.dedup_key == dedup)).first() is not None:
                    continue
                alert_id = new_id()
                conn.execute(speakup_alerts.insert(), [{
                    "id": alert_id, "case_id": w.case_id, "dedup_key": dedup,
                    "raised_on": raised_on, "details_sealed": self.sealer.seal(
                        json.dumps(details, sort_keys=True), w.case_id, f"alert:{alert_id}")}])
                made += 1
            if conn.execute(sa.select(system_state.c.key).where(
                    system_state.c.key == CURSOR_KEY)).first() is None:
                conn.execute(system_state.insert(), [{"key": CURSOR_KEY, "value": str(end)}])
            else:
                conn.execute(system_state.update().where(system_state.c.key == CURSOR_KEY)
                             .values(value=str(end)))
        return made


def _cursor(conn: sa.Connection) -> int:
    v = conn.execute(sa.select(system_state.c.value).where(
        system_state.c.key == CURSOR_KEY)).scalar()
    return int(v) if v is not None else 0
