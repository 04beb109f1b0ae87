"""The speak-up channel (``fiduciary.workforce.speakup``): anyone reports a concern without
logging in and keeps a receipt to follow the thread; the ethics officer (``speakup:manage``)
acknowledges, answers and closes cases, and reads the retaliation watch's alerts.

For every route under ``/v1/speakup`` the request context keeps no client address and the
access log is off (``api.middleware``); the receipt travels in the ``X-Speakup-Receipt``
header, never in a URL (which proxies and browsers log)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from fiduciary.api.deps import Ctx, OneHopRoute, Rt, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.clock import iso
from fiduciary.principal import Permission
from fiduciary.workforce.speakup import Overdue

router = APIRouter(prefix="/v1/speakup", tags=["speak-up"], route_class=OneHopRoute)

Handler = Annotated[Ctx, Depends(requires(Permission.SPEAKUP_MANAGE))]
Receipt = Annotated[str | None, Header(alias="X-Speakup-Receipt", description=(
    "The receipt the report was answered with (digits; spaces and dashes ignored)"))]
_HANDLER = documented(401, 403, 422)
_SEALED = "Sealed at rest; only `speakup:manage` reads it"


def _address(request: Request) -> str | None:
    """Counted for the rate limit (under a rotating key), never stored."""
    return request.client.host if request.client else None


class NewReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description=f"The concern, in the reporter's words. {_SEALED}")
    category: str | None = Field(None, description=f"The reporter's own label. {_SEALED}")
    identify_as: str | None = Field(None, description=(
        "Who the reporter is, only if they choose to say (a staff username turns on the "
        f"retaliation watch for that account). {_SEALED}"))


class ReportReceipt(BaseModel):
    receipt: str = Field(description="Shown once: the only way back to the case. Stored "
                         "only as an Argon2id hash")
    acknowledge_by: Timestamp = Field(description="7 days from the (UTC) day of receipt")
    feedback_by: Timestamp = Field(description="3 months from the (UTC) day of receipt")


class Message(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="`reporter` or `handler`")
    sent_on: str = Field(description="The UTC day (no time is kept)",
                         json_schema_extra={"format": "date"})
    text: str


class Thread(BaseModel):
    status: str = Field(description="`received`, `acknowledged` or `closed`")
    received_on: str = Field(json_schema_extra={"format": "date"})
    acknowledged: bool
    acknowledge_by: Timestamp
    feedback_by: Timestamp
    report: str
    category: str | None
    messages: list[Message]


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description=_SEALED)


class Posted(BaseModel):
    posted: bool


class CaseSummary(BaseModel):
    id: str
    status: str
    received_on: str = Field(json_schema_extra={"format": "date"})
    acknowledge_by: Timestamp
    feedback_by: Timestamp
    acknowledged_at: Timestamp | None
    feedback_at: Timestamp | None
    closed_at: Timestamp | None
    category: str | None
    identified: bool = Field(description="The reporter named themselves")
    messages: int
    overdue_acknowledge: bool
    overdue_feedback: bool


class CaseList(BaseModel):
    items: list[CaseSummary]


class Case(CaseSummary):
    report: str
    identify_as: str | None
    outcome: str | None
    thread: list[Message]


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description=f"A message the reporter reads. {_SEALED}")


class Closing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(description=f"What came of the report. {_SEALED}")


class WatchAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    case_id: str
    raised_on: str = Field(json_schema_extra={"format": "date"})
    kind: str = Field(description="`roles_removed`, `account_disabled`, `api_key_revoked` or "
                      "`record_access`")
    username: str
    event_id: str = Field(description="The audit event it was raised for")
    action: str
    at: Timestamp
    actor: str | None


class WatchAlerts(BaseModel):
    items: list[WatchAlert]


# -- the reporter (no login) -----------------------------------------------------------------
@router.post("/reports", status_code=201, responses=documented(422, 429))
def submit_speakup_report(body: NewReport, request: Request, rt: Rt) -> ReportReceipt:
    """Report a concern without logging in. Keep the receipt: it is shown once."""
    made = rt.speakup.submit(body.text, body.category, body.identify_as,
                             address=_address(request))
    return ReportReceipt(receipt=made.receipt, acknowledge_by=iso(made.acknowledge_by),
                         feedback_by=iso(made.feedback_by))


@router.get("/thread", responses=documented(401, 422, 429))
def get_speakup_thread(request: Request, rt: Rt, receipt: Receipt = None) -> Thread:
    """The reporter's case: status, deadlines and the messages of the thread."""
    return Thread.model_validate(rt.speakup.thread(receipt, address=_address(request)))


@router.post("/thread/messages", status_code=201, responses=documented(401, 409, 422, 429))
def post_speakup_message(body: NewMessage, request: Request, rt: Rt,
                         receipt: Receipt = None) -> Posted:
    """Add a message for the case's handlers."""
    rt.speakup.add_message(receipt, body.text, address=_address(request))
    return Posted(posted=True)


# -- the ethics officer ----------------------------------------------------------------------
@router.get("/reports", responses={**_HANDLER, **documented(422)})
def list_speakup_reports(
    ctx: Handler,
    overdue: Annotated[Overdue | None, Query(
        description="Only open cases past this deadline")] = None,
) -> CaseList:
    return CaseList.model_validate({"items": ctx.rt.speakup.cases(ctx.caller(), overdue)})


def _case(doc: dict[str, Any]) -> Case:
    return Case.model_validate(doc)


@router.get("/reports/{case_id}", responses={**_HANDLER, **documented(404)})
def get_speakup_report(case_id: str, ctx: Handler) -> Case:
    return _case(ctx.rt.speakup.show(ctx.caller(), case_id))


@router.post("/reports/{case_id}/acknowledge", responses={**_HANDLER, **documented(404, 409)})
def acknowledge_speakup_report(case_id: str, ctx: Handler) -> Case:
    return _case(ctx.rt.speakup.acknowledge(ctx.caller(), case_id))


@router.post("/reports/{case_id}/feedback",
             responses={**_HANDLER, **documented(404, 409, 422)})
def give_speakup_feedback(case_id: str, body: Feedback, ctx: Handler) -> Case:
    return _case(ctx.rt.speakup.feedback(ctx.caller(), case_id, body.text))


@router.post("/reports/{case_id}/close", responses={**_HANDLER, **documented(404, 409, 422)})
def close_speakup_report(case_id: str, body: Closing, ctx: Handler) -> Case:
    return _case(ctx.rt.speakup.close(ctx.caller(), case_id, body.outcome))


@router.get("/alerts", responses=_HANDLER)
def list_speakup_alerts(ctx: Handler) -> WatchAlerts:
    """The retaliation watch's queue (ethics only: it names reporters)."""
    return WatchAlerts.model_validate({"items": ctx.rt.speakup.alerts(ctx.caller())})
