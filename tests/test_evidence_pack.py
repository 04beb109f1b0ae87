"""The evidence pack (issue 14 item 3): what it holds, that its own verifier accepts it offline,
that every kind of tampering fails naming the file, and that no customer value is in it."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from fiduciary.access import SYSTEM
from fiduciary.api.app import create_app
from fiduciary.audit.verify import verify
from fiduciary.clock import FixedClock
from fiduciary.compliance import verify_pack
from fiduciary.compliance.evidence import EvidencePacker, Period
from fiduciary.compliance.model import Control, ControlResult, Outcome, Status
from fiduciary.config import Settings
from fiduciary.errors import Forbidden, InvalidInput
from fiduciary.principal import Principal
from fiduciary.runtime import Runtime
from fiduciary.storage.schema import audit_events
from tests.test_import_export import cli

SSN = "078-05-1120"
EMAIL = "ines.quarrington@example.org"
SURNAME = "Quarrington"
INCIDENT_TITLE = "Laptop of the Quarrington claims desk stolen"
PERIOD = "2026-01-01..2026-01-31"


@dataclass
class StoredPosture:
    """Results as the posture service would have stored them (the pack's input)."""

    results: list[ControlResult]
    checks: int = 0

    def results_between(self, start: datetime, end: datetime) -> list[ControlResult]:
        return [r for r in self.results if start <= r.checked_at < end]

    def check(self, now: datetime | None = None, *, by: Principal | None = None
              ) -> list[ControlResult]:
        self.checks += 1
        return list(self.results)


def seed(rt: Runtime, clock: FixedClock) -> list[str]:
    """A customer, a denied CCPA request, an incident, a trained officer; returns the ids of
    the record writes' audit events."""
    s = rt.vault.create_subject(SYSTEM).id
    rt.vault.create_record(SYSTEM, "persons", s, {
        "first_name": "Ines", "last_name": SURNAME, "national_id": SSN, "email": EMAIL,
        "region": "west"}, "legal_obligation")
    req = rt.dsr.create(SYSTEM, s, "know", "ccpa", channel="email")
    rt.dsr.deny(SYSTEM, req.id, "Identity could not be verified")
    rt.incidents.create(SYSTEM, {"title": INCIDENT_TITLE, "kind": "unauthorized_access",
                                 "discovered_at": clock.now() - timedelta(hours=2)})
    rt.users.create("cora", ["compliance_officer"], [])
    for course in rt.training.catalogue.courses:
        rt.users.record_training("cora", course.id, clock.now().date() - timedelta(days=10),
                                 evidence="LMS-4471")
    with rt.db.read() as conn:
        return list(conn.execute(sa.select(audit_events.c.event_id).where(
            audit_events.c.action.like("record.%"))).scalars())


def results(clock: FixedClock, event_ids: list[str]) -> list[ControlResult]:
    mfa = Control("mfa_all_accounts", "MFA for every active account", ("NYDFS 500.12",),
                  "mfa_all_accounts")
    enc = Control("sensitive_fields_encrypted", "Sensitive fields encrypted",
                  ("GDPR 32", "NYDFS 500.15"), "sensitive_fields_encrypted")
    earlier = clock.now() - timedelta(days=2)
    return [
        ControlResult(mfa, Outcome(Status.FAIL, {"without_mfa": ["cora"]}), earlier),
        ControlResult(mfa, Outcome(Status.PASS, {"without_mfa": []}), clock.now()),
        ControlResult(enc, Outcome(Status.PASS, {"records_sampled": 1},
                                   (*event_ids, "00000000-0000-0000-0000-000000000000")),
                      clock.now()),
    ]


def packer(rt: Runtime, posture: StoredPosture) -> EvidencePacker:
    return EvidencePacker(rt.db, rt.clock, rt.audit, rt.trail, posture, rt.ropa)


@pytest.fixture
def pack(rt: Runtime, clock: FixedClock, tmp_path: Path) -> Path:
    posture = StoredPosture(results(clock, seed(rt, clock)))
    out = tmp_path / "pack.zip"
    summary = packer(rt, posture).pack(SYSTEM, Period.parse(PERIOD), out)
    assert summary.proofs == 2  # the customer's record write, and the pack's own event
    assert not summary.checked_now and posture.checks == 0
    return out


def run_verifier(pack: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """As an examiner would: the pack and the script it holds alone in a directory, an
    isolated interpreter (-I), and Fiduciary made unimportable."""
    where = tmp_path / "examiner"
    where.mkdir(exist_ok=True)
    with zipfile.ZipFile(pack) as z:
        (where / "verify_pack.py").write_bytes(z.read("verify_pack.py"))
    (where / "pack.zip").write_bytes(pack.read_bytes())
    runner = ("import runpy, sys; sys.modules['fiduciary'] = None; "
              "sys.argv = ['verify_pack.py', *sys.argv[1:]]; "
              "runpy.run_path('verify_pack.py', run_name='__main__')")
    return subprocess.run([sys.executable, "-I", "-c", runner, "pack.zip", *args], cwd=where,
                          capture_output=True, text=True, timeout=60, check=False)


def files_of(pack: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(pack) as z:
        return {n: z.read(n) for n in z.namelist()}


def rewrite(pack: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    files = files_of(pack)
    change(files)
    out = pack.with_name("tampered.zip")
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out


def public_key(rt: Runtime) -> str:
    return rt.trail.public_key.hex()


# -- a good pack ---------------------------------------------------------------------------
def test_a_pack_verifies_offline_with_the_pinned_key(
        rt: Runtime, pack: Path, tmp_path: Path) -> None:
    run = run_verifier(pack, tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 0, run.stderr + run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert last == "OK: evidence pack verified, 2 inclusion proofs checked"
    assert verify_pack.fingerprint(rt.trail.public_key) in run.stdout
    assert "NOT pinned" not in run.stdout
    # Unpinned it still verifies, and says what to compare.
    run = run_verifier(pack, tmp_path)
    assert run.returncode == 0 and "NOT pinned" in run.stdout


def test_the_pack_holds_the_results_the_registers_and_is_recorded_in_the_trail(
        rt: Runtime, pack: Path) -> None:
    files = files_of(pack)
    assert {"controls.json", "ropa.json", "dsr_log.json", "dsr_log.csv",
            "breach_register.json", "training.json", "reviews.json", "verify_pack.py",
            "manifest.json", "manifest.sig", "anchor.json"} <= set(files)
    controls = json.loads(files["controls.json"])
    assert controls["summary"] == {"pass": 2, "fail": 0, "not_applicable": 0}
    assert [c["id"] for c in controls["controls"]] == ["mfa_all_accounts",
                                                        "sensitive_fields_encrypted"]
    assert len(controls["results"]) == 3  # the history of the period, the earlier fail too
    assert controls["events_without_proof"]["not_in_trail"] == [
        "00000000-0000-0000-0000-000000000000"]
    [dsr] = json.loads(files["dsr_log.json"])["requests"]
    assert (dsr["type"], dsr["channel"], dsr["status"], dsr["denial_reason"]) == (
        "know", "email", "denied", "Identity could not be verified")
    assert files["dsr_log.csv"].decode().splitlines()[0].startswith("request_id,subject_id")
    [incident] = json.loads(files["breach_register.json"])["incidents"]
    assert incident["kind"] == "unauthorized_access" and incident["obligations"] is not None
    training = json.loads(files["training.json"])["records"]
    assert {r["username"] for r in training} == {"cora"}
    assert {r["evidence_reference"] for r in training} == {"LMS-4471"}
    # The manifest's digest is in an audit event of the trail, which the anchor proves.
    digest = hashlib.sha256(files["manifest.json"]).hexdigest()
    items, _ = rt.trail.events(action="compliance.evidence_pack")
    assert [i["event"]["details"]["manifest_sha256"] for i in items] == [digest]
    anchor = json.loads(files["anchor.json"])
    assert anchor["event_id"] == items[0]["event"]["id"]
    assert verify(rt.db, rt.trail.public_key).size > anchor["leaf_index"]


def test_no_customer_value_is_in_any_file_of_the_pack(pack: Path) -> None:
    for name, data in files_of(pack).items():
        text = data.decode()
        for value in (SSN, EMAIL, SURNAME, "Ines", INCIDENT_TITLE):
            assert value not in text, f"{value!r} in {name}"


# -- tampering -----------------------------------------------------------------------------
def _flip_byte(files: dict[str, bytes]) -> None:
    data = bytearray(files["controls.json"])
    data[data.index(b'"pass"')] = ord("'")
    files["controls.json"] = bytes(data)


def _remove(files: dict[str, bytes]) -> None:
    del files["dsr_log.csv"]


def _add(files: dict[str, bytes]) -> None:
    files["events/extra.json"] = b"{}"


def _remove_anchor(files: dict[str, bytes]) -> None:
    del files["anchor.json"]


def _swap_proofs(files: dict[str, bytes]) -> None:
    # The pack's own proof moved onto the event file (no re-signing: its digest changes).
    [name] = [n for n in files if n.startswith("events/")]
    doc = json.loads(files[name])
    doc["inclusion_proof"] = json.loads(files["anchor.json"])["inclusion_proof"]
    files[name] = json.dumps(doc).encode()


@pytest.mark.parametrize(("change", "named"), [
    (_flip_byte, "controls.json"),
    (_remove, "dsr_log.csv"),
    (_add, "events/extra.json"),
    (_remove_anchor, "anchor.json"),
])
def test_tampering_fails_naming_the_file(rt: Runtime, pack: Path, tmp_path: Path,
                                         change: Callable[[dict[str, bytes]], None],
                                         named: str) -> None:
    run = run_verifier(rewrite(pack, change), tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 1
    assert run.stdout.strip().splitlines()[-1] == f"FAILED: {named}"
    assert named in run.stderr


def test_a_proof_moved_from_another_event_fails_naming_the_event_file(
        rt: Runtime, pack: Path, tmp_path: Path) -> None:
    tampered = rewrite(pack, _swap_proofs)
    [name] = [n for n in files_of(tampered) if n.startswith("events/")]
    run = run_verifier(tampered, tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 1
    assert run.stdout.strip().splitlines()[-1] == f"FAILED: {name}"


def _resign(rt: Runtime, files: dict[str, bytes], key: Ed25519PrivateKey | None = None) -> None:
    """What an insider with the signing key (or a forger with a key of their own) would do
    after editing: recompute the manifest's digests and sign it again."""
    key = key or rt.trail.key
    manifest = json.loads(files["manifest.json"])
    manifest["files"] = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()
                         if n in manifest["files"]}
    files["manifest.json"] = json.dumps(manifest).encode()
    raw = key.public_key().public_bytes_raw()
    files["manifest.sig"] = json.dumps({
        "public_key": raw.hex(),
        "signature": key.sign(verify_pack.MANIFEST_CONTEXT + files["manifest.json"]).hex(),
    }).encode()


def test_a_swapped_proof_fails_even_in_a_re_signed_manifest(
        rt: Runtime, pack: Path, tmp_path: Path) -> None:
    def swap(files: dict[str, bytes]) -> None:
        [name] = [n for n in files if n.startswith("events/")]
        doc = json.loads(files[name])
        doc["inclusion_proof"] = doc["inclusion_proof"][::-1]
        files[name] = json.dumps(doc).encode()
        _resign(rt, files)

    tampered = rewrite(pack, swap)
    run = run_verifier(tampered, tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 1
    [name] = [n for n in files_of(tampered) if n.startswith("events/")]
    assert run.stdout.strip().splitlines()[-1] == f"FAILED: {name}"
    assert "inclusion proof" in run.stderr


def test_an_edited_event_fails_even_in_a_re_signed_manifest(
        rt: Runtime, pack: Path, tmp_path: Path) -> None:
    def edit(files: dict[str, bytes]) -> None:
        [name] = [n for n in files if n.startswith("events/")]
        doc = json.loads(files[name])
        doc["canonical_event"] = doc["canonical_event"].replace('"allow"', '"deny"')
        files[name] = json.dumps(doc).encode()
        _resign(rt, files)

    run = run_verifier(rewrite(pack, edit), tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 1 and "FAILED: events/" in run.stdout


def test_a_forger_who_re_signs_with_another_key_fails_against_the_pinned_key(
        rt: Runtime, pack: Path, tmp_path: Path) -> None:
    forged = rewrite(pack, lambda files: (files.__setitem__("controls.json", b"{}"),
                                          _resign(rt, files, Ed25519PrivateKey.generate())))
    run = run_verifier(forged, tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 1
    assert run.stdout.strip().splitlines()[-1] == "FAILED: manifest.sig"


def test_a_pack_the_trail_did_not_record_has_no_anchor(
        rt: Runtime, pack: Path, tmp_path: Path) -> None:
    # An insider with the key edits a file and re-signs: the anchor names the old manifest.
    def edit(files: dict[str, bytes]) -> None:
        files["training.json"] = b'{"records": []}\n'
        _resign(rt, files)

    run = run_verifier(rewrite(pack, edit), tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 1
    assert run.stdout.strip().splitlines()[-1] == "FAILED: anchor.json"


# -- inputs and permissions ----------------------------------------------------------------
def test_no_result_in_the_period_runs_a_check_and_says_so(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    posture = StoredPosture(results(clock, []))
    summary = packer(rt, posture).pack(SYSTEM, Period.parse("2025-10-01..2025-12-31"),
                                       tmp_path / "q4.zip")
    assert summary.checked_now and posture.checks == 1
    controls = json.loads(files_of(tmp_path / "q4.zip")["controls.json"])
    assert controls["checked_at_packing"] is True
    assert run_verifier(tmp_path / "q4.zip", tmp_path).returncode == 0


@pytest.mark.parametrize("text", ["2026-01-01", "2026-13-01..2026-12-31",
                                  "2026-02-01..2026-01-01", "..", "x..y"])
def test_a_bad_period_is_rejected_naming_it(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Period.parse(text)
    assert [f.field for f in err.value.fields] == ["period"]


def test_the_default_period_is_the_last_full_quarter(clock: FixedClock) -> None:
    assert Period.last_full_quarter(clock.now()).label == "2025-10-01..2025-12-31"
    assert Period.last_full_quarter(datetime(2026, 8, 15, tzinfo=clock.now().tzinfo)).label \
        == "2026-04-01..2026-06-30"


def principal_of(rt: Runtime, role: str) -> Principal:
    _, token = rt.api_keys.create(f"{role}-desk", role=role)
    return rt.api_keys.authenticate(token)


@pytest.mark.parametrize("role", ["claims_adjuster", "security_analyst", "admin"])
def test_roles_without_compliance_read_cannot_make_a_pack(
        rt: Runtime, tmp_path: Path, role: str) -> None:
    # A security analyst reads the audit trail but not the compliance evidence.
    with pytest.raises(Forbidden):
        rt.evidence.pack(principal_of(rt, role), Period.parse(PERIOD), tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    items, _ = rt.trail.events(action="compliance.evidence_pack")
    assert items == []


def test_a_compliance_officer_packs_the_posture_the_service_stored(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    seed(rt, clock)
    officer = principal_of(rt, "compliance_officer")
    stored = rt.posture.check()
    summary = rt.evidence.pack(officer, Period.parse(PERIOD), tmp_path / "p.zip")
    assert not summary.checked_now
    files = files_of(tmp_path / "p.zip")
    controls = json.loads(files["controls.json"])
    assert [c["id"] for c in controls["controls"]] == sorted(r.control.id for r in stored)
    # The posture run itself (compliance.check) is among the proven events.
    proven = [json.loads(json.loads(files[n])["canonical_event"])["action"]
              for n in files if n.startswith("events/")]
    assert "compliance.check" in proven
    [item], _ = rt.trail.events(action="compliance.evidence_pack")
    assert item["event"]["actor"]["name"] == "compliance_officer-desk"
    run = run_verifier(tmp_path / "p.zip", tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == (
        f"OK: evidence pack verified, {summary.proofs} inclusion proofs checked")


def test_the_cli_writes_a_pack_and_prints_the_key_to_pin(
        rt: Runtime, clock: FixedClock, settings: Settings, tmp_path: Path) -> None:
    seed(rt, clock)
    out = tmp_path / "cli.zip"
    code, stdout, stderr = cli(settings, "compliance", "evidence", "--output", str(out),
                               "--period", PERIOD, "--json")
    assert code == 0, stderr
    made = json.loads(stdout.strip().splitlines()[-1])
    assert made["public_key"] == public_key(rt)
    assert made["public_key_sha256"] == verify_pack.fingerprint(rt.trail.public_key)
    # No result stored in January: the pack ran the controls and says so.
    assert made["checked_now"] is True
    run = run_verifier(out, tmp_path, "--public-key", made["public_key"])
    assert run.returncode == 0, run.stderr


def test_the_cli_rejects_an_output_it_cannot_write_and_packs_nothing(
        settings: Settings, rt: Runtime, tmp_path: Path) -> None:
    code, _, stderr = cli(settings, "compliance", "evidence", "--output",
                          str(tmp_path / "no-such-dir" / "pack.zip"), "--period", PERIOD)
    assert code == 2 and "output" in stderr
    items, _ = rt.trail.events(action="compliance.evidence_pack")
    assert items == []


def test_the_cli_rejects_a_bad_period_and_writes_nothing(
        settings: Settings, rt: Runtime, tmp_path: Path) -> None:
    code, _, stderr = cli(settings, "compliance", "evidence", "--output",
                          str(tmp_path / "bad.zip"), "--period", "2026-03-01..2026-02-01")
    assert code == 2 and "period" in stderr
    assert not (tmp_path / "bad.zip").exists()


def test_the_api_hands_a_compliance_officer_the_pack_and_no_one_else(
        rt: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    seed(rt, clock)
    _, officer = rt.api_keys.create("officer", role="compliance_officer")
    _, analyst = rt.api_keys.create("analyst", role="security_analyst")
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        url = "/v1/compliance/evidence?from=2026-01-01&to=2026-01-31"
        r = c.get(url, headers={"Authorization": f"Bearer {analyst}"})
        assert r.status_code == 403
        r = c.get(url.removesuffix("&to=2026-01-31"),
                  headers={"Authorization": f"Bearer {officer}"})
        assert r.status_code == 422 and "to" in r.text
        r = c.get("/v1/compliance/evidence?from=2026-02-01&to=2026-01-01",
                  headers={"Authorization": f"Bearer {officer}"})
        assert r.status_code == 422 and "to" in r.text
        items, _ = rt.trail.events(action="compliance.evidence_pack")
        assert items == []  # refused and rejected requests packed nothing
        r = c.get(url, headers={"Authorization": f"Bearer {officer}"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip"
        assert "evidence-2026-01-01..2026-01-31.zip" in r.headers["content-disposition"]
    pack = tmp_path / "api.zip"
    pack.write_bytes(r.content)
    run = run_verifier(pack, tmp_path, "--public-key", public_key(rt))
    assert run.returncode == 0, run.stderr


def test_the_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(Path(verify_pack.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"__future__", "cryptography"} <= sys.stdlib_module_names
