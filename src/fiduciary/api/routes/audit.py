"""The audit trail for compliance officers, DPOs and security analysts (``audit:read``):
events, signed checkpoints, Merkle proofs. Reading the trail is audited too."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.api.params import UtcDateTime
from fiduciary.audit.trail import MAX_EVENTS_PAGE, MAX_SEQ
from fiduciary.principal import Permission, Principal

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=documented(401, 403),
                   route_class=OneHopRoute)

Auditor = Annotated[Ctx, Depends(requires(Permission.AUDIT_READ))]
_BASE64 = "base64"


class AuditEventItem(BaseModel):
    index: int | None = Field(description="Leaf index in the Merkle log; null until sequenced")
    event: dict[str, Any] = Field(description="The event exactly as its leaf covers it "
                                  "(RFC 8785 canonical JSON): ids, field names, codes")
    leaf_hash: str = Field(description=_BASE64)


class AuditEventPage(BaseModel):
    items: list[AuditEventItem]
    next_cursor: int | None


class Checkpoint(BaseModel):
    size: int
    root: str = Field(description=_BASE64)
    timestamp: Timestamp
    signature: str = Field(description="Ed25519 over the RFC 8785 JSON of size, root and "
                           "timestamp (base64)")
    public_key: str = Field(description=_BASE64)


class InclusionProof(BaseModel):
    index: int
    size: int
    leaf_hash: str = Field(description=_BASE64)
    proof: list[str] = Field(description="RFC 9162 audit path (base64)")


class ConsistencyProof(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    proof: list[str] = Field(description="RFC 9162 consistency proof (base64)")


def _audited(ctx: Ctx, who: Principal, query: str, **details: Any) -> None:
    """The ``audit.read`` event of a query the auditor made."""
    audit = ctx.rt.audit
    audit.append_committed(audit.event(who, "audit.read", details={"query": query, **details}))


@router.get("/events", responses=documented(422))
def list_audit_events(ctx: Auditor, subject_id: str | None = None, record_id: str | None = None,
                      actor: str | None = None, action: str | None = None,
                      since: UtcDateTime | None = None, until: UtcDateTime | None = None,
                      limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
                      cursor: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
                      ) -> AuditEventPage:
    who = ctx.caller()
    filters = {k: v for k, v in {"subject_id": subject_id, "record_id": record_id,
                                 "actor": actor, "action": action}.items() if v}
    items, nxt = ctx.rt.trail.events(subject_id=subject_id, record_id=record_id, actor=actor,
                                     action=action, since=since, until=until, limit=limit,
                                     cursor=cursor)
    _audited(ctx, who, "events", **filters)
    return AuditEventPage.model_validate({"items": items, "next_cursor": nxt})


@router.get("/checkpoint", responses=documented(404))
def get_audit_checkpoint(ctx: Auditor) -> Checkpoint:
    """The latest signed checkpoint."""
    who = ctx.caller()
    cp = ctx.rt.trail.latest_checkpoint().as_dict()
    _audited(ctx, who, "checkpoint")
    return Checkpoint.model_validate(cp)


@router.get("/proof/inclusion", responses=documented(422))
def get_inclusion_proof(ctx: Auditor, index: Annotated[int, Query(ge=0, le=MAX_SEQ)],
                        size: Annotated[int, Query(ge=1, le=MAX_SEQ)]) -> InclusionProof:
    who = ctx.caller()
    proof = ctx.rt.trail.inclusion(index, size)
    _audited(ctx, who, "proof/inclusion", index=index, size=size)
    return InclusionProof.model_validate(proof)


@router.get("/proof/consistency", responses=documented(422))
def get_consistency_proof(ctx: Auditor,
                          size1: Annotated[int, Query(alias="from", ge=1, le=MAX_SEQ)],
                          size2: Annotated[int, Query(alias="to", ge=1, le=MAX_SEQ)],
                          ) -> ConsistencyProof:
    who = ctx.caller()
    proof = ctx.rt.trail.consistency(size1, size2)
    _audited(ctx, who, "proof/consistency", size1=size1, size2=size2)
    return ConsistencyProof.model_validate(proof)
