"""Logging to stderr and to ``<data dir>/logs/fiduciary.log``. Log lines name ids, fields and
reasons; no code path logs a field value."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "info", log_dir: Path | None = None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level.upper())
    stderr = logging.StreamHandler()
    stderr.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stderr)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        file = logging.handlers.RotatingFileHandler(
            log_dir / "fiduciary.log", maxBytes=50_000_000, backupCount=5)
        file.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(file)
    # Alembic and SQLAlchemy are noisy at info; their warnings still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
