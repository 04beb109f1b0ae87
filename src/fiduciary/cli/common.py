"""What every command shares: its options, the consoles, the settings, the runtime it works in
and how a domain error ends it (a clean message on stderr, exit code 2)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fiduciary import logs
from fiduciary.config import Settings
from fiduciary.errors import FiduciaryError
from fiduciary.principal import Principal
from fiduciary.runtime import Runtime, open_runtime

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory "
                                              "[env FIDUCIARY_DATA_DIR; default ./fiduciary-data]")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="FIDUCIARY_API_KEY",
    help="Credential the data is read or written as [env FIDUCIARY_API_KEY]")]


def group(help_text: str) -> typer.Typer:
    """A command group (``fiduciary GROUP COMMAND``) that shows its help when given nothing."""
    return typer.Typer(help=help_text, no_args_is_help=True)


def settings(data_dir: Path | None, **overrides: Any) -> Settings:
    """The settings from the environment; ``--data-dir`` and other options given win."""
    s = Settings()
    if data_dir is not None:
        s.data_dir = data_dir
    for k, v in overrides.items():
        if v is not None:
            setattr(s, k, v)
    return s


def fail(exc: FiduciaryError) -> typer.Exit:
    """Print a domain error (and every field it names) on stderr; raise what it returns."""
    err.print(f"[red]error:[/red] {exc.message}", highlight=False)
    for f in exc.fields:
        err.print(f"  - {f.field}: {f.reason}", highlight=False, markup=False)
    return typer.Exit(code=2)


@contextmanager
def domain_errors() -> Iterator[None]:
    """A FiduciaryError raised inside ends the command cleanly (see :func:`fail`)."""
    try:
        yield
    except FiduciaryError as exc:
        raise fail(exc) from None


@contextmanager
def runtime(where: Settings | Path | None, *, create: bool = False) -> Iterator[Runtime]:
    """Open the runtime (of a data directory, or of these settings; ``create``: initialise it),
    hand it to the block, close it; a FiduciaryError raised inside ends the command cleanly.
    The block catches first what it treats otherwise."""
    logs.configure("warning")
    with domain_errors():
        rt = open_runtime(where if isinstance(where, Settings) else settings(where),
                          create=create)
    try:
        yield rt
    except FiduciaryError as exc:
        raise fail(exc) from None
    finally:
        rt.close()


def as_principal(rt: Runtime, api_key: str | None) -> Principal:
    """The principal a data command acts as: the same decision as over HTTP."""
    if not api_key:
        err.print("[red]error:[/red] give --api-key (or FIDUCIARY_API_KEY): data commands act "
                  "as an API key's role")
        raise typer.Exit(code=2)
    with domain_errors():
        principal = rt.api_keys.authenticate(api_key)
    return principal
