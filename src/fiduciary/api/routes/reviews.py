"""Access review campaigns: each reviewer keeps or revokes the entitlements assigned to them
(never their own); ``reviews:read`` holders see every campaign and item, and the accounts not
certified within 365 days. The campaign service checks every rule; this maps it to HTTP."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from fiduciary.api.deps import Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.models import Timestamp
from fiduciary.principal import Permission
from fiduciary.workforce.reviews import NOTE_LIMIT, Campaign, Overview

router = APIRouter(prefix="/v1/reviews", tags=["reviews"], route_class=OneHopRoute,
                   responses=documented(401, 403, 422))
Caller = Annotated[Ctx, Depends(requires())]
Manager = Annotated[Ctx, Depends(requires(Permission.REVIEWS_MANAGE))]


class CampaignState(BaseModel):
    id: str
    scope: str = Field(description="`all` or `role:NAME`")
    status: Literal["open", "complete"]
    created_by: str
    created_at: Timestamp
    due_at: Timestamp
    completed_at: Timestamp | None
    items: int
    decided: int
    overdue: int = Field(description="Items not decided by the due date")
    completion: float = Field(description="Percent of items decided")

    @classmethod
    def of(cls, c: Campaign) -> CampaignState:
        return cls(**c.as_dict())


class Account(BaseModel):
    kind: Literal["user", "api_key"]
    id: str
    name: str


class Reviewer(BaseModel):
    id: str | None = Field(description="The manager deciding; null: the pool of `role`")
    name: str | None
    role: str | None


class Item(BaseModel):
    id: str
    campaign_id: str
    account: Account
    kind: Literal["role", "region", "assignment", "api_key"]
    entitlement: str = Field(description="The role or region, `collection/record id` of an "
                             "assignment, or the API key's id")
    context: dict[str, Any] = Field(description="Last login, MFA, training; a key's scopes")
    reviewer: Reviewer
    due_at: Timestamp
    overdue: bool
    decision: Literal["keep", "revoke"] | None
    decided_by: str | None
    decided_at: Timestamp | None
    note: str | None
    effect: str | None = Field(description="What a revocation did")


class Uncertified(BaseModel):
    kind: Literal["user", "api_key"]
    id: str
    name: str
    last_certified_at: Timestamp | None


class Reviews(BaseModel):
    campaigns: list[CampaignState]
    items: list[Item]
    uncertified: list[Uncertified] | None = Field(
        description="Active accounts not certified within 365 days (NYDFS 500.7(a)(4)); "
                    "`reviews:read` only")

    @classmethod
    def of(cls, o: Overview) -> Reviews:
        return cls(campaigns=[CampaignState.of(c) for c in o.campaigns],
                   items=[Item(**i.as_dict()) for i in o.items],
                   uncertified=None if o.uncertified is None else
                   [Uncertified(**u.as_dict()) for u in o.uncertified])


class StartCampaign(BaseModel):
    scope: str = Field("all", max_length=80, description="`all` or `role:NAME`")
    due: date | None = Field(None, description="Last day to decide [default: 30 days]")


class DecideItem(BaseModel):
    decision: Literal["keep", "revoke"]
    note: str | None = Field(None, max_length=NOTE_LIMIT,
                             description="Required to revoke; the trail keeps a digest")


@router.get("")
def list_reviews(ctx: Caller, campaign: str | None = None,
                 decided: bool = False) -> Reviews:
    """Campaigns and the caller's items to decide (``reviews:read``: every item, and the
    accounts not certified within 365 days); ``decided``: decided items too."""
    return Reviews.of(ctx.rt.campaigns.overview(ctx.caller(), campaign, decided))


@router.post("", status_code=201)
def start_review_campaign(body: StartCampaign, ctx: Manager) -> CampaignState:
    """Open a campaign over the active accounts in scope."""
    return CampaignState.of(ctx.rt.campaigns.start(ctx.caller(), body.scope, body.due))


@router.post("/{campaign_id}/items/{item_id}/decide", responses=documented(404, 409))
def decide_review_item(campaign_id: str, item_id: str, body: DecideItem, ctx: Caller) -> Item:
    """Keep or revoke an item assigned to the caller (never one about their own access);
    a revocation takes effect at once."""
    item = ctx.rt.campaigns.decide(ctx.caller(), campaign_id, item_id, body.decision,
                                   body.note)
    return Item(**item.as_dict())
