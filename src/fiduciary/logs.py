"""Logging to stderr and to ``<data dir>/logs/fiduciary.log``. Log lines name ids, fields and
reasons; no code path logs a field value."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_installed: list[logging.Handler] = []


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, not what it was at set-up."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure(level: str = "info", log_dir: Path | None = None) -> None:
    """(Re)install Fiduciary's handlers; handlers installed by others (pytest) stay."""
    root = logging.getLogger()
    for h in _installed:
        root.removeHandler(h)
        h.close()
    _installed.clear()
    root.setLevel(level.upper())
    stderr = _Stderr()
    _installed.append(stderr)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _installed.append(logging.handlers.RotatingFileHandler(
            log_dir / "fiduciary.log", maxBytes=50_000_000, backupCount=5))
    for h in _installed:
        h.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(h)
    # Alembic and SQLAlchemy are noisy at info; their warnings still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
