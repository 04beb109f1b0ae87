"""The training catalogue: courses as YAML that ships with the package and an insurer may
replace (``FIDUCIARY_TRAINING_CATALOGUE``). Validated on load like the policy pack: a wrong
catalogue stops the start, naming the course and field of every problem.

A course unlocks data classifications (``personal`` and above; ``public`` and ``internal`` need
no course). Every class also needs the catalogue's ``baseline`` course (data protection), so a
health field needs ``data-protection`` and ``health-privacy`` both current.

The answer key is never in clear: each correct choice is kept as :func:`answer_digest` — the
SHA-256 of course id, question id and choice text — and nothing that reaches a client carries
it. (With a handful of choices a digest can be matched by trying them all: it keeps the key
out of casual sight in the YAML and its repository; the grading endpoint's attempt limit is
what stops guessing through the API.)

::

    baseline: data-protection
    grace_classes: [personal]          # new staff see these during the grace period
    courses:
      - id: health-privacy
        title: Health information privacy
        version: "2026.1"                # a change makes earlier completions due for refresher
        audience: [claims_adjuster, underwriter]
        unlocks: [special_category]
        validity_days: 365
        pass_mark: 0.8                   # share of questions answered right
        questions:
          - id: minimum-necessary
            text: …
            choices: [ …, … ]
            correct: [<answer_digest of each correct choice>]
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fiduciary.access.policy import PolicyPack
from fiduciary.datamap import Classification, DataMap
from fiduciary.errors import CatalogueInvalid, FieldProblem

DEFAULT_CATALOGUE = "default_catalogue.yaml"
#: Classes a course may unlock: every encrypted one.
UNLOCKABLE = tuple(c for c in Classification if c.encrypted)
_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def answer_digest(course: str, question: str, choice: str) -> str:
    """How the catalogue keeps a correct choice: hex SHA-256 over the three, NUL-separated (a
    choice cannot pass for another question's)."""
    return hashlib.sha256(f"{course}\0{question}\0{choice}".encode()).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Question(_Strict):
    id: str = Field(pattern=_ID)
    text: str = Field(min_length=1, max_length=2000)
    choices: tuple[str, ...] = Field(min_length=2, max_length=10)
    #: :func:`answer_digest` of each correct choice.
    correct: tuple[str, ...] = Field(min_length=1)

    @property
    def multiple(self) -> bool:
        """More than one choice is right (the client offers checkboxes)."""
        return len(self.correct) > 1

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or not all(c.strip() for c in v):
            raise ValueError("choices must be distinct and non-empty")
        return v


class Course(_Strict):
    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=32)
    audience: tuple[str, ...] = Field(min_length=1)
    unlocks: tuple[Classification, ...] = ()
    validity_days: int = Field(ge=1, le=3660)
    pass_mark: float = Field(gt=0, le=1)
    questions: tuple[Question, ...] = Field(min_length=1)

    def for_role(self, roles: Collection[str]) -> bool:
        return any(r in self.audience for r in roles)


class Catalogue(_Strict):
    #: The course every data class needs (security awareness and social engineering).
    baseline: str
    #: Classes new staff reach in their grace period without the courses (non-sensitive).
    grace_classes: tuple[Classification, ...] = (Classification.PERSONAL,)
    courses: tuple[Course, ...] = Field(min_length=1)
    source: str = "<default>"

    def course(self, course_id: str) -> Course | None:
        return next((c for c in self.courses if c.id == course_id), None)

    def unlocks(self) -> dict[str, tuple[str, ...]]:
        """Each encrypted class and the courses it needs: the baseline and those unlocking it."""
        return {c.value: tuple(dict.fromkeys(
            [self.baseline, *(k.id for k in self.courses if c in k.unlocks)]))
            for c in UNLOCKABLE}

    def versions(self) -> dict[str, str]:
        return {c.id: c.version for c in self.courses}

    def validity(self) -> dict[str, int]:
        return {c.id: c.validity_days for c in self.courses}

    def digest(self) -> str:
        """SHA-256 of the catalogue's content (not where it was read from)."""
        return hashlib.sha256(self.model_dump_json(exclude={"source"}).encode()).hexdigest()


def audience_gaps(catalogue: Catalogue, pack: PolicyPack, datamap: DataMap,
                  staff_roles: Collection[str]) -> list[str]:
    """Staff roles whose grants reach a data class needing a course they are not the audience
    of: their people are unlocked only by an external completion. Said, not refused (an
    insurer may train those roles elsewhere)."""
    needs = catalogue.unlocks()
    gaps = []
    for role in pack.roles.values():
        if role.name not in staff_roles:
            continue
        reached = {f.classification.value for g in role.grants for c in g.collections
                   if c in datamap.collections
                   for f in datamap.collections[c].fields.values()
                   if g.fields is None or f.name in g.fields}
        for cls in sorted(reached & needs.keys()):
            for course_id in needs[cls]:
                course = catalogue.course(course_id)
                if course is not None and role.name not in course.audience:
                    gaps.append(f"role {role.name} reaches {cls} data but is not in the "
                                f"audience of course {course_id}")
    return gaps


def load_catalogue(path: Path | None, roles: Collection[str]) -> Catalogue:
    """The packaged catalogue, or the insurer's at ``path``; ``roles`` are the policy pack's."""
    if path is None:
        text = resources.files("fiduciary.workforce").joinpath(DEFAULT_CATALOGUE).read_text(
            "utf-8")
        return parse_catalogue(text, f"<package>/{DEFAULT_CATALOGUE}", roles)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CatalogueInvalid(f"{path}: cannot read training catalogue ({exc.strerror})",
                               [FieldProblem(str(path), "cannot read file")]) from None
    return parse_catalogue(text, str(path), roles)


def parse_catalogue(text: str, source: str, roles: Collection[str]) -> Catalogue:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        _fail([FieldProblem(f"{source}: {where}", "not valid YAML")])
    if not isinstance(doc, dict):
        _fail([FieldProblem(f"{source}: document", "expected a mapping with courses")])
    try:
        catalogue = Catalogue.model_validate({**doc, "source": source})
    except ValidationError as exc:
        _fail([FieldProblem(f"{source}: {_where(doc, err['loc'])}", err["msg"])
                for err in exc.errors()])
    _raise(_problems(catalogue, source, roles))
    return catalogue


def _where(doc: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """A pydantic location with course and question ids instead of list positions."""
    parts: list[str] = []
    node: Any = doc
    for step in loc:
        item = node[step] if isinstance(node, list) and isinstance(step, int) and \
            step < len(node) else (node.get(step) if isinstance(node, dict) else None)
        if isinstance(step, int) and isinstance(item, dict) and isinstance(item.get("id"), str):
            parts[-1] = f"{parts[-1]}[{item['id']}]" if parts else item["id"]
        else:
            parts.append(str(step))
        node = item
    return ".".join(parts) or "document"


def _problems(catalogue: Catalogue, source: str, roles: Collection[str]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []

    def bad(where: str, reason: str) -> None:
        problems.append(FieldProblem(f"{source}: {where}", reason))

    ids = [c.id for c in catalogue.courses]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        bad(f"courses[{dup}]", "course id used twice")
    if catalogue.baseline not in ids:
        bad("baseline", "not a course of the catalogue")
    for course in catalogue.courses:
        at = f"courses[{course.id}]"
        for role in course.audience:
            if role not in roles:
                bad(f"{at}.audience", f"unknown role {role}")
        for cls in course.unlocks:
            if cls not in UNLOCKABLE:
                bad(f"{at}.unlocks", f"{cls} needs no course (only {', '.join(UNLOCKABLE)})")
        qids = [q.id for q in course.questions]
        for dup in sorted({i for i in qids if qids.count(i) > 1}):
            bad(f"{at}.questions[{dup}]", "question id used twice")
        for q in course.questions:
            right = {answer_digest(course.id, q.id, c) for c in q.choices}
            if not set(q.correct) <= right or len(set(q.correct)) != len(q.correct):
                bad(f"{at}.questions[{q.id}].correct",
                    "each entry must be the answer_digest of a distinct choice")
    for cls in catalogue.grace_classes:
        if cls not in UNLOCKABLE:
            bad("grace_classes", f"{cls} needs no course")
    return problems


def _raise(problems: list[FieldProblem]) -> None:
    if problems:
        _fail(problems)


def _fail(problems: list[FieldProblem]) -> NoReturn:
    raise CatalogueInvalid("training catalogue invalid: " + "; ".join(
        f"{p.field}: {p.reason}" for p in problems), problems)
