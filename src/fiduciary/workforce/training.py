"""Training: assessments graded on the server, the status of everyone's courses, reminders
before expiry and xAPI statements for an LMS — over the catalogue (``catalogue.py``) and the
completions ``access.users`` keeps, where the gate by data class is decided.

NYDFS 500.14(a)(3) (annual awareness training, social engineering included); HIPAA
164.308(a)(5) and 164.530(b) (the whole workforce, new staff within a reasonable period, again
on material change, with records).

::

    GET  /v1/me/training          my courses: status, expiry, questions (never the key)
    POST /v1/training/C/attempts  answers ──grade──▶ attempt row + audit event
                                                    └ passed: completion (version, source
                                                      ``assessment``) in the same transaction
    daily (serve / ``training remind``): completion expiring in ≤ 30 or ≤ 7 days
         ──▶ ``training.reminder`` audit event once per (user, course, expiry, threshold)
         ──▶ a notice on the webhook / e-mail channels

A course's status for a person: ``current``; ``expiring`` (current, ending within 30 days);
``expired`` (lapsed, or completed at a version the catalogue has since replaced: then
``refresher_due`` is true); ``missing``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from fiduciary.access.users import CURRENT, CourseState, User, UserService
from fiduciary.audit.events import AuditLog, audit_actor
from fiduciary.clock import Clock
from fiduciary.errors import FieldProblem, Forbidden, InvalidInput, NotFound, RateLimited, Reason
from fiduciary.monitoring.delivery import AlertDelivery
from fiduciary.principal import SYSTEM, Permission, Principal, require_permission
from fiduciary.storage import Database
from fiduciary.storage.schema import training_attempts, training_records, training_reminders, users
from fiduciary.workforce.catalogue import (
    Catalogue,
    Course,
    Question,
    answer_digest,
    audience_gaps,
)

log = logging.getLogger("fiduciary.workforce")

EXPIRING_DAYS = 30
#: Days before expiry a reminder goes out; the tightest one reached is sent.
REMINDER_DAYS = (30, 7)
ATTEMPT_WINDOW = timedelta(hours=24)
XAPI_VERB = "http://adlnet.gov/expapi/verbs/"
XAPI_ASSESSMENT = "http://adlnet.gov/expapi/activities/assessment"
EXPIRING = "expiring"

#: An answer: the index of the choice, or the indexes of several for a question with more
#: than one right choice.
Answer = int | list[int]


@dataclass(frozen=True)
class AttemptResult:
    passed: bool
    score: float
    #: Of the completion a pass records; None for a fail.
    expires_at: date | None
    attempts_left: int


def course_status(state: CourseState, today: date) -> str:
    """``current`` becomes ``expiring`` within :data:`EXPIRING_DAYS` of its end."""
    if state.status == CURRENT and state.expires_at is not None and \
            state.expires_at <= today + timedelta(days=EXPIRING_DAYS):
        return EXPIRING
    return state.status


class TrainingService:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, users: UserService,
                 catalogue: Catalogue, delivery: AlertDelivery, *, attempts_per_day: int = 5,
                 home_page: str = "https://fiduciary.invalid") -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.users = users
        self.catalogue = catalogue
        self.delivery = delivery
        self.attempts_per_day = attempts_per_day
        self.home_page = home_page.rstrip("/")

    # -- a person's own courses ------------------------------------------------------------------
    def mine(self, principal: Principal) -> list[dict[str, Any]]:
        """The courses for the caller's roles, with their state and the questions (never
        which choices are right)."""
        self._staff_only(principal)
        records = self.users.training(principal.id)
        today = self.clock.now().date()
        used = self._attempts_today(principal.id)
        out = []
        for course in self.catalogue.courses:
            if not course.for_role(principal.roles):
                continue
            state = self.users.training_rules.state(records, course.id, today)
            out.append({
                "id": course.id, "title": course.title, "version": course.version,
                "unlocks": [c.value for c in course.unlocks],
                "status": course_status(state, today), "expires_at": state.expires_at,
                "refresher_due": state.refresher_due, "pass_mark": course.pass_mark,
                "attempts_left": max(0, self.attempts_per_day - used.get(course.id, 0)),
                "questions": [{"id": q.id, "text": q.text, "choices": list(q.choices),
                               "multiple": q.multiple} for q in course.questions]})
        return out

    def attempt(self, principal: Principal, course_id: str, answers: Sequence[Answer]
                ) -> AttemptResult:
        """Grade ``answers`` (one per question, in order). A bad answer list is refused
        naming the question, and counts for nothing; each graded attempt counts toward the
        limit of ``attempts_per_day`` per course in 24 hours."""
        self._staff_only(principal)
        course = self._course_for(principal, course_id)
        chosen = _check_answers(course, answers)
        right = sum(_correct(course, q, c) for q, c in zip(course.questions, chosen, strict=True))
        score = round(right / len(course.questions), 4)
        passed = score >= course.pass_mark
        user = self.users.get(principal.username)
        now = self.clock.now()
        a = training_attempts.c
        expires = None
        with self.db.write() as conn:
            # One attempt at a time per person (PostgreSQL; SQLite's write lock already is).
            conn.execute(sa.select(users.c.id).where(users.c.id == user.id).with_for_update())
            window = [r.attempted_at for r in conn.execute(
                sa.select(a.attempted_at).where(
                    a.user_id == user.id, a.course == course.id,
                    a.attempted_at > now - ATTEMPT_WINDOW).order_by(a.attempted_at))]
            limited = len(window) >= self.attempts_per_day
            if limited:  # the refusal is audited, and committed before it is raised
                self.audit.append(conn, self.audit.event(
                    audit_actor(principal), "training.attempt", decision="deny",
                    reason=Reason.RATE_LIMITED, details={"course": course.id}))
            else:
                conn.execute(training_attempts.insert(), [{
                    "id": str(uuid.uuid4()), "user_id": user.id, "course": course.id,
                    "course_version": course.version, "score": score, "passed": passed,
                    "attempted_at": now}])
                self.audit.append(conn, self.audit.event(
                    audit_actor(principal), "training.attempt", details={
                        "course": course.id, "version": course.version, "score": score,
                        "passed": passed}))
                if passed:
                    expires = now.date() + timedelta(days=course.validity_days)
                    self.users.record_training_in(
                        conn, user, course.id, now.date(), expires, evidence=None,
                        source="assessment", version=course.version, by=principal)
        if limited:
            retry = window[-self.attempts_per_day] + ATTEMPT_WINDOW - now
            raise RateLimited(f"at most {self.attempts_per_day} attempts at a course in 24 "
                              "hours", retry.total_seconds())
        return AttemptResult(passed, score, expires,
                             max(0, self.attempts_per_day - len(window) - 1))

    # -- everyone's ----------------------------------------------------------------------------
    def status(self, principal: Principal) -> list[dict[str, Any]]:
        """Each active user and the state of each course their roles take."""
        require_permission(principal, Permission.TRAINING_READ, scope=None)
        today = self.clock.now().date()
        records = self.users.training_of_all()
        out = []
        for user in self._active_users():
            mine = records.get(user.id, [])
            courses = []
            for course in self.catalogue.courses:
                if course.for_role(user.roles):
                    state = self.users.training_rules.state(mine, course.id, today)
                    courses.append({"id": course.id, "version": course.version,
                                    "status": course_status(state, today),
                                    "expires_at": state.expires_at,
                                    "refresher_due": state.refresher_due})
            out.append({"username": user.username, "roles": list(user.roles),
                        "courses": courses})
        return out

    def statements(self, principal: Principal, since: datetime | None = None
                   ) -> list[dict[str, Any]]:
        """xAPI 1.0.3 statements, oldest first: ``passed``/``failed`` for each graded attempt,
        ``completed`` for each external completion. Statement ids are derived from the rows,
        so an LMS that receives an export twice keeps one copy."""
        require_permission(principal, Permission.TRAINING_READ, scope=None)
        a, t = training_attempts.c, training_records.c
        with self.db.read() as conn:
            names = {i: name for i, name in conn.execute(
                sa.select(users.c.id, users.c.username))}
            attempts = sa.select(training_attempts)
            external = sa.select(training_records).where(t.source == "external")
            if since is not None:
                attempts = attempts.where(a.attempted_at >= since)
                external = external.where(t.recorded_at >= since)
            rows = [(r.attempted_at, self._attempt_statement(r, names[r.user_id]))
                    for r in conn.execute(attempts)]
            rows += [(r.recorded_at, self._completion_statement(r, names[r.user_id]))
                     for r in conn.execute(external)]
        rows.sort(key=lambda p: (p[0], p[1]["id"]))
        return [s for _, s in rows]

    # -- reminders -----------------------------------------------------------------------------
    def remind(self, principal: Principal = SYSTEM) -> list[dict[str, Any]]:
        """Reminders due now: for each active user's current course ending within 30 (or 7)
        days, an audit event ``training.reminder`` once per (user, course, expiry, threshold)
        and a notice on the delivery channels. Returns those sent by this run."""
        today = self.clock.now().date()
        records = self.users.training_of_all()
        sent = []
        for user in self._active_users():
            for course in self.catalogue.courses:
                if not course.for_role(user.roles):
                    continue
                state = self.users.training_rules.state(records.get(user.id, []), course.id,
                                                        today)
                if state.status != CURRENT or state.expires_at is None:
                    continue
                days = (state.expires_at - today).days
                reached = [d for d in REMINDER_DAYS if days <= d]
                if reached and self._note_reminder(principal, user, course, state.expires_at,
                                                   min(reached)):
                    sent.append(self._notify(user, course, state.expires_at, days,
                                             min(reached)))
        return sent

    def run_forever(self, stop: threading.Event, interval_seconds: float) -> None:
        """The daily schedule ``fiduciary serve`` runs in a background thread."""
        while not stop.wait(interval_seconds):
            try:
                sent = self.remind()
                log.info("training reminders: %d sent", len(sent))
            except Exception:  # a database hiccup must not end the schedule
                log.exception("training reminders failed")

    def _note_reminder(self, principal: Principal, user: User, course: Course, expires: date,
                       threshold: int) -> bool:
        """Whether this reminder is new (and is now recorded, with its audit event)."""
        r = training_reminders.c
        key = {"user_id": user.id, "course": course.id, "expires_at": expires,
               "threshold_days": threshold}
        try:
            with self.db.write() as conn:
                if conn.execute(sa.select(r.sent_at).where(
                        *(getattr(r, k) == v for k, v in key.items()))).first():
                    return False
                conn.execute(training_reminders.insert(), [{**key,
                                                            "sent_at": self.clock.now()}])
                self.audit.append(conn, self.audit.event(
                    audit_actor(principal), "training.reminder", details={
                        "user_id": user.id, "username": user.username, "course": course.id,
                        "expires_at": expires.isoformat(), "threshold_days": threshold}))
        except sa.exc.IntegrityError:  # another process sent it meanwhile (PostgreSQL)
            return False
        return True

    def _notify(self, user: User, course: Course, expires: date, days: int, threshold: int
                ) -> dict[str, Any]:
        notice = {"kind": "training.reminder", "username": user.username, "course": course.id,
                  "title": course.title, "expires_at": expires.isoformat(), "days_left": days,
                  "threshold_days": threshold}
        text = (f"{user.username}'s training \"{course.title}\" ({course.id}) expires on "
                f"{expires.isoformat()}, in {days} days.\nThe assessment is at "
                f"/v1/training/{course.id}/attempts; a completion elsewhere is recorded with "
                "'fiduciary training record'.\n")
        channels = self.delivery.send_notice(
            notice, f"[Fiduciary] training expires in {days} days: {course.id}", text)
        return {**notice, "channels": channels}

    def audience_gaps(self) -> list[str]:
        """Roles staff hold that reach a data class whose course they cannot take."""
        held = {r for u in self._active_users() for r in u.roles}
        return audience_gaps(self.catalogue, self.users.policy.pack,
                             self.users.policy.datamap, held)

    # -- helpers -------------------------------------------------------------------------------
    def _staff_only(self, principal: Principal) -> None:
        if not principal.is_person:
            raise Forbidden("training is taken by staff users", reason=Reason.FIELD_NOT_PERMITTED)

    def _course_for(self, principal: Principal, course_id: str) -> Course:
        course = self.catalogue.course(course_id)
        if course is None:
            raise NotFound(f"course {course_id} not found", code="course_not_found")
        if not course.for_role(principal.roles):
            raise Forbidden("this course is not for your roles",
                            reason=Reason.FIELD_NOT_PERMITTED)
        return course

    def _active_users(self) -> list[User]:
        return [u for u in self.users.all() if u.disabled_at is None]

    def _attempts_today(self, user_id: str) -> dict[str, int]:
        a = training_attempts.c
        with self.db.read() as conn:
            rows = conn.execute(sa.select(a.course, sa.func.count()).where(
                a.user_id == user_id,
                a.attempted_at > self.clock.now() - ATTEMPT_WINDOW).group_by(a.course))
            return {course: count for course, count in rows}

    def _actor(self, username: str) -> dict[str, Any]:
        return {"objectType": "Agent", "name": username,
                "account": {"homePage": self.home_page, "name": username}}

    def _object(self, course_id: str) -> dict[str, Any]:
        course = self.catalogue.course(course_id)
        definition: dict[str, Any] = {"type": XAPI_ASSESSMENT}
        if course is not None:
            definition["name"] = {"en-US": course.title}
        return {"objectType": "Activity", "id": f"{self.home_page}/training/courses/{course_id}",
                "definition": definition}

    def _statement(self, key: str, username: str, verb: str, course: str,
                   version: str | None, result: dict[str, Any], at: datetime
                   ) -> dict[str, Any]:
        out = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.home_page}/training/{key}")),
               "actor": self._actor(username),
               "verb": {"id": XAPI_VERB + verb, "display": {"en-US": verb}},
               "object": self._object(course), "result": result,
               "timestamp": at.isoformat().replace("+00:00", "Z")}
        if version:
            out["context"] = {"revision": version}
        return out

    def _attempt_statement(self, r: Any, username: str) -> dict[str, Any]:
        return self._statement(f"attempts/{r.id}", username, "passed" if r.passed else "failed",
                               r.course, r.course_version,
                               {"score": {"scaled": r.score}, "success": bool(r.passed),
                                "completion": True}, r.attempted_at)

    def _completion_statement(self, r: Any, username: str) -> dict[str, Any]:
        result: dict[str, Any] = {"success": True, "completion": True}
        if r.evidence:
            result["extensions"] = {f"{self.home_page}/xapi/evidence": r.evidence}
        return self._statement(f"completions/{r.id}", username, "completed", r.course,
                               r.course_version, result, r.recorded_at)


def _check_answers(course: Course, answers: Sequence[Answer]) -> list[frozenset[int]]:
    """The chosen choice indexes per question, or InvalidInput naming each bad answer."""
    n = len(course.questions)
    if not isinstance(answers, list | tuple) or len(answers) != n:
        raise InvalidInput("one answer per question is required",
                           [FieldProblem("answers", f"expected {n} answers, one per question "
                                         "in order")])
    problems = []
    out = []
    for i, (q, given) in enumerate(zip(course.questions, answers, strict=True)):
        picks = [given] if isinstance(given, int) else list(given)
        where = f"answers[{i}] (question {q.id})"
        if not picks or any(isinstance(p, bool) or not isinstance(p, int)
                            or not 0 <= p < len(q.choices) for p in picks):
            problems.append(FieldProblem(where, f"unknown choice: 0 to {len(q.choices) - 1}"))
        elif len(set(picks)) != len(picks) or (len(picks) > 1 and not q.multiple):
            problems.append(FieldProblem(where, "one choice" if not q.multiple
                                         else "each choice once"))
        out.append(frozenset(picks))
    if problems:
        raise InvalidInput.from_problems(problems, "answers")
    return out


def _correct(course: Course, question: Question, picked: Iterable[int]) -> bool:
    given = "".join(sorted(answer_digest(course.id, question.id, question.choices[i])
                           for i in picked))
    return hmac.compare_digest(given, "".join(sorted(question.correct)))
