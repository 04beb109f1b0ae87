"""The break-glass review queue: every emergency grant is closed by a second person."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from fiduciary.access.users import BreakGlassGrant
from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.clock import iso, iso_or_none
from fiduciary.principal import Permission

router = APIRouter(prefix="/v1/break-glass", tags=["break-glass"], route_class=OneHopRoute,
                   responses=documented(401, 403, 422))
Reviewer = Annotated[Ctx, Depends(requires(Permission.AUDIT_READ))]


class Review(BaseModel):
    id: str
    user_id: str
    subject_ids: list[str]
    created_at: Timestamp
    expires_at: Timestamp
    review: Literal["pending", "justified", "unjustified"]
    reviewed_at: Timestamp | None
    reviewed_by: str | None

    @classmethod
    def of(cls, g: BreakGlassGrant) -> Review:
        # The justification stays out: free text that may name the customer.
        return cls(id=g.id, user_id=g.user_id, subject_ids=g.subject_ids,
                   created_at=iso(g.created_at), expires_at=iso(g.expires_at),
                   review=g.review_outcome or "pending",
                   reviewed_at=iso_or_none(g.reviewed_at), reviewed_by=g.reviewed_by)


class Reviews(BaseModel):
    items: list[Review]


class ReviewDecision(BaseModel):
    outcome: Literal["justified", "unjustified"]
    note: str | None = Field(None, max_length=2000,
                             description="kept out of the audit trail but for its digest")


@router.get("/reviews")
def list_break_glass_reviews(ctx: Reviewer, all: bool = False) -> Reviews:
    """Pending grants (``all``: reviewed ones too)."""
    ctx.caller()
    return Reviews(items=[Review.of(g) for g in
                          ctx.rt.users.break_glass_grants(pending_only=not all)])


@router.post("/reviews/{grant_id}", responses=documented(404, 409))
def review_break_glass(grant_id: str, body: ReviewDecision, ctx: Reviewer) -> Review:
    """Close a grant as justified or not; never by whoever requested it."""
    return Review.of(ctx.rt.users.review_break_glass(ctx.caller(), grant_id, body.outcome,
                                                     body.note))
