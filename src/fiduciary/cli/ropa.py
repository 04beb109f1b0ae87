"""CLI: records of processing (GDPR Art. 30)."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fiduciary.cli.common import DataDir, err, runtime
from fiduciary.principal import SYSTEM
from fiduciary.privacy.ropa import render_html

#: Top-level commands (``fiduciary ropa``).
commands = typer.Typer()


class RopaFormat(StrEnum):
    HTML = "html"
    JSON = "json"


@commands.command("ropa")
def ropa(
    format_: Annotated[RopaFormat, typer.Option("--format", help="html (a readable page) or "
                                                "json (machine-readable)")] = RopaFormat.HTML,
    output: Annotated[Path | None, typer.Option(
        help="File to write (created owner-only) [default: stdout]")] = None,
    data_dir: DataDir = None,
) -> None:
    """Generate the records of processing (GDPR Art. 30) from the data map and policy pack."""
    with runtime(data_dir) as rt:
        # No event, no document: the generation is on the audit trail before it is handed out.
        doc = rt.ropa.generate(SYSTEM, format_.value,
                               output=str(output) if output else "stdout")
    text = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
            if format_ is RopaFormat.JSON else render_html(doc))
    if output is None:
        sys.stdout.write(text)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # O_CREAT leaves an existing file's mode alone: make it owner-only too.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        err.print(f"[red]error:[/red] {output}: {exc.strerror}", highlight=False)
        raise typer.Exit(code=2) from None
    err.print(f"records of processing ({format_.value}) written to {output}", highlight=False)
