"""OSCAL: the assessment results, the plan they import and the shipped component definition
are valid OSCAL 1.1 (compliance-trestle's models of the official schema); every control of the
catalogue appears with its status and its regulation sections; the shipped file is what the
catalogue generates; the CLI writes all three."""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from trestle.oscal import OSCAL_VERSION
from trestle.oscal.assessment_plan import AssessmentPlan
from trestle.oscal.assessment_results import AssessmentResults
from trestle.oscal.component import ComponentDefinition

from fiduciary.clock import FixedClock
from fiduciary.compliance import oscal
from fiduciary.compliance.catalogue import load_controls
from fiduciary.compliance.model import Control, ControlResult, Outcome, Status
from fiduciary.config import Settings
from fiduciary.runtime import Runtime
from tests.conftest import make_staff
from tests.test_import_export import cli

CONTROLS = load_controls(None).controls
NOW = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
STATUSES = (Status.PASS, Status.FAIL, Status.NOT_APPLICABLE)


def _results() -> list[ControlResult]:
    """Every control, its status in turn pass / fail / not applicable."""
    return [ControlResult(c, Outcome(STATUSES[i % 3], {"accounts": i, "names": ["a.b"]},
                                     (f"event-{i}",)), NOW) for i, c in enumerate(CONTROLS)]


def _walk(node: Any, key: str) -> list[Any]:
    """Every value under ``key`` anywhere in a JSON document."""
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found += _walk(v, key)
    elif isinstance(node, list | tuple):
        for v in node:
            found += _walk(v, key)
    return found


def test_trestle_models_oscal_1_1() -> None:
    assert OSCAL_VERSION.startswith("1.1.")
    assert oscal.OSCAL_VERSION == OSCAL_VERSION


def test_assessment_results_and_plan_are_valid_and_name_every_control() -> None:
    plan, results = oscal.assessment(_results(), CONTROLS, NOW, plan_href="plan.json")
    AssessmentPlan.parse_obj(plan["assessment-plan"])
    AssessmentResults.parse_obj(results["assessment-results"])
    [result] = results["assessment-results"]["results"]
    findings = {f["target"]["target-id"]: f for f in result["findings"]}
    observations = {o["uuid"]: o for o in result["observations"]}
    assert set(findings) == {oscal.token(c.id) for c in CONTROLS}
    for i, control in enumerate(CONTROLS):
        finding = findings[oscal.token(control.id)]
        status = STATUSES[i % 3]
        assert finding["target"]["status"]["state"] == (
            "not-satisfied" if status is Status.FAIL else "satisfied")
        props = {(p["name"], p["value"]) for p in finding["props"]}
        assert ("fiduciary-status", status.value) in props
        assert {v for n, v in props if n == "regulation-section"} == set(control.sections)
        [related] = finding["related-observations"]
        observation = observations[related["observation-uuid"]]
        evidence = " ".join(e.get("description", "") for e in observation["relevant-evidence"])
        assert f'"accounts": {i}' in evidence
        assert f"urn:fiduciary:audit-event:event-{i}" in {
            e.get("href") for e in observation["relevant-evidence"]}
        assert observation["methods"] == (["EXAMINE"] if control.check is None else ["TEST"])
    summary = {p["name"]: p["value"] for p in result["props"]}
    assert summary["summary-fail"] == str(sum(1 for i in range(len(CONTROLS)) if i % 3 == 1))
    # The results import the plan of the same run; the plan reviews every regulation section
    # and every control as an objective.
    ap = results["assessment-results"]["import-ap"]["href"]
    [resource] = results["assessment-results"]["back-matter"]["resources"]
    assert ap == f"#{resource['uuid']}" and resource["rlinks"][0]["href"] == "plan.json"
    assert plan["assessment-plan"]["uuid"] in resource["title"]
    reviewed = plan["assessment-plan"]["reviewed-controls"]
    assert reviewed == result["reviewed-controls"]
    assert {c["control-id"] for c in reviewed["control-selections"][0]["include-controls"]} == {
        oscal.token(s) for c in CONTROLS for s in c.sections}
    assert len(reviewed["control-objective-selections"][0]["include-objectives"]) == len(
        CONTROLS)


def test_uuids_are_fresh_per_run_unique_within_it_and_times_are_rfc_3339() -> None:
    first = oscal.assessment(_results(), CONTROLS, NOW)
    second = oscal.assessment(_results(), CONTROLS, NOW)
    uuids = _walk(first, "uuid")
    assert len(uuids) == len(set(uuids))
    assert not set(uuids) & set(_walk(second, "uuid"))
    times = (_walk(first, "last-modified") + _walk(first, "collected")
             + _walk(first, "start") + _walk(first, "end"))
    assert times and all(RFC3339.match(t) for t in times)
    assert "2026-11-26T10:30:00Z" in times


def test_the_latest_result_of_a_control_is_its_finding() -> None:
    control = CONTROLS[0]
    older = ControlResult(control, Outcome(Status.FAIL, {}), NOW.replace(hour=1))
    newer = ControlResult(control, Outcome(Status.PASS, {}), NOW)
    _, results = oscal.assessment([newer, older], [control], NOW)
    [finding] = results["assessment-results"]["results"][0]["findings"]
    assert finding["target"]["status"]["state"] == "satisfied"


def test_the_shipped_component_definition_is_the_catalogue_s_and_valid() -> None:
    shipped = json.loads(resources.files("fiduciary.compliance").joinpath(
        oscal.COMPONENT_DEFINITION_FILE).read_text("utf-8"))
    assert shipped == oscal.shipped_component_definition()
    modified = datetime.fromisoformat(
        shipped["component-definition"]["metadata"]["last-modified"].replace("Z", "+00:00"))
    # After editing default_controls.yaml: python -m fiduciary.compliance.oscal
    assert shipped == oscal.component_definition(CONTROLS, modified)
    ComponentDefinition.parse_obj(shipped["component-definition"])
    [component] = shipped["component-definition"]["components"]
    served: dict[str, set[str]] = {}
    for impl in component["control-implementations"]:
        for req in impl["implemented-requirements"]:
            for p in req["props"]:
                if p["name"] == "fiduciary-control":
                    served.setdefault(p["value"], set()).add(req["control-id"])
    # Every control maps to every regulation section it serves, and to nothing else.
    assert served == {oscal.token(c.id): {oscal.token(s) for s in c.sections}
                      for c in CONTROLS}
    sources = {impl["source"] for impl in component["control-implementations"]}
    assert "https://eur-lex.europa.eu/eli/reg/2016/679/oj" in sources
    assert all(s.startswith("https://") for s in sources)


def test_a_changed_catalogue_is_a_new_component_definition() -> None:
    fewer = CONTROLS[1:]
    a = oscal.component_definition(CONTROLS, NOW)["component-definition"]
    b = oscal.component_definition(fewer, NOW)["component-definition"]
    assert a["uuid"] != b["uuid"]
    assert a["uuid"] == oscal.component_definition(CONTROLS, NOW)["component-definition"]["uuid"]


@pytest.mark.parametrize("break_it", [
    lambda d: d["results"][0]["findings"][0]["target"]["status"].update(state="passed"),
    lambda d: d["results"][0]["findings"][0]["target"].update({"target-id": "500.12"}),
    lambda d: d["results"][0]["observations"][0].update(collected="26/11/2026"),
    lambda d: d["results"][0].update(verdict="pass"),
])
def test_the_validation_rejects_what_the_schema_forbids(break_it: Any) -> None:
    _, results = oscal.assessment(_results(), CONTROLS, NOW)
    broken = copy.deepcopy(results["assessment-results"])
    break_it(broken)
    with pytest.raises(ValueError, match="validation error"):
        AssessmentResults.parse_obj(broken)


def test_section_tokens() -> None:
    assert oscal.token("NYDFS 500.7(a)(4)") == "nydfs-500.7-a-4"
    assert oscal.token("NAIC 668 §4") == "naic-668-s4"
    assert oscal.token("GDPR 32") == "gdpr-32"
    assert oscal.regulation_of("HIPAA 164.312") == "hipaa"


def test_the_cli_writes_valid_results_plan_and_component_definition(
        rt: Runtime, settings: Settings, tmp_path: Path) -> None:
    out, plan, comp = tmp_path / "ar.json", tmp_path / "ap" / "plan.json", tmp_path / "cd.json"
    plan.parent.mkdir()
    code, stdout, stderr = cli(settings, "compliance", "oscal", "--output", str(out),
                               "--plan", str(plan), "--component-definition", str(comp),
                               "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["controls"] == len(CONTROLS)
    results = json.loads(out.read_text())
    AssessmentResults.parse_obj(results["assessment-results"])
    plan_doc = json.loads(plan.read_text())
    AssessmentPlan.parse_obj(plan_doc["assessment-plan"])
    ComponentDefinition.parse_obj(json.loads(comp.read_text())["component-definition"])
    [result] = results["assessment-results"]["results"]
    assert {f["target"]["target-id"] for f in result["findings"]} == {
        oscal.token(c.id) for c in CONTROLS}
    # The results link to the plan written beside them and carry it, byte for byte.
    [resource] = results["assessment-results"]["back-matter"]["resources"]
    assert resource["rlinks"][0]["href"] == "ap/plan.json"
    assert base64.b64decode(resource["base64"]["value"]).decode() == plan.read_text()
    [component] = plan_doc["assessment-plan"]["back-matter"]["resources"]
    assert component["rlinks"][0]["href"] == "../cd.json"


def test_the_cli_names_an_output_it_cannot_write(rt: Runtime, settings: Settings,
                                                 tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "ar.json"
    code, _, stderr = cli(settings, "compliance", "oscal", "--output", str(target))
    assert code == 2 and str(target) in stderr and "cannot write" in stderr
    assert not target.exists()


def test_the_api_gives_oscal_to_the_compliance_office_only(rt: Runtime,
                                                           clock: FixedClock) -> None:
    officer = make_staff(rt, clock, "cora", ["compliance_officer"]).client
    r = officer.get("/v1/compliance/oscal")
    assert r.status_code == 200, r.text
    AssessmentResults.parse_obj(r.json()["assessment-results"])
    for username, roles in (("adam", ["admin"]), ("carl", ["claims_adjuster"])):
        r = make_staff(rt, clock, username, roles).client.get("/v1/compliance/oscal")
        assert r.status_code == 403, (username, r.text)


def test_a_control_no_longer_in_the_catalogue_is_not_reported() -> None:
    gone = ControlResult(Control("retired-control", "Retired", ("GDPR 32",), "x"),
                         Outcome(Status.FAIL, {}), NOW)
    _, results = oscal.assessment([*_results(), gone], CONTROLS, NOW)
    AssessmentResults.parse_obj(results["assessment-results"])
    targets = {f["target"]["target-id"]
               for f in results["assessment-results"]["results"][0]["findings"]}
    assert "retired-control" not in targets and len(targets) == len(CONTROLS)
