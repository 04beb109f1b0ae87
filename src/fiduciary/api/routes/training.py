"""Training: a staff user's own courses and their assessments, graded on the server
(``/v1/me/training``, ``/v1/training/{course}/attempts``); everyone's status and the xAPI
statements for an LMS (``training:read``: compliance officer, DPO).

Questions reach the client without their answer key; an attempt returns only the score, never
which questions were wrong, and a person gets a limited number of attempts per course a day."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, StrictInt

from fiduciary.api.deps import Context, Ctx, OneHopRoute, requires
from fiduciary.api.errors import documented
from fiduciary.api.params import UtcDateTime
from fiduciary.principal import Permission

router = APIRouter(tags=["training"], responses=documented(401, 403), route_class=OneHopRoute)

Reader = Annotated[Ctx, Depends(requires(Permission.TRAINING_READ))]
_STATUS = ("`current`, `expiring` (current, ends within 30 days), `expired` (lapsed, or of a "
           "replaced version: see `refresher_due`) or `missing`")


class Question(BaseModel):
    id: str
    text: str
    choices: list[str]
    multiple: bool = Field(description="More than one choice is right: answer with a list "
                           "of indexes")


class MyCourse(BaseModel):
    id: str
    title: str
    version: str
    unlocks: list[str] = Field(description="Data classifications it unlocks (with the "
                               "baseline course)")
    status: str = Field(description=_STATUS)
    expires_at: date | None
    refresher_due: bool = Field(description="Completed at a version since replaced")
    pass_mark: float = Field(description="Share of questions to answer right")
    attempts_left: int = Field(description="Attempts left in the last 24 hours")
    questions: list[Question]


class MyCourses(BaseModel):
    items: list[MyCourse]


class Answers(BaseModel):
    answers: list[StrictInt | list[StrictInt]] = Field(
        description="One per question, in order: the index of the choice (from 0), or a "
                    "list of indexes for a question with `multiple`")


class AttemptResult(BaseModel):
    passed: bool
    score: float = Field(description="Share of questions answered right, 0 to 1")
    expires_at: date | None = Field(description="Of the completion a pass records")
    attempts_left: int


class CourseStatus(BaseModel):
    id: str
    version: str
    status: str = Field(description=_STATUS)
    expires_at: date | None
    refresher_due: bool


class PersonStatus(BaseModel):
    username: str
    roles: list[str]
    courses: list[CourseStatus]


class StatusReport(BaseModel):
    items: list[PersonStatus]


class StatementResult(BaseModel):
    """An xAPI 1.0.3 StatementResult."""

    statements: list[dict[str, Any]] = Field(description="actor (account homePage and "
                                             "name), verb, object (course), result, timestamp")
    more: str = Field("", description="Always empty: the whole selection is returned")


@router.get("/v1/me/training")
def my_training(ctx: Context) -> MyCourses:
    """The courses for my roles, with their state and questions (never the answers)."""
    return MyCourses.model_validate({"items": ctx.rt.training.mine(ctx.caller())})


@router.post("/v1/training/{course}/attempts", responses=documented(404, 422, 429))
def attempt_training(course: str, body: Answers, ctx: Context) -> AttemptResult:
    """Answer a course's assessment; a pass records the completion of its current version."""
    result = ctx.rt.training.attempt(ctx.caller(), course, body.answers)
    return AttemptResult(passed=result.passed, score=result.score,
                         expires_at=result.expires_at, attempts_left=result.attempts_left)


@router.get("/v1/training/status")
def training_status(ctx: Reader) -> StatusReport:
    """Every active user's courses and their state."""
    return StatusReport.model_validate({"items": ctx.rt.training.status(ctx.caller())})


@router.get("/v1/training/statements", responses=documented(422))
def training_statements(
    ctx: Reader,
    since: Annotated[UtcDateTime | None, Query(description="Only those from then on")] = None,
) -> StatementResult:
    """Attempts and external completions as xAPI statements, for an LMS."""
    return StatementResult(statements=ctx.rt.training.statements(ctx.caller(), since))
