"""The incident register for security analysts and DPOs (``incidents:manage``) and compliance
officers (``incidents:read``): incidents with their legal clocks, the scope computed from the
audit trail against a signed checkpoint, the affected subjects with their evidence, the
obligations to file (or to record as not required, with a reason), draft notices to regulators
and notification letters to the affected people.

The incident service checks each permission and names each rejected field; titles,
descriptions, notes and reasons are sealed at rest and reach the audit trail only as keyed
digests. Letters decrypt contact details for ``legal_obligation`` as the caller: the policy
pack decides whether the caller may (a DPO may, a security analyst may not)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.api.params import UtcDateTime
from fiduciary.api.routes.audit import Checkpoint
from fiduciary.incidents.batches import BatchStatus
from fiduciary.incidents.notices import NoticeForm, draft_notices
from fiduciary.incidents.register import KINDS, SEVERITIES, STATUSES
from fiduciary.incidents.scope import EXPOSURES
from fiduciary.principal import Permission

router = APIRouter(prefix="/v1/incidents", tags=["incidents"], responses=documented(401, 403),
                   route_class=OneHopRoute)

Reader = Annotated[Ctx, Depends(requires(Permission.INCIDENTS_READ,
                                         Permission.INCIDENTS_MANAGE))]
Manager = Annotated[Ctx, Depends(requires(Permission.INCIDENTS_MANAGE))]

_SEALED = "Sealed at rest; the audit trail keeps only its digest"


# -- the incident ----------------------------------------------------------------------------
class Obligation(BaseModel):
    """A duty to tell someone, derived from the breach-notification rules table."""

    id: str
    rule_id: str = Field(description="The row of the rules table it comes from")
    regime: str
    recipient: str
    basis: str = Field(description="The legal citation")
    due_at: Timestamp | None = Field(description="Null when the law sets no fixed deadline "
                                     "(`due_note` says what it sets)")
    due_note: str | None
    status: str = Field(description="`due`, `filed` or `not_required`")
    reason: str | None = Field(description="Why it is not required: the rules' safe harbour "
                               "or a person's recorded reason")
    filed_at: Timestamp | None
    reference: str | None = Field(description="The recipient's reference for the filing")
    decided_by: str | None = Field(description="`rules`, or who filed or waived it")
    overdue: bool
    due_soon: bool


class ScopedPrincipal(BaseModel):
    kind: str = Field(description="`user` or `api_key`")
    id: str


class ScopeCriteria(BaseModel):
    """What the scope was computed for."""

    model_config = ConfigDict(populate_by_name=True)

    principals: list[ScopedPrincipal] = Field(description="The compromised principals "
                                              "(none: a lost copy of the stored records)")
    from_: str = Field(alias="from", json_schema_extra={"format": "date-time"})
    to: str = Field(json_schema_extra={"format": "date-time"})
    collections: list[str] | None
    keys_compromised: bool


class ExposureCounts(BaseModel):
    decrypted: int = Field(description="Seen in clear (a field above `internal`)")
    masked: int = Field(description="Seen only masked")
    ciphertext_only: int = Field(description="Exposed only as ciphertext, keys safe")


class ScopeSummary(BaseModel):
    """Whose data an incident exposed, computed from the audit trail up to a signed
    checkpoint (the same request against the same checkpoint gives the same numbers)."""

    subjects: ExposureCounts
    records: int
    classifications: list[str] = Field(description="The data classes exposed")
    by_jurisdiction: dict[str, int] = Field(description="Affected people by residence: a "
                                            "country (`DE`), a US state (`US-NY`), `unknown`")
    checkpoint_size: int = Field(description="The signed checkpoint the scope was computed "
                                 "against (GET /v1/audit/checkpoint)")
    safe_harbour: bool = Field(description="Only ciphertext exposed, keys safe: the "
                               "encryption safe harbours apply")


class IncidentSummary(BaseModel):
    id: str
    title: str
    kind: str
    status: str = Field(description=", ".join(STATUSES))
    severity: str
    owner: str | None
    discovered_at: Timestamp
    determined_at: Timestamp | None = Field(description="When the insurer determined that a "
                                            "cybersecurity incident occurred (NYDFS, NAIC)")
    extortion_paid_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    closed_at: Timestamp | None
    obligations: list[Obligation] = Field(description="Soonest due first")
    overdue: int = Field(description="How many obligations are past due")
    scope: ScopeCriteria | None
    scope_result: ScopeSummary | None


class IncidentStep(BaseModel):
    action: str
    actor: str
    at: Timestamp
    details: dict[str, Any]
    text: str | None = Field(description="The note or reason given, if any")


class Incident(IncidentSummary):
    description: str | None
    alerts: list[str] = Field(description="Ids of the alerts escalated into it")
    timeline: list[IncidentStep] = Field(description="Every step, oldest first")


class IncidentList(BaseModel):
    items: list[IncidentSummary]


class NewIncident(BaseModel):
    title: str = Field(description=f"At most 300 characters. {_SEALED}")
    kind: str = Field(description=", ".join(KINDS))
    discovered_at: UtcDateTime = Field(description="When the insurer became aware (UTC)")
    determined_at: UtcDateTime | None = Field(None, description="When it determined that a "
                                              "cybersecurity incident occurred (UTC)")
    extortion_paid_at: UtcDateTime | None = None
    description: str | None = Field(None, description=_SEALED)
    severity: str = Field("high", description=", ".join(SEVERITIES))


class Transition(BaseModel):
    status: str = Field(description="Forward only: open, assessing, notifying, closed")
    note: str | None = Field(None, description=_SEALED)


class Facts(BaseModel):
    determined_at: UtcDateTime | None = None
    extortion_paid_at: UtcDateTime | None = None


@router.post("", status_code=201, responses=documented(422))
def create_incident(body: NewIncident, ctx: Manager) -> Incident:
    """Open an incident; the obligations that need no scope start their clocks."""
    return Incident.model_validate(ctx.rt.incidents.create(
        ctx.caller(), body.model_dump(exclude_none=True)))


@router.get("", responses=documented(422))
def list_incidents(
    ctx: Reader,
    overdue: Annotated[bool, Query(description="Only those with an obligation past due")
                       ] = False,
    due_soon: Annotated[bool, Query(description="Only those with an obligation due within "
                                    "3 days (or past due)")] = False,
    status: Annotated[str | None, Query(description=", ".join(STATUSES))] = None,
) -> IncidentList:
    """Most recently discovered first."""
    return IncidentList.model_validate({"items": ctx.rt.incidents.list_incidents(
        ctx.caller(), overdue=overdue, due_soon=due_soon, status=status)})


@router.get("/{incident_id}", responses=documented(404, 422))
def get_incident(incident_id: str, ctx: Reader) -> Incident:
    return Incident.model_validate(ctx.rt.incidents.get(ctx.caller(), incident_id))


@router.post("/{incident_id}/status", responses=documented(404, 409, 422))
def set_incident_status(incident_id: str, body: Transition, ctx: Manager) -> Incident:
    """Move it forward; closing needs every obligation filed or recorded as not required."""
    return Incident.model_validate(ctx.rt.incidents.transition(
        ctx.caller(), incident_id, body.status, body.note))


@router.post("/{incident_id}/facts", responses=documented(404, 409, 422))
def update_incident_facts(incident_id: str, body: Facts, ctx: Manager) -> Incident:
    """Record when it was determined or an extortion paid: the clocks follow."""
    return Incident.model_validate(ctx.rt.incidents.update_facts(
        ctx.caller(), incident_id, body.model_dump(exclude_unset=True)))


# -- scope and the affected ------------------------------------------------------------------
class CompromisedPrincipal(BaseModel):
    kind: str = Field(description="`user` (give `username`) or `api_key` (give `id`)")
    username: str | None = None
    id: str | None = None


class ScopeRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    principals: list[CompromisedPrincipal] = Field(
        [], max_length=100, description="The compromised accounts; none: a lost copy of the "
        "stored records (a backup, a device)")
    from_: UtcDateTime = Field(alias="from", description="Start of the window (UTC)")
    to: UtcDateTime = Field(description="End of the window, exclusive (UTC)")
    collections: list[str] | None = Field(None, max_length=100,
                                          description="Only these (default: all)")
    keys_compromised: bool = Field(False, description="The encryption keys went too: "
                                   "ciphertext counts as decrypted")


@router.post("/{incident_id}/scope", responses=documented(404, 409, 422))
def scope_incident(incident_id: str, body: ScopeRequest, ctx: Manager) -> ScopeSummary:
    """Compute whose data was exposed, and how, from the audit trail up to a newly signed
    checkpoint; replaces the incident's affected subjects and rederives its obligations."""
    scope = {"principals": [p.model_dump(exclude_none=True) for p in body.principals],
             "from": body.from_, "to": body.to, "keys_compromised": body.keys_compromised}
    if body.collections is not None:
        scope["collections"] = body.collections
    return ScopeSummary.model_validate(ctx.rt.incidents.scope(ctx.caller(), incident_id,
                                                              scope))


class AffectedSubject(BaseModel):
    subject_id: str
    exposure: str = Field(description=", ".join(EXPOSURES))
    jurisdiction: str
    classifications: list[str]
    records: int
    event_id: str | None = Field(description="The audit event that exposed the subject (its "
                                 "evidence); null for a lost copy")
    leaf_index: int | None
    inclusion_proof: list[str] = Field(description="RFC 9162 audit path (hex) of the event "
                                       "against `checkpoint`")


class AffectedList(BaseModel):
    incident_id: str
    checkpoint: Checkpoint | None = Field(description="The signed checkpoint of the scope")
    items: list[AffectedSubject]


_CSV = {"description": "With format=csv: the list as a CSV attachment (no proofs)",
        "content": {"text/csv": {"schema": {"type": "string"}}}}


@router.get("/{incident_id}/affected", response_model=AffectedList,
            responses={200: _CSV, **documented(404, 409, 422)})
def list_affected(
    incident_id: str, ctx: Reader,
    fmt: Annotated[str, Query(alias="format", pattern="^(json|csv)$")] = "json",
) -> AffectedList | Response:
    """The affected subjects (ids, never their data), each with its evidence."""
    found = ctx.rt.incidents.affected(ctx.caller(), incident_id, fmt)
    if isinstance(found, str):
        return Response(found, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="affected-{incident_id}.csv"',
            "Cache-Control": "no-store"})
    return AffectedList.model_validate(found)


# -- obligations and notices -----------------------------------------------------------------
class Filing(BaseModel):
    reference: str = Field(description="The recipient's reference (at most 200 characters)")
    filed_at: UtcDateTime | None = Field(None, description="Default: now (UTC)")


class Waiver(BaseModel):
    reason: str = Field(description=f"Why it is not required. {_SEALED}")


@router.post("/{incident_id}/obligations/{obligation_id}/file",
             responses=documented(404, 409, 422))
def file_obligation(incident_id: str, obligation_id: str, body: Filing, ctx: Manager
                    ) -> Incident:
    """Record that the notice was filed; once only."""
    return Incident.model_validate(ctx.rt.incidents.file(
        ctx.caller(), incident_id, obligation_id, body.reference, body.filed_at))


@router.post("/{incident_id}/obligations/{obligation_id}/not-required",
             responses=documented(404, 409, 422))
def set_obligation_not_required(incident_id: str, obligation_id: str, body: Waiver,
                                ctx: Manager) -> Incident:
    """Record, with the reason, that a notice is not owed (a risk assessment, an
    exemption)."""
    return Incident.model_validate(ctx.rt.incidents.not_required(
        ctx.caller(), incident_id, obligation_id, body.reason))


class Notice(BaseModel):
    obligation_id: str | None
    regime: str | None
    recipient: str | None
    basis: str | None
    due_at: Timestamp | None
    form: str = Field(description=", ".join(NoticeForm))
    fields: dict[str, Any] = Field(description="Facts, and `[TO COMPLETE …]` placeholders "
                                   "for what a person must write")
    text: str = Field(description="The draft as text")


class NoticeList(BaseModel):
    incident_id: str
    items: list[Notice]


@router.get("/{incident_id}/notices", responses=documented(404, 422))
def list_notices(incident_id: str, ctx: Reader) -> NoticeList:
    """Draft notices, one per obligation towards a regulator: counts, categories and dates,
    never a customer's data."""
    rt = ctx.rt
    incident = rt.incidents.get(ctx.caller(), incident_id)
    drafts = draft_notices(incident, incident["scope_result"], incident["obligations"],
                           str(rt.datamap.controller.get("dpo", "")))
    return NoticeList.model_validate({"incident_id": incident_id, "items": drafts})


# -- letters ---------------------------------------------------------------------------------
class LetterTexts(BaseModel):
    """What the letters say about the incident, written and approved by a person (plain
    text, paragraphs separated by blank lines). Which are required depends on whom the
    letters go to; a missing one is named as `letter.<field>`."""

    what_happened: str | None = Field(None, description="Every letter")
    what_we_are_doing: str | None = Field(None, description="Every letter")
    likely_consequences: str | None = Field(None, description="Letters to the EU/EEA "
                                            "(GDPR Art. 34(2))")
    law_enforcement_delay: bool | None = Field(None, description="Letters to California "
                                               "(Cal. Civ. Code 1798.82(d)(2)(E))")
    services_offer: str | None = Field(None, description="Letters to California when a "
                                       "government identifier was involved (empty: none "
                                       "offered)")
    what_you_can_do: str | None = None
    breach_period: str | None = Field(None, description='e.g. "between March 2 and March 9, '
                                      '2026"')


class LetterBatchStarted(BaseModel):
    batch_id: str


class LetterBatch(BaseModel):
    id: str
    incident_id: str
    status: str = Field(description=", ".join(BatchStatus))
    total: int = Field(description="Affected people in the batch")
    done: int = Field(description="Of them, handled so far")
    created_by: str
    created_at: Timestamp
    finished_at: Timestamp | None
    manifest: dict[str, Any] | None = Field(description="Once done: the letters rendered and "
                                            "the people skipped, with reason codes (ids, "
                                            "templates, digests: no contact data)")


@router.post("/{incident_id}/letters", status_code=202, responses=documented(404, 409, 422))
def render_letters(incident_id: str, ctx: Manager, body: LetterTexts | None = None
                   ) -> LetterBatchStarted:
    """Render the affected people's notification letters in the background (follow the batch
    at GET …/letters/{batch_id}). Their names and addresses are decrypted for
    `legal_obligation` as the caller: a caller the policy does not allow is refused (403)
    before anything is read or written."""
    texts = body.model_dump(exclude_none=True) if body else {}
    return LetterBatchStarted(batch_id=ctx.rt.letters.start(ctx.caller(), incident_id,
                                                                     texts))


@router.get("/{incident_id}/letters/{batch_id}", responses=documented(404, 422))
def get_letter_batch(incident_id: str, batch_id: str, ctx: Reader) -> LetterBatch:
    return LetterBatch.model_validate(ctx.rt.letters.batch(ctx.caller(), incident_id,
                                                                   batch_id))
