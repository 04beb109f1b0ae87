"""The control results as OSCAL 1.1 (NIST's Open Security Controls Assessment Language), so a
GRC tool or an examiner reads them without our formats.

Three documents, each JSON as the OSCAL 1.1.3 schema defines it::

    component-definition   (shipped: oscal_component_definition.json, generated from the catalogue)
        one component "Fiduciary"; per regulation a control-implementation whose
        implemented-requirements are the regulation's sections ("nydfs-500.12", "gdpr-32"),
        each naming the Fiduciary controls that serve it (prop fiduciary-control)
    assessment-plan        (minimal, produced with every run)
        reviewed-controls: those sections; objectives: our controls
    assessment-results     (one result per run; import-ap points at the plan)
        per control an observation (facts, audit event ids, when checked) and a finding whose
        target is the control (objective-id) with state satisfied / not-satisfied

A regulation section is the OSCAL "control" (what the law asks); a Fiduciary control is the
objective tested against it. ``not_applicable`` is reported as satisfied with reason ``other``
and the prop ``fiduciary-status: not_applicable`` — OSCAL 1.1 knows only two states.
UUIDs of a run's plan, results, observations and findings are random (uuid4) and consistent
within the run; the component definition's are derived from the catalogue (uuid5), so the
shipped file is stable and a changed catalogue gets a new identity.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from fiduciary import __version__
from fiduciary.clock import iso
from fiduciary.compliance.model import Control, ControlResult, Status

OSCAL_VERSION = "1.1.3"
#: The namespace of our props (a URI, as OSCAL asks of ``ns``).
NS = "https://fiduciary.example/ns/oscal"
_UUID_NS = uuid.uuid5(uuid.NAMESPACE_URL, NS)
COMPONENT_DEFINITION_FILE = "oscal_component_definition.json"
DEFAULT_PLAN_HREF = "assessment-plan.json"
DEFAULT_COMPONENT_HREF = "component-definition.json"

#: Where each regulation's text is published: the ``source`` of its control-implementation.
REGULATIONS: dict[str, tuple[str, str]] = {
    "nydfs": ("23 NYCRR Part 500 (NYDFS Cybersecurity Regulation)",
              "https://www.dfs.ny.gov/industry_guidance/cybersecurity"),
    "naic": ("NAIC Insurance Data Security Model Law (#668)",
             "https://content.naic.org/sites/default/files/model-law-668.pdf"),
    "gdpr": ("Regulation (EU) 2016/679 (GDPR)", "https://eur-lex.europa.eu/eli/reg/2016/679/oj"),
    "ccpa": ("CCPA Regulations (Cal. Code Regs. tit. 11, § 7000 et seq.)",
             "https://cppa.ca.gov/regulations/"),
    "hipaa": ("HIPAA Security Rule (45 CFR Part 164)",
              "https://www.ecfr.gov/current/title-45/subtitle-A/subchapter-C/part-164"),
    "glba": ("GLBA Safeguards Rule (16 CFR Part 314)",
             "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-314"),
}


def token(text: str) -> str:
    """An OSCAL token (a letter or ``_`` first; letters, digits, ``.``, ``-``, ``_``) naming a
    regulation section or a control: "NYDFS 500.7(a)(4)" → "nydfs-500.7-a-4",
    "NAIC #668 §4" → "naic-668-s4"."""
    slug = re.sub(r"[^a-z0-9._]+", "-", text.lower().replace("§", "s")).strip("-.")
    return slug if slug[:1].isalpha() or slug[:1] == "_" else f"_{slug}"


def regulation_of(section: str) -> str:
    """The regulation a catalogue section belongs to: its first word, lower case."""
    return token(section.split()[0]) if section.split() else "unknown"


def _prop(name: str, value: str) -> dict[str, str]:
    return {"name": name, "ns": NS, "value": value}


def _metadata(title: str, at: datetime) -> dict[str, Any]:
    return {"title": title, "last-modified": iso(at), "version": __version__,
            "oscal-version": OSCAL_VERSION}


def catalogue_digest(controls: Sequence[Control]) -> str:
    """What the component definition depends on: every control's id, title and sections."""
    rows = [[c.id, c.title, list(c.sections)] for c in sorted(controls, key=lambda c: c.id)]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def _component_uuid(controls: Sequence[Control]) -> str:
    return str(uuid.uuid5(_UUID_NS, f"component:{catalogue_digest(controls)}"))


def _sections(controls: Iterable[Control]) -> dict[str, dict[str, list[Control]]]:
    """regulation → section (as written) → the controls serving it, in catalogue order."""
    by_regulation: dict[str, dict[str, list[Control]]] = {}
    for control in controls:
        for section in control.sections:
            by_regulation.setdefault(regulation_of(section), {}).setdefault(
                section, []).append(control)
    return by_regulation


def component_definition(controls: Sequence[Control], last_modified: datetime) -> dict[str, Any]:
    """The component definition mapping each control to the regulation sections it serves."""
    digest = catalogue_digest(controls)
    implementations = []
    for regulation, sections in sorted(_sections(controls).items()):
        name, source = REGULATIONS.get(regulation, (regulation.upper(),
                                                    f"urn:fiduciary:regulation:{regulation}"))
        requirements = [{
            "uuid": str(uuid.uuid5(_UUID_NS, f"requirement:{digest}:{section}")),
            "control-id": token(section),
            "description": f"{section}, served by: "
                           + "; ".join(f"{c.id} ({c.title})" for c in served),
            "props": [_prop("regulation-section", section),
                      *(_prop("fiduciary-control", token(c.id)) for c in served)],
        } for section, served in sorted(sections.items(), key=lambda kv: token(kv[0]))]
        implementations.append({
            "uuid": str(uuid.uuid5(_UUID_NS, f"implementation:{digest}:{regulation}")),
            "source": source,
            "description": f"{name}: the sections Fiduciary's controls check.",
            "implemented-requirements": requirements,
        })
    component: dict[str, Any] = {
        "uuid": _component_uuid(controls),
        "type": "software",
        "title": "Fiduciary",
        "description": "Customer-data vault for insurers: field encryption, access policy, "
                       "tamper-evident audit trail, privacy operations and compliance checks.",
        "purpose": "Each control below is checked by Fiduciary itself (or attested by a named "
                   "person) and reported as OSCAL assessment results.",
        "props": [_prop("catalogue-sha256", digest)],
    }
    if implementations:
        component["control-implementations"] = implementations
    return {"component-definition": {
        "uuid": str(uuid.uuid5(_UUID_NS, f"component-definition:{digest}")),
        "metadata": _metadata("Fiduciary: controls and the regulation sections they serve",
                              last_modified),
        "components": [component],
    }}


def shipped_component_definition() -> dict[str, Any]:
    """The component definition the package ships (for the default catalogue)."""
    text = resources.files("fiduciary.compliance").joinpath(
        COMPONENT_DEFINITION_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _reviewed_controls(controls: Sequence[Control]) -> dict[str, Any]:
    sections = sorted({token(s) for c in controls for s in c.sections})
    reviewed: dict[str, Any] = {
        "control-selections": ([{"include-controls": [{"control-id": s} for s in sections]}]
                               if sections else [{"include-all": {}}]),
    }
    if controls:
        reviewed["control-objective-selections"] = [{
            "include-objectives": [{"objective-id": token(c.id)} for c in controls]}]
    return reviewed


def _latest_per_control(results: Sequence[ControlResult]) -> list[ControlResult]:
    latest: dict[str, ControlResult] = {}
    for r in results:
        if r.control.id not in latest or r.checked_at >= latest[r.control.id].checked_at:
            latest[r.control.id] = r
    return sorted(latest.values(), key=lambda r: r.control.id)


def _facts_text(facts: Mapping[str, Any]) -> str:
    return json.dumps(dict(facts), sort_keys=True, default=str, separators=(", ", ": "))


def _observation(result: ControlResult) -> dict[str, Any]:
    control, outcome = result.control, result.outcome
    evidence: list[dict[str, Any]] = [{"description": f"Facts: {_facts_text(outcome.facts)}"}]
    evidence += [{"href": f"urn:fiduciary:audit-event:{event_id}",
                  "description": "Audit event the facts rest on (its inclusion proof is in the "
                                 "evidence pack)."} for event_id in outcome.event_ids]
    return {
        "uuid": str(uuid.uuid4()),
        "title": control.title,
        "description": f"Control {control.id} checked: {result.status.value}.",
        "props": [_prop("fiduciary-control", token(control.id)),
                  _prop("fiduciary-status", result.status.value)],
        # An attestation is a document a named person vouches for: examined, not tested.
        "methods": ["EXAMINE" if control.check is None else "TEST"],
        "relevant-evidence": evidence,
        "collected": iso(result.checked_at),
    }


def _finding(result: ControlResult, observation_uuid: str) -> dict[str, Any]:
    control = result.control
    state = "not-satisfied" if result.status is Status.FAIL else "satisfied"
    reason = {Status.PASS: "pass", Status.FAIL: "fail"}.get(result.status, "other")
    status: dict[str, Any] = {"state": state, "reason": reason}
    if result.status is Status.NOT_APPLICABLE:
        status["remarks"] = "Not applicable to this installation."
    return {
        "uuid": str(uuid.uuid4()),
        "title": control.title,
        "description": control.description or control.title,
        "props": [_prop("fiduciary-status", result.status.value),
                  *(_prop("regulation-section", s) for s in control.sections)],
        "target": {"type": "objective-id", "target-id": token(control.id), "status": status},
        "related-observations": [{"observation-uuid": observation_uuid}],
    }


def _resource(title: str, document: Mapping[str, Any], filename: str,
              href: str | None) -> dict[str, Any]:
    """A back-matter resource carrying the document it names (base64), so the file stands
    alone, and linking to where it was written too."""
    resource: dict[str, Any] = {
        "uuid": str(uuid.uuid4()), "title": title,
        "base64": {"filename": filename, "media-type": "application/json",
                   "value": base64.b64encode(dumps(document).encode()).decode()}}
    if href is not None:
        resource["rlinks"] = [{"href": href, "media-type": "application/json"}]
    return resource


def assessment(results: Sequence[ControlResult], controls: Sequence[Control], now: datetime,
               *, plan_href: str | None = None, component_href: str | None = None,
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The assessment plan and the assessment results of one run: the latest result of each
    control of ``controls`` (one without a result is reviewed but has no finding).
    The results carry the plan, and the plan the component definition, in their back-matter;
    ``plan_href`` and ``component_href`` say where they are also written, relative to the
    document that links to them."""
    latest = _latest_per_control(results)
    if controls:  # a control since removed from the catalogue is not reported on
        known = {c.id for c in controls}
        latest = [r for r in latest if r.control.id in known]
    reviewed_controls = list(controls) or [r.control for r in latest]
    reviewed = _reviewed_controls(reviewed_controls)
    component_uuid = _component_uuid(reviewed_controls)
    plan_uuid = str(uuid.uuid4())
    component = _resource("Fiduciary component definition",
                          component_definition(reviewed_controls, now),
                          DEFAULT_COMPONENT_HREF, component_href)
    plan = {"assessment-plan": {
        "uuid": plan_uuid,
        "metadata": _metadata("Fiduciary compliance check: assessment plan", now),
        # Fiduciary has no system security plan; its component definition stands for it.
        "import-ssp": {"href": f"#{component['uuid']}"},
        "reviewed-controls": reviewed,
        "assessment-subjects": [{"type": "component", "include-subjects": [
            {"subject-uuid": component_uuid, "type": "component"}]}],
        "back-matter": {"resources": [component]},
    }}
    plan_resource = _resource(f"Assessment plan of this run ({plan_uuid})", plan,
                              DEFAULT_PLAN_HREF, plan_href)
    observations, findings = [], []
    for r in latest:
        obs = _observation(r)
        observations.append(obs)
        findings.append(_finding(r, obs["uuid"]))
    checked = [r.checked_at for r in latest]
    result: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "title": "Fiduciary compliance check",
        "description": "Every control of the catalogue: its status and the facts behind it.",
        "start": iso(min(checked, default=now)),
        "end": iso(max(checked, default=now)),
        "props": [_prop("summary-" + s.value.replace("_", "-"),
                        str(sum(1 for r in latest if r.status is s))) for s in Status],
        "reviewed-controls": reviewed,
    }
    if observations:
        result["observations"] = observations
        result["findings"] = findings
    results_doc = {"assessment-results": {
        "uuid": str(uuid.uuid4()),
        "metadata": _metadata("Fiduciary compliance check: assessment results", now),
        "import-ap": {"href": f"#{plan_resource['uuid']}"},
        "results": [result],
        "back-matter": {"resources": [plan_resource]},
    }}
    return plan, results_doc


def dumps(document: Mapping[str, Any]) -> str:
    """An OSCAL document as written to a file: indented JSON, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def regenerate_shipped(path: Path, controls: Sequence[Control], now: datetime) -> bool:
    """Write the component definition of ``controls`` to ``path`` (the shipped file after
    default_controls.yaml changed); the file's last-modified stays when nothing else changed.
    Returns whether the file changed."""
    try:
        old: dict[str, Any] | None = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        old = None
    if old is not None:
        kept = datetime.fromisoformat(
            old["component-definition"]["metadata"]["last-modified"].replace("Z", "+00:00"))
        if component_definition(controls, kept) == old:
            return False
    path.write_text(dumps(component_definition(controls, now)), encoding="utf-8")
    return True


if __name__ == "__main__":  # python -m fiduciary.compliance.oscal
    from fiduciary.compliance.catalogue import load_controls

    target = Path(__file__).with_name(COMPONENT_DEFINITION_FILE)
    changed = regenerate_shipped(target, load_controls(None).controls, datetime.now(UTC))
    print(f"{target}: {'written' if changed else 'unchanged'}")
