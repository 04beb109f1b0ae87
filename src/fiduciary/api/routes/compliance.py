"""Compliance posture: every control's latest result (``compliance:read``: compliance
officer, DPO), a control's history, and attestations of documents Fiduciary does not hold
(``compliance:attest``: compliance officer). Facts name staff and counts, never a customer
value."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.compliance import oscal
from fiduciary.compliance.evidence import Period as PackPeriod
from fiduciary.compliance.model import ControlResult
from fiduciary.compliance.posture import MAX_HISTORY, summary
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.principal import Permission

router = APIRouter(tags=["compliance"], responses=documented(401, 403),
                   route_class=OneHopRoute)

Reader = Annotated[Ctx, Depends(requires(Permission.COMPLIANCE_READ))]
Attester = Annotated[Ctx, Depends(requires(Permission.COMPLIANCE_ATTEST))]


class ControlStatus(BaseModel):
    id: str
    title: str
    sections: list[str] = Field(description="Regulation sections the control serves")
    status: str = Field(description="`pass`, `fail` or `not_applicable`")
    checked_at: str
    facts: dict[str, Any] = Field(description="What the check found: staff usernames, ids "
                                  "and counts; a failing fact lists who or what fails")


class Summary(BaseModel):
    pass_: int = Field(alias="pass")
    fail: int
    not_applicable: int


class Posture(BaseModel):
    controls: list[ControlStatus]
    summary: Summary


class History(BaseModel):
    items: list[ControlStatus] = Field(description="Newest first")


class NewAttestation(BaseModel):
    control: str = Field(description="An attested control of the catalogue")
    reference: str = Field(description="The document's reference (title, version, location)")
    document_date: date = Field(description="The document's date; the control passes until "
                                "this date plus its period")
    attested_by: str | None = Field(None, description="The named person who vouches for it "
                                    "(default: the caller)")


class Attestation(BaseModel):
    id: str
    control: str
    reference: str
    document_date: date
    attested_by: str
    recorded_by: str
    recorded_at: str
    expires_on: date


def _status(r: ControlResult) -> ControlStatus:
    doc = r.as_json()
    doc.pop("event_ids")
    return ControlStatus.model_validate(doc)


@router.get("/v1/compliance/posture")
def list_control_results(ctx: Reader) -> Posture:
    """Every control's latest result (a check runs first if none has yet)."""
    who = ctx.caller()
    results = ctx.rt.posture.latest() or ctx.rt.posture.check(by=who)
    return Posture(controls=[_status(r) for r in results],
                   summary=Summary.model_validate(summary(results)))


@router.get("/v1/compliance/controls/{control_id}/history", responses=documented(404, 422))
def get_control_history(control_id: str, ctx: Reader,
                    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100) -> History:
    """A control's results, newest first."""
    ctx.caller()
    return History(items=[_status(r) for r in ctx.rt.posture.history(control_id, limit)])


@router.post("/v1/compliance/attestations", status_code=201, responses=documented(422))
def record_attestation(body: NewAttestation, ctx: Attester) -> Attestation:
    """Record an attestation: the control passes until the document's date plus its period."""
    return Attestation.model_validate(ctx.rt.posture.attest(
        ctx.caller(), body.control, body.reference, body.document_date, body.attested_by))


# -- OSCAL, the NYDFS certification draft, the CCPA metrics (issue 14 items 4-5) --------------
class OscalAssessmentResults(BaseModel):
    assessment_results: dict[str, Any] = Field(
        alias="assessment-results", description="OSCAL 1.1.3 assessment results: per control "
        "an observation (facts, audit event ids) and a finding (satisfied / not-satisfied); "
        "the plan and the component definition travel in the back-matter (base64)")


class Period(BaseModel):
    from_: date = Field(alias="from")
    to: date


class NydfsCertification(BaseModel):
    kind: str
    form: str = Field(description="`certification` (of material compliance) or "
                      "`acknowledgment` (of noncompliance)")
    title: str
    regulation: str
    draft: bool
    calendar_year: int
    period: Period
    due: date
    generated_at: str
    statement: str
    controls: list[dict[str, Any]] = Field(description="Every control mapped to Part 500: "
                                           "its sections and status during the year")
    failing_sections: list[dict[str, Any]] = Field(
        description="Per section not in compliance: the controls, the extent, and a blank "
        "remediation timeline")
    signatures: list[dict[str, str]] = Field(description="Highest-ranking executive and CISO")


class CcpaRequestMetrics(BaseModel):
    label: str
    request_type: str
    received: int
    complied_in_whole_or_in_part: int
    complied_in_whole: int
    complied_in_part: int
    denied: int
    pending: int
    median_days_to_respond: float | None
    mean_days_to_respond: float | None


class CcpaMetrics(BaseModel):
    kind: str
    title: str
    regulation: str
    calendar_year: int
    period: Period
    generated_at: str
    basis: str
    requests: dict[str, CcpaRequestMetrics] = Field(
        description="know, delete, correct, opt_out, limit")


Year = Annotated[int | None, Query(description="The calendar year covered (default: the "
                                   "previous one); it must have ended")]


@router.get("/v1/compliance/oscal")
def get_compliance_oscal(ctx: Reader) -> OscalAssessmentResults:
    """Every control's latest result as OSCAL 1.1 assessment results."""
    ctx.caller()
    controls = ctx.rt.posture.catalogue.controls
    results = ctx.rt.posture.latest() or ctx.rt.posture.check()
    _, document = oscal.assessment(results, controls, ctx.rt.clock.now())
    return OscalAssessmentResults.model_validate(document)


@router.get("/v1/compliance/nydfs-certification", responses=documented(422))
def get_nydfs_certification(ctx: Reader, year: Year = None) -> NydfsCertification:
    """The NYDFS 500.17(b) draft for a year as it stands now (a preview: stored and audited
    drafts are made by `fiduciary compliance nydfs-certification`)."""
    ctx.caller()
    return NydfsCertification.model_validate(ctx.rt.filings.nydfs_draft(year))


@router.get("/v1/compliance/ccpa-metrics", responses=documented(422))
def get_ccpa_metrics(ctx: Reader, year: Year = None) -> CcpaMetrics:
    """The CCPA regs 7102 request metrics of a calendar year."""
    ctx.caller()
    return CcpaMetrics.model_validate(ctx.rt.filings.ccpa_metrics(year))


# -- the evidence pack (issue 14 item 3) -------------------------------------------------------
_PACK = {"description": "The evidence pack (zip) with its verifier, as an attachment",
         "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}


@router.get("/v1/compliance/evidence", response_class=Response,
            responses={200: _PACK, **documented(422)})
def download_evidence_pack(
    ctx: Reader,
    from_: Annotated[date | None, Query(alias="from", description="First day (ISO date); "
                                        "with `to`. Default: the last full quarter")] = None,
    to: Annotated[date | None, Query(description="Last day, included")] = None,
) -> Response:
    """The evidence pack of a period; verify it offline with the `verify_pack.py` inside."""
    who = ctx.caller()
    if (from_ is None) != (to is None):
        raise InvalidInput.from_problems([FieldProblem(
            "to" if to is None else "from", "give both from and to, or neither")], "query")
    if from_ is not None and to is not None and to < from_:
        raise InvalidInput.from_problems([FieldProblem("to", "before from")], "query")
    period = PackPeriod.parse(f"{from_}..{to}") if from_ is not None else \
        PackPeriod.last_full_quarter(ctx.rt.clock.now())
    with tempfile.TemporaryDirectory(prefix="fiduciary-evidence-") as tmp:
        name = f"evidence-{period.label}.zip"
        ctx.rt.evidence.pack(who, period, Path(tmp) / name)
        body = (Path(tmp) / name).read_bytes()
    return Response(body, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
