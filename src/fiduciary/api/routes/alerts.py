"""Monitoring alerts for security analysts (``alerts:manage``) and compliance officers
(``alerts:read``): the alerts with their evidence (audit events, inclusion proofs, the signed
checkpoint), their triage, the suppression list and the watch list.

The alert service checks each permission and every separation-of-duties rule (nobody triages or
suppresses an alert about themselves) and names each rejected field; it audits every read and
change, free text only as a keyed digest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.api.params import UtcDateTime
from fiduciary.api.routes.audit import Checkpoint
from fiduciary.monitoring.alerts import (
    MAX_ALERTS_PAGE,
    MAX_SUPPRESSION_DAYS,
    RAISED_ELSEWHERE,
    WATCH_CATEGORIES,
    AlertStatus,
)
from fiduciary.monitoring.pack import DETECTION_IDS, Severity
from fiduciary.principal import Permission

router = APIRouter(responses=documented(401, 403), route_class=OneHopRoute)
alerts = APIRouter(prefix="/v1/alerts", tags=["alerts"], route_class=OneHopRoute)
monitoring = APIRouter(prefix="/v1/monitoring", tags=["monitoring"], route_class=OneHopRoute)

AlertReader = Annotated[Ctx, Depends(requires(Permission.ALERTS_READ, Permission.ALERTS_MANAGE))]
Analyst = Annotated[Ctx, Depends(requires(Permission.ALERTS_MANAGE))]

_DETECTIONS = f"One of the detection pack's: {', '.join(DETECTION_IDS)}"
_LISTED = f"{_DETECTIONS}; or {', '.join(RAISED_ELSEWHERE)} (raised by compliance)"


# -- alerts ----------------------------------------------------------------------------------
class AlertPrincipal(BaseModel):
    kind: str = Field(description="`user`, `api_key` …")
    id: str | None
    username: str | None


class Evidence(BaseModel):
    event_id: str
    leaf_index: int | None = Field(description="Leaf index in the Merkle log; null until "
                                   "sequenced")
    checkpoint_size: int | None = Field(description="Size of the checkpoint the proof leads "
                                        "to; null until a checkpoint covers the event")
    inclusion_proof: list[str] = Field(description="RFC 9162 audit path (hex)")
    event: dict[str, Any] | None = Field(description="The event exactly as its leaf covers "
                                         "it (RFC 8785 canonical JSON); null once pruned")


class TimelineEntry(BaseModel):
    action: str = Field(description="`assign`, `comment`, `dismiss` or `escalate`")
    actor: str
    at: Timestamp
    text: str | None


class AlertState(BaseModel):
    """An alert as a triage step leaves it."""

    id: str
    detection: str
    severity: Severity
    score: float
    status: AlertStatus
    principal: AlertPrincipal = Field(description="Whom the alert is about")
    subject_ids: list[str]
    event_ids: list[str]
    reason: str
    details: dict[str, Any]
    assignee: str | None
    created_at: Timestamp
    updated_at: Timestamp


class Alert(AlertState):
    """An alert with the audit events behind it, each provable against ``checkpoint``."""

    evidence: list[Evidence]
    checkpoint: Checkpoint | None = Field(description="The latest signed checkpoint; null "
                                          "before the first")


class AlertDetail(Alert):
    timeline: list[TimelineEntry] = Field(description="Its triage, oldest first")


class AlertList(BaseModel):
    items: list[Alert]


class Dismissal(BaseModel):
    explanation: str = Field(description="Why it is not a concern (sealed at rest; the audit "
                             "trail keeps only its digest)")


class Escalation(BaseModel):
    note: str | None = Field(None, description="Sealed at rest; the audit trail keeps only "
                             "its digest")
    incident_id: str | None = Field(None, description="An open incident to join (default: "
                                    "a new incident, discovered when the alert was raised)")


class EscalatedAlert(AlertState):
    incident_id: str = Field(description="The incident it was escalated into")


class Assignment(BaseModel):
    username: str = Field(description="An active user holding `alerts:manage`, not the one "
                          "the alert is about")


class Comment(BaseModel):
    text: str = Field(description="Sealed at rest; the audit trail keeps only its digest")


@alerts.get("", responses=documented(422))
def list_alerts(
    ctx: AlertReader,
    status: Annotated[str | None, Query(description=", ".join(AlertStatus))] = None,
    detection: Annotated[str | None, Query(description=_LISTED)] = None,
    principal: Annotated[str | None, Query(description="The username an alert is about")
                         ] = None,
    subject_id: Annotated[str | None, Query(description="A subject the alert names")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ALERTS_PAGE)] = 100,
) -> AlertList:
    """Newest first."""
    return AlertList.model_validate({"items": ctx.rt.alerts.list_alerts(
        ctx.caller(), status=status, detection=detection, username=principal,
        subject_id=subject_id, limit=limit)})


@alerts.get("/{alert_id}", responses=documented(404, 422))
def get_alert(alert_id: str, ctx: AlertReader) -> AlertDetail:
    return AlertDetail.model_validate(ctx.rt.alerts.get(ctx.caller(), alert_id))


@alerts.post("/{alert_id}/dismiss", responses=documented(404, 409, 422))
def dismiss_alert(alert_id: str, body: Dismissal, ctx: Analyst) -> AlertState:
    """Close it as no concern; never by the person it is about."""
    return AlertState.model_validate(ctx.rt.alerts.dismiss(ctx.caller(), alert_id,
                                                           body.explanation))


@alerts.post("/{alert_id}/escalate", responses=documented(404, 409, 422))
def escalate_alert(alert_id: str, ctx: Analyst, body: Escalation | None = None
                   ) -> EscalatedAlert:
    """Close it as a concern handed on to an incident (`incidents:manage` too): a new one,
    or the open incident named; never by the person it is about."""
    body = body or Escalation()
    incident = ctx.rt.incidents.escalate_alert(ctx.caller(), alert_id, body.note,
                                               body.incident_id)
    return EscalatedAlert.model_validate({**incident["escalated_alert"],
                                          "incident_id": incident["id"]})


@alerts.post("/{alert_id}/assign", responses=documented(404, 422))
def assign_alert(alert_id: str, body: Assignment, ctx: Analyst) -> AlertState:
    return AlertState.model_validate(ctx.rt.alerts.assign(ctx.caller(), alert_id,
                                                          body.username))


@alerts.post("/{alert_id}/comments", responses=documented(404, 422))
def comment_alert(alert_id: str, body: Comment, ctx: Analyst) -> AlertState:
    return AlertState.model_validate(ctx.rt.alerts.comment(ctx.caller(), alert_id, body.text))


# -- suppressions ----------------------------------------------------------------------------
class Suppression(BaseModel):
    id: str
    detection: str
    principal: str | None = Field(description="The username it covers (null: any)")
    subject_id: str | None = Field(description="The subject it covers (null: any)")
    reason: str
    created_by: str
    created_at: Timestamp
    expires_at: Timestamp


class SuppressionList(BaseModel):
    items: list[Suppression]


class NewSuppression(BaseModel):
    detection: str = Field(description=_DETECTIONS)
    principal: str | None = Field(None, description="Only alerts about this username")
    subject_id: str | None = Field(None, description="Only alerts naming this subject")
    reason: str = Field(description="Sealed at rest; the audit trail keeps only its digest")
    expires_at: UtcDateTime = Field(description="In the future, at most "
                                    f"{MAX_SUPPRESSION_DAYS} days ahead (UTC)")


@monitoring.get("/suppressions")
def list_suppressions(ctx: AlertReader) -> SuppressionList:
    """Those in force."""
    return SuppressionList.model_validate({"items": ctx.rt.alerts.suppressions(ctx.caller())})


@monitoring.post("/suppressions", status_code=201, responses=documented(422))
def create_suppression(body: NewSuppression, ctx: Analyst) -> Suppression:
    """Stop a detection from raising alerts (about a user, a subject, or both) until it
    expires; never for alerts about oneself."""
    return Suppression.model_validate(ctx.rt.alerts.suppress(
        ctx.caller(), body.detection, body.reason, body.expires_at, username=body.principal,
        subject_id=body.subject_id))


# -- the watch list --------------------------------------------------------------------------
class WatchEntry(BaseModel):
    subject_id: str
    category: str = Field(description=", ".join(WATCH_CATEGORIES))
    handlers: list[str] = Field(description="Usernames whose access to the subject is "
                                "expected")
    reason: str
    added_by: str
    added_at: Timestamp


class Watchlist(BaseModel):
    items: list[WatchEntry]


class NewWatchEntry(BaseModel):
    subject_id: str
    category: str = Field("other", description=", ".join(WATCH_CATEGORIES))
    reason: str = Field(description="Sealed at rest; the audit trail keeps only its digest")
    handlers: list[str] = Field([], description="Usernames whose access to the subject is "
                                "expected (never one's own)")


@monitoring.get("/watchlist")
def list_watchlist(ctx: AlertReader) -> Watchlist:
    return Watchlist.model_validate({"items": ctx.rt.alerts.watchlist(ctx.caller())})


@monitoring.post("/watchlist", status_code=201, responses=documented(404, 422))
def watch_subject(body: NewWatchEntry, ctx: Analyst) -> WatchEntry:
    """Every access to the subject by anyone but its handlers raises an alert. Replaces the
    subject's entry if it has one."""
    return WatchEntry.model_validate(ctx.rt.alerts.watch(
        ctx.caller(), body.subject_id, body.reason, body.category, body.handlers))


@monitoring.delete("/watchlist/{subject_id}", status_code=204, response_class=Response,
                   responses=documented(404, 422))
def unwatch_subject(subject_id: str, ctx: Analyst) -> None:
    ctx.rt.alerts.unwatch(ctx.caller(), subject_id)


router.include_router(alerts)
router.include_router(monitoring)
