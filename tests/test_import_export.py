"""Bulk import (good rows committed, every bad row reported, nothing half-written) and export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from fiduciary.access import SYSTEM
from fiduciary.cli.main import app
from fiduciary.config import Settings
from fiduciary.runtime import Runtime
from tests.conftest import table_rows

PA = "policy_administration"


def cli(settings: Settings, *args: str, api_key: str | None = None) -> tuple[int, str, str]:
    env = {"FIDUCIARY_DATA_DIR": str(settings.data_dir),
           "FIDUCIARY_DATABASE_URL": settings.resolved_database_url(),
           "FIDUCIARY_API_KEY": api_key or "",
           "FIDUCIARY_ARGON2_TIME_COST": str(settings.argon2_time_cost),
           "FIDUCIARY_ARGON2_MEMORY_KIB": str(settings.argon2_memory_kib)}
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_import_commits_good_rows_and_reports_every_bad_one(
    rt: Runtime, settings: Settings, tmp_path: Path, api_key: str
) -> None:
    existing = rt.vault.create_subject(SYSTEM)
    src = write_csv(tmp_path / "people.csv",
                    ["subject_id", "first_name", "last_name", "national_id", "vip", "shoe_size"],
                    [["", "Ann", "Lee", "123-45-6789", "false", ""],            # line 2: ok
                     ["", "Bob", "", "666-00-1234", "maybe", ""],               # line 3: bad
                     [existing.id, "Cy", "Ng", "219-09-9999", "true", ""],     # line 4: ok
                     ["no-such-subject", "Di", "Fo", "", "", ""],               # line 5: bad
                     ["", "Ed", "Wu", "", "", "44"]])                           # line 6: bad
    code, out, _ = cli(settings, "import", "persons", str(src), "--purpose", PA, "--json",
                       api_key=api_key)
    assert code == 1  # some rows were rejected
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["read"] == 5
    assert summary["imported"] == 2
    assert summary["rejected"] == 3
    assert summary["subjects_created"] == 1
    rejects = [json.loads(line) for line in
               Path(summary["rejects_file"]).read_text().splitlines()]
    assert summary["rejects_file"] == str(src) + ".rejects.jsonl"
    by_line = {r["line"]: {e["field"] for e in r["errors"]} for r in rejects}
    assert by_line == {3: {"last_name", "national_id", "vip"}, 5: {"subject_id"},
                       6: {"shoe_size"}}
    text = Path(summary["rejects_file"]).read_text()
    assert "666-00-1234" not in text and "Bob" not in text
    stored = sorted(r["subject_id"] for r in table_rows(rt, "records"))
    assert existing.id in stored and len(stored) == 2
    found = rt.vault.search(SYSTEM, "persons", {"national_id": "219099999"}, PA)
    assert [r.data["first_name"] for r in found] == ["Cy"]


def test_jsonl_import_with_explicit_rejects_path(rt: Runtime, settings: Settings,
                                                 tmp_path: Path, api_key: str) -> None:
    src = tmp_path / "claims.jsonl"
    subject = rt.vault.create_subject(SYSTEM).id
    good = {"subject_id": subject, "claim_number": "CLM-1", "policy_number": "POL-1",
            "status": "open", "loss_date": "2026-01-02", "amount_claimed": 1250.5,
            "description": "Rear-ended at a junction"}
    src.write_text("\n".join([json.dumps(good), "{not json", json.dumps([1]),
                              json.dumps({**good, "status": "lost"}), ""]))
    rejects = tmp_path / "out" / "bad.jsonl"
    rejects.parent.mkdir()
    code, out, _ = cli(settings, "import", "claims", str(src), "--purpose", "claims_handling",
                       "--rejects", str(rejects), api_key=api_key)
    assert code == 1
    assert "imported 1" in out and "rejected 3" in out
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [x["line"] for x in lines] == [2, 3, 4]
    assert lines[2]["errors"] == [{"field": "status", "reason":
                                   "expected one of: open, under_review, approved, denied, "
                                   "closed"}]
    [claim] = rt.vault.list_subject_records(SYSTEM, subject, "claims_handling")
    assert claim.data["description"] == "Rear-ended at a junction"
    assert claim.data["amount_claimed"] == "1250.5"


def test_clean_import_exits_zero_and_leaves_no_rejects_file(settings: Settings, rt: Runtime,
                                                            tmp_path: Path,
                                                            api_key: str) -> None:
    src = write_csv(tmp_path / "ok.csv", ["first_name", "last_name"],
                    [["A", "B"], ["C", "D"], ["E", "F"]])
    code, out, _ = cli(settings, "import", "persons", str(src), "--purpose", PA,
                       "--batch-size", "2", api_key=api_key)
    assert code == 0, out
    assert not Path(str(src) + ".rejects.jsonl").exists()
    assert len(table_rows(rt, "subjects")) == 3


def test_import_refuses_an_undeclared_purpose(settings: Settings, rt: Runtime,
                                              tmp_path: Path, api_key: str) -> None:
    src = write_csv(tmp_path / "ok.csv", ["first_name", "last_name"], [["A", "B"]])
    code, _, err = cli(settings, "import", "persons", str(src), "--purpose", "gossip",
                       api_key=api_key)
    assert code == 2
    assert "purpose" in err
    assert table_rows(rt, "records") == []


def test_export_writes_every_record_as_jsonl(settings: Settings, rt: Runtime,
                                             tmp_path: Path, api_key: str) -> None:
    for i in range(7):
        s = rt.vault.create_subject(SYSTEM).id
        rt.vault.create_record(SYSTEM, "persons", s, {"first_name": f"P{i}", "last_name": "X",
                                              "national_id": f"123-45-{6780 + i}"}, PA)
    out_file = tmp_path / "persons.jsonl"
    code, _, _ = cli(settings, "export", "persons", "--purpose", PA, "--output", str(out_file),
                     api_key=api_key)
    assert code == 0
    rows = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert sorted(r["data"]["first_name"] for r in rows) == [f"P{i}" for i in range(7)]
    code, stdout, _ = cli(settings, "export", "persons", "--purpose", PA, api_key=api_key)
    assert code == 0 and len(stdout.strip().splitlines()) == 7


def test_init_json_and_demo(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    code, out, _ = cli(settings, "init", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["api_key"].startswith("fdy_")
    code, _, err = cli(settings, "init")
    assert code == 2 and "already initialised" in err
    code, out, _ = cli(settings, "demo", "--subjects", "20", "--seed", "7", "--json")
    assert code == 0, out
    counts = json.loads(out)["records"]
    assert counts["persons"] == 20
    assert set(counts) >= {"policies", "payment_methods", "claims"}
