"""The wheel carries every file the package reads at run time: templates, static files,
packs, migrations. An installed (non-editable) server that missed one would fail only when a
page or pack is first used."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fiduciary"


def test_the_wheel_contains_every_file_of_the_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools reuses a build/ directory, whose stale files would hide
    # a file the configuration no longer ships.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("fiduciary-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("fiduciary/")}
    expected = {f"fiduciary/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert expected - shipped == set()
    # The console's pages and its pinned htmx among them.
    assert any(n.startswith("fiduciary/console/templates/") for n in shipped)
    assert any(n.startswith("fiduciary/console/static/htmx-") for n in shipped)
