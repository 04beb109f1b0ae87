"""No plaintext at rest or in logs: canary values in every sensitive field of every default
collection, written through a real server, must appear nowhere in the data directory (database,
WAL, keyring, logs), nowhere in the server's output — and must read back exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fiduciary.datamap import FieldSpec, FieldType, load_default
from fiduciary.storage import Database
from fiduciary.storage.schema import records
from tests.pgserver import PostgresServer, _free_port

FORMAT_CANARIES: dict[str, list[str]] = {
    "national_id": ["078-05-1120", "219-09-9999"],
    "iban": ["GB82WEST12345698765432"],
    "card_number": ["5555555555554444"],
    "bank_account": ["98765432101234"],
    "aba_routing": ["021000021"],
    "vin": ["1HGCM82633A004352"],
    "icd10": ["S13.4XXA"],
    "icd10_list": ["S82.101A,T14.90"],
    "passport": ["X7Q4K9P2"],
    "drivers_licence": ["CANARYDL987"],
    "licence_plate": ["CNRY 7Q"],
    "postal_code": ["CNRY9QZ"],
}
MIN_SCANNABLE = 6  # shorter values (booleans, "CA") would match random bytes


def canary(collection: str, f: FieldSpec, n: int) -> Any:
    if f.format == "email":
        return f"canary.{collection}.{f.name}@leak-test.example"
    if f.format == "phone":
        return f"+1 (917) 867-53{n % 100:02d}"
    if f.format in FORMAT_CANARIES:
        options = FORMAT_CANARIES[f.format]
        return options[n % len(options)]
    if f.format == "us_state":
        return "WY"
    if f.type is FieldType.STRING:
        return (f"Canary-{collection}-{f.name}"[: f.max_length] if not f.max_length
                else "Cnry7Zq"[: f.max_length])
    if f.type is FieldType.TEXT:
        return f"Canary story of {collection}.{f.name}: a fall at Zq-ridge"
    if f.type is FieldType.DATE:
        return f"1961-07-{10 + n % 18:02d}"
    if f.type is FieldType.DATETIME:
        return f"1961-07-{10 + n % 18:02d}T08:09:10Z"
    if f.type is FieldType.DECIMAL:
        return f"{int(f.maximum) - 1}.654321" if f.maximum else "98765.4321"
    if f.type is FieldType.INTEGER:
        return int(f.maximum) - 1 if f.maximum else 987654321
    if f.type is FieldType.BOOLEAN:
        return True
    return max(f.values, key=len)  # enum


def scan_forms(f: FieldSpec, value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value)
    forms = {text}
    if f.format in ("national_id", "phone", "card_number", "bank_account"):
        forms.add("".join(c for c in text if c.isdigit()))
    if f.format == "email":
        forms.add(text.lower())
    return [s for s in forms if len(s) >= MIN_SCANNABLE]


def filler(f: FieldSpec, n: int) -> Any:
    """Values for required fields that are not sensitive (internal)."""
    if f.type is FieldType.ENUM:
        return f.values[0]
    if f.type is FieldType.DATE:
        return "2026-01-02"
    return f"REF-{n:05d}"


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.log = data_dir.parent / "server-output.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fiduciary.cli.main", "serve", "--data-dir", str(data_dir),
             "--port", str(self.port)],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start: " + self.log.read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_canaries_never_stored_or_logged_in_plaintext(
    backend: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": database_url}
    init = subprocess.run([sys.executable, "-m", "fiduciary.cli.main", "init", "--data-dir",
                           str(data_dir), "--json"], env=env, capture_output=True, check=True)
    api_key = json.loads(init.stdout)["api_key"]
    dm = load_default()
    server = Server(data_dir, env)
    expected: dict[str, dict[str, Any]] = {}
    forms: set[str] = set()
    try:
        http = httpx.Client(base_url=server.url,
                            headers={"Authorization": f"Bearer {api_key}"})
        subject = http.post("/v1/subjects").json()["id"]
        # Data held on consent is written only for its consented purpose: consent first.
        assert http.post(f"/v1/subjects/{subject}/consents", json={
            "purpose": "marketing", "granted": True, "notice_version": "2026-01",
            "method": "web_form"}).status_code == 201
        for n, (cname, spec) in enumerate(dm.collections.items()):
            values = {f.name: canary(cname, f, n) for f in spec.fields.values() if f.encrypted}
            values |= {f.name: filler(f, n) for f in spec.required_fields if not f.encrypted}
            for name in values:
                if spec.fields[name].encrypted:
                    forms.update(scan_forms(spec.fields[name], values[name]))
            # Write in groups, each under a purpose every field of the group allows.
            remaining = dict(values)
            record_id = None
            while remaining:
                # Consent-based collections serve their consented purpose only; the others
                # are written for any other purpose.
                on_consent = spec.lawful_basis.value == "consent"
                usable = [p for p in dm.purposes
                          if dm.purposes[p].consent_required == on_consent]
                purpose = max(usable, key=lambda p: sum(
                    p in spec.fields[k].purposes for k in remaining))
                if record_id is None:
                    required = {f.name for f in spec.required_fields}
                    purpose = next(p for p in usable if all(
                        p in spec.fields[k].purposes for k in required))
                group = {k: v for k, v in remaining.items() if purpose in spec.fields[k].purposes}
                if record_id is None:
                    r = http.post(f"/v1/collections/{cname}/records?purpose={purpose}",
                                  json={"subject_id": subject, "data": group})
                    assert r.status_code == 201, r.text
                    record_id = r.json()["id"]
                else:
                    r = http.patch(f"/v1/collections/{cname}/records/{record_id}"
                                   f"?purpose={purpose}", json={"data": group})
                    assert r.status_code == 200, r.text
                for k in group:
                    del remaining[k]
            expected[cname] = {"id": record_id, "values": values}
            for f in spec.searchable_fields:
                if f.encrypted:
                    purpose = sorted(f.purposes)[0]
                    r = http.post(f"/v1/collections/{cname}/search?purpose={purpose}",
                                  json={"where": {f.name: values[f.name]}})
                    assert [i["id"] for i in r.json()["items"]] == [record_id], (cname, f.name)
        # A rejected write with canaries must not echo them either.
        bad = http.post("/v1/collections/persons/records?purpose=marketing", json={
            "subject_id": subject, "data": {"national_id": "078-05-1120",
                                            "email": "canary-not-an-email"}})
        assert bad.status_code == 422
        assert "078-05-1120" not in bad.text and "canary-not-an-email" not in bad.text
        forms.add("canary-not-an-email")
        # Reading back returns every canary exactly.
        for cname, exp in expected.items():
            spec = dm.collections[cname]
            got: dict[str, Any] = {}
            for purpose in dm.purposes:
                r = http.get(f"/v1/collections/{cname}/records/{exp['id']}?purpose={purpose}")
                if r.status_code == 200:
                    got |= r.json()["data"]
            for name, value in exp["values"].items():
                assert got[name] == value, (cname, name)
        http.close()
    finally:
        server.stop()

    scanned = sorted(p for p in data_dir.rglob("*") if p.is_file())
    assert any(p.name == "keyring.json" for p in scanned)
    assert any(p.suffix == ".log" for p in scanned)
    if backend == "sqlite":
        assert any(p.name == "fiduciary.db" for p in scanned)
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        pg.checkpoint()
        scanned += sorted(p for p in pg.data.rglob("*") if p.is_file())
    scanned.append(server.log)
    hits = []
    for path in scanned:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            continue  # the shared PostgreSQL server dropped another test's file meanwhile
        hits += [(str(path), form) for form in forms if form.encode() in blob]
    assert hits == []
    assert len(forms) > 30
    # Short values (booleans, two-letter states) cannot be scanned for: check where they live.
    db = Database(database_url)
    with db.read() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(records))}
    db.dispose()
    for cname, exp in expected.items():
        row = rows[exp["id"]]
        sealed, clear = json.loads(row.sealed), json.loads(row.clear)
        for name in exp["values"]:
            encrypted = dm.collections[cname].fields[name].encrypted
            assert (name in sealed, name in clear) == (encrypted, not encrypted), (cname, name)
