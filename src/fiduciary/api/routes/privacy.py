"""Privacy office: records of processing (GDPR Art. 30), the consent ledger, and
data-subject requests with their access packages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.principal import Permission
from fiduciary.privacy.consent import entries_as_dict
from fiduciary.privacy.dsr import MAX_DUE_WITHIN_DAYS, MAX_LIST
from fiduciary.privacy.dsr import DsrRequest as StoredDsr
from fiduciary.privacy.ropa import render_html

router = APIRouter(responses=documented(401, 403), route_class=OneHopRoute)
RopaReader = Annotated[Ctx, Depends(requires(Permission.CONFIG_READ))]
ConsentReader = Annotated[Ctx, Depends(requires(Permission.CONSENT_READ,
                                                Permission.PRIVACY_MANAGE))]
ConsentWriter = Annotated[Ctx, Depends(requires(Permission.CONSENT_WRITE,
                                                Permission.PRIVACY_MANAGE))]
PrivacyOfficer = Annotated[Ctx, Depends(requires(Permission.PRIVACY_MANAGE))]


# -- records of processing (compliance_officer, dpo, admin) -------------------------------------
class Ropa(BaseModel):
    """The Art. 30(1) register; its content follows the data map and the policy pack."""

    format_version: int
    generator: dict[str, str]
    generated_at: Timestamp
    sources: dict[str, dict[str, str]] = Field(description="datamap and policy: source, sha256")
    controller: dict[str, str]
    activities: list[dict[str, Any]] = Field(description="One processing activity per purpose")
    third_parties: list[dict[str, Any]]
    security_measures: dict[str, Any]


_HTML = {"content": {"text/html": {"schema": {"type": "string"}}},
         "description": "With format=html: a printable page"}


@router.get("/v1/ropa", tags=["privacy"], response_model=Ropa,
            responses={200: _HTML, **documented(422)})
def get_ropa(ctx: RopaReader,
             fmt: Annotated[str, Query(alias="format", pattern="^(json|html)$")] = "json",
             ) -> Ropa | Response:
    doc = ctx.rt.ropa.generate(ctx.caller(), fmt)
    return HTMLResponse(render_html(doc)) if fmt == "html" else Ropa.model_validate(doc)


# -- consent ledger ------------------------------------------------------------------------------
class NewConsent(BaseModel):
    purpose: str = Field(description="A consent-based purpose, sale_or_sharing or "
                         "sensitive_data_use")
    granted: bool = Field(description="false records a withdrawal (or a CCPA opt-out)")
    notice_version: str | None = Field(None, description="Required when granting")
    method: str = Field(description="web_form, phone, paper, email, in_person, "
                        "opt_out_preference_signal or api")
    notice_id: str | None = None
    channel: str | None = None


class ConsentEntry(BaseModel):
    id: str
    subject_id: str
    purpose: str
    granted: bool
    notice_id: str | None
    notice_version: str | None
    method: str
    channel: str | None
    recorded_at: Timestamp
    recorded_by: str


class Consents(BaseModel):
    current: dict[str, ConsentEntry] = Field(description="purpose: its latest entry")
    history: list[ConsentEntry] = Field(description="Every entry, oldest first")


GpcHeader = Annotated[str | None, Header(alias="Sec-GPC", description="Global Privacy "
                                         "Control: 1 opts the subject out of sale and "
                                         "sharing (CCPA regs 7025)")]
_CONSENTS = "/v1/subjects/{subject_id}/consents"


@router.post(_CONSENTS, status_code=201, tags=["consent"],
             responses=documented(404, 410, 422))
def record_consent(subject_id: str, body: NewConsent, ctx: ConsentWriter,
                   sec_gpc: GpcHeader = None) -> ConsentEntry:
    entry = ctx.rt.consent_desk.record(ctx.caller(), subject_id, body.purpose, body.granted,
                                       body.notice_id, body.notice_version, body.method,
                                       body.channel, sec_gpc=sec_gpc)
    return ConsentEntry.model_validate(entry.as_dict())


@router.get(_CONSENTS, tags=["consent"], responses=documented(404, 410, 422))
def list_consents(subject_id: str, ctx: ConsentReader, sec_gpc: GpcHeader = None
                  ) -> Consents:
    return Consents.model_validate(entries_as_dict(
        *ctx.rt.consent_desk.read(ctx.caller(), subject_id, sec_gpc=sec_gpc)))


# -- data-subject requests (privacy:manage) ----------------------------------------------------
class NewDsr(BaseModel):
    subject_id: str
    type: str = Field(description="gdpr: access, portability, rectification, erasure, "
                      "restriction, objection; ccpa: know, delete, correct, "
                      "opt_out_sale_sharing, limit_sensitive")
    regime: str = Field(description="gdpr or ccpa")
    # A zone-less time is the controller's local time: the service knows the zone.
    received_at: datetime = Field(description="When the request reached the insurer; without "
                                  "a zone, the controller's local time "
                                  "(FIDUCIARY_CONTROLLER_TIMEZONE, default UTC)")
    channel: str | None = None


class DsrVerification(BaseModel):
    method: str


class DsrReason(BaseModel):
    reason: str


class DsrFulfilment(BaseModel):
    note: str | None = Field(None, description="Required for rectification and correct: "
                             "what was corrected")
    purposes: list[str] | None = Field(None, description="Objection: the consent-based "
                                       "purposes objected to (default: all)")


class DsrStep(BaseModel):
    at: Timestamp
    step: str
    actor: str
    details: dict[str, Any]


class Dsr(BaseModel):
    id: str
    subject_id: str
    type: str
    regime: str
    channel: str | None
    status: str
    received_at: Timestamp
    due_at: Timestamp
    original_due_at: Timestamp
    extended: bool
    extension_reason: str | None
    acknowledge_by: Timestamp | None
    acknowledged_at: Timestamp | None
    verified_at: Timestamp | None
    verified_by: str | None
    verification_method: str | None
    closed_at: Timestamp | None
    outcome_reason: str | None
    result: dict[str, Any] | None = Field(description="What fulfilling it did (by type)")
    created_by: str
    updated_at: Timestamp
    overdue: list[str] = Field(description="Missed deadlines: acknowledgement, response")
    steps: list[DsrStep] | None = Field(None, exclude_if=lambda v: v is None,
                                        description="Its history (one request only)")

    @classmethod
    def of(cls, ctx: Ctx, request: StoredDsr) -> Dsr:
        return cls.model_validate(request.as_dict(ctx.rt.clock.now()))


class DsrList(BaseModel):
    items: list[Dsr]


dsr = APIRouter(prefix="/v1/dsr", tags=["dsr"], responses=documented(422), route_class=OneHopRoute)


@dsr.post("", status_code=201, responses=documented(404, 410))
def create_dsr(body: NewDsr, ctx: PrivacyOfficer) -> Dsr:
    return Dsr.of(ctx, ctx.rt.dsr.create(ctx.caller(), body.subject_id, body.type,
                                         body.regime, body.received_at, body.channel))


@dsr.get("")
def list_dsr(ctx: PrivacyOfficer, status: str | None = None, overdue: bool = False,
             due_within_days: Annotated[int | None, Query(
                 ge=0, le=MAX_DUE_WITHIN_DAYS)] = None,
             subject_id: str | None = None,
             limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000) -> DsrList:
    """By due date."""
    who = ctx.caller()
    now = ctx.rt.clock.now()
    found = ctx.rt.dsr.browse(who, status, overdue, due_within_days, subject_id,
                              limit)
    return DsrList.model_validate({"items": [r.as_dict(now) for r in found]})


@dsr.get("/{request_id}", responses=documented(404))
def get_dsr(request_id: str, ctx: PrivacyOfficer) -> Dsr:
    """The request with its steps."""
    return Dsr.of(ctx, ctx.rt.dsr.read(ctx.caller(), request_id))


_PACKAGE = {"description": "The opened access package, as an attachment",
            "content": {"application/json": {"schema": {"type": "string", "format": "binary"}},
                        "text/html": {"schema": {"type": "string"}}}}


@dsr.get("/{request_id}/package", response_class=Response,
         responses={200: _PACKAGE, **documented(404, 409, 410)})
def download_dsr_package(request_id: str, ctx: PrivacyOfficer, format: str = "json") -> Response:
    """format: json or html."""
    body, media = ctx.rt.dsr.download(ctx.caller(), request_id, format)
    name = f"access-{request_id}.{format}"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@dsr.post("/{request_id}/verify", responses=documented(404, 409))
def verify_dsr(request_id: str, body: DsrVerification, ctx: PrivacyOfficer) -> Dsr:
    return Dsr.of(ctx, ctx.rt.dsr.verify(ctx.caller(), request_id, body.method))


@dsr.post("/{request_id}/acknowledge", responses=documented(404, 409))
def acknowledge_dsr(request_id: str, ctx: PrivacyOfficer) -> Dsr:
    """Records that receipt was confirmed."""
    return Dsr.of(ctx, ctx.rt.dsr.acknowledge(ctx.caller(), request_id))


@dsr.post("/{request_id}/extend", responses=documented(404, 409))
def extend_dsr(request_id: str, body: DsrReason, ctx: PrivacyOfficer) -> Dsr:
    return Dsr.of(ctx, ctx.rt.dsr.extend(ctx.caller(), request_id, body.reason))


@dsr.post("/{request_id}/start", responses=documented(404, 409))
def start_dsr(request_id: str, ctx: PrivacyOfficer) -> Dsr:
    return Dsr.of(ctx, ctx.rt.dsr.start(ctx.caller(), request_id))


@dsr.post("/{request_id}/fulfil", responses=documented(404, 409, 410))
def fulfil_dsr(request_id: str, ctx: PrivacyOfficer, body: DsrFulfilment | None = None) -> Dsr:
    body = body or DsrFulfilment()
    return Dsr.of(ctx, ctx.rt.dsr.fulfil(ctx.caller(), request_id, body.note, body.purposes))


@dsr.post("/{request_id}/deny", responses=documented(404, 409))
def deny_dsr(request_id: str, body: DsrReason, ctx: PrivacyOfficer) -> Dsr:
    return Dsr.of(ctx, ctx.rt.dsr.deny(ctx.caller(), request_id, body.reason))


router.include_router(dsr)
