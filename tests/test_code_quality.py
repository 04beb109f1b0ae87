"""The code stays typed (mypy --strict on the core), lint-clean (ruff) and layered
(import-linter)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_ruff() -> None:
    r = _run("ruff", "check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = _run("mypy")
    assert r.returncode == 0, r.stdout + r.stderr


def test_layers() -> None:
    """The layer rule in pyproject.toml (import-linter) holds."""
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The vault asking the privacy package directly (instead of through its RecordGate) is
    exactly what the rule exists to stop: a copy of the tree with that import fails."""
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    store = tmp_path / "src" / "fiduciary" / "vault" / "store.py"
    store.write_text(store.read_text() + "\nfrom fiduciary.privacy.holds import ActiveHolds\n")
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
                       cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path / "src")})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fiduciary.vault.store -> fiduciary.privacy.holds" in r.stdout, r.stdout


def _sources() -> dict[str, str]:
    src = ROOT / "src" / "fiduciary"
    return {str(p.relative_to(src)): p.read_text() for p in src.rglob("*.py")}


def test_one_way_to_delete_records() -> None:
    """Crypto-shredding depends on every copy of a record going: only vault/store.py deletes
    records or blind-index entries, so a new per-record table is added in one place."""
    deleting = re.compile(r"\b(records|blind_index)\.delete\(")
    assert [name for name, text in _sources().items() if deleting.search(text)] == [
        "vault/store.py"]


def test_one_permission_check_and_one_hold_rule() -> None:
    defined = {name: text for name, text in _sources().items()
               if "def require_permission(" in text or "def covering(" in text}
    assert sorted(defined) == ["principal.py", "privacy/holds.py"]
