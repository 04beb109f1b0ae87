"""Logging to stderr and to ``<data dir>/logs/fiduciary.log``. Log lines name ids, fields and
reasons; no code path logs a field value.

An exception's message can quote values (a driver's error quotes the statement's parameters),
so no record carries one: :class:`ValueFreeTracebacks` replaces every traceback with its
frames (file, line, function) and the exception types — whichever logger it came from,
uvicorn's included."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import traceback
from pathlib import Path
from types import TracebackType
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


class ValueFreeTracebacks(logging.Filter):
    """Keeps where an error happened and what type it was; drops what it said."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = describe(record.exc_info[1])
        record.exc_info = None
        record.stack_info = None
        return True


def describe(exc: BaseException) -> str:
    """A traceback without messages: each exception of the chain by type, with its frames."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.insert(0, _frames(type(current), current.__traceback__))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__)
    return "\n  (which caused)\n".join(parts)


def _frames(kind: type[BaseException], tb: TracebackType | None) -> str:
    lines = [f"Traceback (message withheld): {kind.__module__}.{kind.__qualname__}"]
    lines += [f"  File \"{f.filename}\", line {f.lineno}, in {f.name}"
              for f in traceback.extract_tb(tb)]
    return "\n".join(lines)


class WithoutPaths(logging.Filter):
    """Drops uvicorn's access-log lines for requests under ``prefix`` (their client address
    and exact time would identify a speak-up reporter)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access: (client, method, path with query, HTTP version, status).
        args = record.args if isinstance(record.args, tuple) else ()
        path = str(args[2]) if len(args) > 2 else ""
        return not (path == self.prefix or path.startswith((self.prefix + "/",
                                                            self.prefix + "?")))


def quiet_access_log(prefix: str) -> None:
    """No access-log line for requests under ``prefix``, whoever configured the handlers
    (``fiduciary serve``, or ``uvicorn`` with its own logging configuration)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, WithoutPaths) and f.prefix == prefix for f in access.filters):
        access.addFilter(WithoutPaths(prefix))


#: Loggers whose records reach handlers other than ours (uvicorn's own configuration).
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
_FILTER = ValueFreeTracebacks()


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
        h.addFilter(_FILTER)
        root.addHandler(h)
    for name in _SERVER_LOGGERS:
        server = logging.getLogger(name)
        if _FILTER not in server.filters:
            server.addFilter(_FILTER)
    # Alembic and SQLAlchemy are noisy at info; their warnings still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
