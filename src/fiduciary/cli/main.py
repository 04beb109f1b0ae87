"""The ``fiduciary`` command: the root app, assembled from the feature modules' commands."""

from __future__ import annotations

import getpass
import os

import typer

from fiduciary.audit.events import RequestContext, request_context
from fiduciary.cli import (
    access,
    audit,
    compliance,
    dsr,
    incidents,
    monitor,
    privacy,
    reviews,
    ropa,
    server,
    speakup,
    training,
    vault,
)

app = typer.Typer(help="Fiduciary: customer-data vault for insurers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _main() -> None:
    # Files Fiduciary creates (database, WAL, keyring, logs, exports) are the owner's alone.
    os.umask(0o077)
    # What the CLI does is attributed to the operator running it.
    request_context.set(RequestContext(client="cli", operator=getpass.getuser()))


# In the order `fiduciary --help` lists them: the top-level commands, then the groups.
app.add_typer(server.commands)  # init, serve, demo
app.add_typer(vault.commands)  # import, export
app.add_typer(privacy.commands)  # erasure-certificate
app.add_typer(ropa.commands)  # ropa
app.add_typer(vault.datamap_app, name="datamap")
app.add_typer(vault.keys_app, name="keys")
app.add_typer(access.apikeys_app, name="apikeys")
app.add_typer(access.users_app, name="users")
app.add_typer(training.training_app, name="training")
app.add_typer(access.access_app, name="access")
app.add_typer(reviews.reviews_app, name="reviews")  # and users sync-hr|set-manager|…
app.add_typer(audit.audit_app, name="audit")
app.add_typer(dsr.dsr_app, name="dsr")
app.add_typer(dsr.consent_app, name="consent")
app.add_typer(privacy.holds_app, name="holds")
app.add_typer(privacy.retention_app, name="retention")
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(monitor.alerts_app, name="alerts")
app.add_typer(monitor.watchlist_app, name="watchlist")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(speakup.speakup_app, name="speakup")
app.add_typer(compliance.compliance_app, name="compliance")

if __name__ == "__main__":
    app()
