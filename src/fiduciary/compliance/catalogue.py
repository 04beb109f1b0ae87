"""The controls catalogue: controls as YAML that ships with the package and an insurer may
replace (``FIDUCIARY_COMPLIANCE_CONTROLS``). Validated on load like the policy pack: a wrong
catalogue stops the start, naming the control and field of every problem.

Each control serves regulation sections (from :data:`SECTIONS`) and is either checked by code
(``check``: a name of :data:`fiduciary.compliance.checks.CHECKS`, with the ``params`` that
check reads) or attested (``attestation``: the document a named person vouches for, due again
``every_days`` after its date)::

    controls:
      - id: access-reviewed
        title: Every active account's access certified within 365 days
        sections: [NYDFS 500.7, HIPAA 164.308]
        severity: medium                 # of the alert when it turns from pass to fail
        check: access_reviewed
        params: {max_age_days: 365}
      - id: risk-assessment
        title: A risk assessment, updated annually
        sections: [NYDFS 500.9]
        attestation: the latest risk assessment
        every_days: 365
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fiduciary.compliance.checks import CHECKS
from fiduciary.compliance.model import Control
from fiduciary.errors import ControlsInvalid, FieldProblem
from fiduciary.workforce.catalogue import _where  # a YAML location, controls named by id

DEFAULT_CONTROLS = "default_controls.yaml"
_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SEVERITIES = ("low", "medium", "high", "critical")

#: The regulation sections a control may name (``REGULATIONS.md``'s rows, as the issue lists
#: them, and the Part 500 sections of the attested documents).
SECTIONS = (
    "NYDFS 500.6", "NYDFS 500.7", "NYDFS 500.9", "NYDFS 500.12", "NYDFS 500.13(a)",
    "NYDFS 500.13(b)", "NYDFS 500.14", "NYDFS 500.15", "NYDFS 500.16", "NYDFS 500.17",
    "NAIC 668 §4", "NAIC 668 §5", "NAIC 668 §6",
    "GDPR 5", "GDPR 6", "GDPR 7", "GDPR 12", "GDPR 17", "GDPR 25", "GDPR 30", "GDPR 32",
    "GDPR 33",
    "CCPA 7021", "CCPA 7025", "CCPA 7101", "CCPA 7102",
    "HIPAA 164.308", "HIPAA 164.312", "HIPAA 164.316",
    "GLBA 314.4",
)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1, max_length=200)
    sections: tuple[str, ...] = Field(min_length=1)
    severity: str = "medium"
    check: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    attestation: str | None = Field(None, min_length=1, max_length=200)
    every_days: int | None = Field(None, ge=1, le=3660)
    description: str = Field("", max_length=2000)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    controls: tuple[_Entry, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Catalogue:
    controls: tuple[Control, ...]
    source: str = "<default>"

    def get(self, control_id: str) -> Control | None:
        return next((c for c in self.controls if c.id == control_id), None)

    def digest(self) -> str:
        """SHA-256 of the catalogue's content (not where it was read from)."""
        return hashlib.sha256(json.dumps(
            [[c.id, c.title, list(c.sections), c.check, dict(c.params), c.attestation,
              c.every_days, c.severity] for c in self.controls], sort_keys=True).encode()
        ).hexdigest()


def load_controls(path: Path | None) -> Catalogue:
    """The packaged catalogue, or the insurer's at ``path``."""
    if path is None:
        text = resources.files("fiduciary.compliance").joinpath(DEFAULT_CONTROLS).read_text(
            "utf-8")
        return parse_controls(text, f"<package>/{DEFAULT_CONTROLS}")
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ControlsInvalid(f"{path}: cannot read controls catalogue ({exc.strerror})",
                              [FieldProblem(str(path), "cannot read file")]) from None
    return parse_controls(text, str(path))


def parse_controls(text: str, source: str) -> Catalogue:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        _fail([FieldProblem(f"{source}: {where}", "not valid YAML")])
    if not isinstance(doc, dict):
        _fail([FieldProblem(f"{source}: document", "expected a mapping with controls")])
    try:
        parsed = _Document.model_validate(doc)
    except ValidationError as exc:
        _fail([FieldProblem(f"{source}: {_where(doc, err['loc'])}", err["msg"])
               for err in exc.errors()])
    problems = _problems(parsed, source)
    if problems:
        _fail(problems)
    return Catalogue(tuple(Control(
        id=e.id, title=e.title, sections=e.sections, check=e.check, params=dict(e.params),
        attestation=e.attestation, every_days=e.every_days, description=e.description,
        severity=e.severity) for e in parsed.controls), source)


def _problems(doc: _Document, source: str) -> list[FieldProblem]:
    problems: list[FieldProblem] = []

    def bad(where: str, reason: str) -> None:
        problems.append(FieldProblem(f"{source}: {where}", reason))

    ids = [c.id for c in doc.controls]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        bad(f"controls[{dup}]", "control id used twice")
    for c in doc.controls:
        at = f"controls[{c.id}]"
        for section in c.sections:
            if section not in SECTIONS:
                bad(f"{at}.sections", f"unknown section {section!r} (one of: "
                    f"{', '.join(SECTIONS)})")
        if c.severity not in SEVERITIES:
            bad(f"{at}.severity", f"one of {', '.join(SEVERITIES)}")
        if (c.check is None) == (c.attestation is None):
            bad(at, "needs either a check or an attestation (not both)")
        if c.attestation is not None and c.every_days is None:
            bad(f"{at}.every_days", "an attestation is due again after this many days")
        if c.check is None:
            if c.params:
                bad(f"{at}.params", "only a checked control has params")
            continue
        spec = CHECKS.get(c.check)
        if spec is None:
            bad(f"{at}.check", f"unknown check {c.check!r} (one of: "
                f"{', '.join(sorted(CHECKS))})")
            continue
        for name, value in c.params.items():
            kind = spec.params.get(name)
            if kind is None:
                bad(f"{at}.params.{name}", f"not a parameter of {c.check} (its parameters: "
                    f"{', '.join(sorted(spec.params)) or 'none'})")
            elif not _non_negative(value, kind):
                what = "number" if kind is float else kind.__name__
                bad(f"{at}.params.{name}", f"a non-negative {what}")
    return problems


def _non_negative(value: Any, kind: type) -> bool:
    """An int (a float parameter takes either), never a bool, at least 0."""
    if isinstance(value, bool):
        return False
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    return ok and value >= 0


def _fail(problems: list[FieldProblem]) -> NoReturn:
    raise ControlsInvalid("controls catalogue invalid: " + "; ".join(
        f"{p.field}: {p.reason}" for p in problems), problems)
