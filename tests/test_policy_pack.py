"""Policy packs are validated on load; every error names the file and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiduciary.access.policy import compile_condition, load_policy
from fiduciary.datamap import load_default
from fiduciary.errors import PolicyInvalid

BAD = """
settings: {idle_minutes: -3, break_glass_max_minutes: 90, shoe_size: 9}
roles:
  adjuster:
    permissions: [world:domination]
    grants:
      - collections: [claims, pets]
        actions: [read, peek]
        purposes: [claims_handling, gossip]
        masking: {default: blurry, description: redact, nope: clear}
        when:
          - "record.description == 'x'"
          - "record.assigned_adjuster === principal.username"
          - "principal.shoe_size == 9"
"""


def test_invalid_pack_names_file_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BAD)
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path, load_default())
    where = {p.field.split(": ", 1)[1]: p.reason for p in info.value.fields}
    assert all(p.field.startswith(str(path)) for p in info.value.fields)
    g = "roles.adjuster.grants[0]"
    assert "whole number" in where["settings.idle_minutes"]
    assert "at most 60" in where["settings.break_glass_max_minutes"]
    assert "unknown setting" in where["settings.shoe_size"]
    assert "unknown permission" in where["roles.adjuster.permissions"]
    assert "unknown collection 'pets'" in where[f"{g}.collections"]
    assert "unknown action 'peek'" in where[f"{g}.actions"]
    assert "unknown purpose 'gossip'" in where[f"{g}.purposes"]
    assert "unknown masking 'blurry'" in where[f"{g}.masking.default"]
    assert "not a field" in where[f"{g}.masking.nope"]
    assert "encrypted" in where[f"{g}.when[0]"]
    assert "cannot read value" in where[f"{g}.when[1]"]
    assert "no attribute 'shoe_size'" in where[f"{g}.when[2]"]


def test_default_pack_loads_every_required_role() -> None:
    pack = load_policy(None, load_default())
    assert set(pack.roles) >= {"underwriter", "claims_adjuster", "call_center_agent",
                               "fraud_investigator", "actuary", "compliance_officer", "dpo",
                               "security_analyst", "admin", "service"}
    assert not pack.roles["admin"].grants and not pack.roles["compliance_officer"].grants
    assert pack.settings.idle_minutes == 15 and pack.settings.lockout_attempts == 5


@pytest.mark.parametrize(("text", "record", "principal", "expected"), [
    ("record.assigned_adjuster == principal.username", {"assigned_adjuster": "a"},
     {"username": "a"}, True),
    ("record.assigned_adjuster == principal.username", {}, {"username": None}, False),
    ("record.restricted != true", {}, {}, True),
    ("record.restricted != true", {"restricted": True}, {}, False),
    ("record.region in principal.regions", {"region": "west"}, {"regions": ["west"]}, True),
    ("record.region in principal.regions", {"region": "east"}, {"regions": ["west"]}, False),
    ("record.region not in ['east', 'south']", {"region": "west"}, {}, True),
])
def test_conditions(text: str, record: dict[str, object], principal: dict[str, object],
                    expected: bool) -> None:
    test, _ = compile_condition(text)
    assert test((record, {}, principal)) is expected
