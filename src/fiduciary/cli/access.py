"""CLI: service API keys, staff users, access reviews, approvals and break-glass review
(training: ``cli/training.py``).

The CLI is the operator on the server's own host (it holds the keyring anyway): what it grants
takes effect at once, and its audit events name the operator. Proposals made through the API
are decided here too (``fiduciary access approve``)."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fiduciary.access.approvals import Approval
from fiduciary.cli.common import DataDir, JsonFlag, err, fail, group, out, runtime
from fiduciary.errors import FiduciaryError, FieldProblem, InvalidInput
from fiduciary.ids import is_id
from fiduciary.principal import SYSTEM

apikeys_app = group("Service API keys.")
users_app = group("Staff users (password + TOTP).")
access_app = group("Access reviews and break-glass review.")


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Option(help="What the key is for")] = "service",
    role: Annotated[str, typer.Option(help="Role from the policy pack")] = "service",
    scope: Annotated[list[str] | None, typer.Option(
        help="Limit to these actions (read, search, write, delete, export, import); "
             "repeatable")] = None,
    days: Annotated[int | None, typer.Option(
        help="Expire after this many days [default and maximum: FIDUCIARY_API_KEY_DEFAULT_DAYS, "
             "FIDUCIARY_API_KEY_MAX_DAYS]")] = None,
    owner: Annotated[str | None, typer.Option(
        help="The staff user who holds the key (reviewed with them, revoked when they "
             "leave) [default: nobody]")] = None,
    data_dir: DataDir = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an API key (shown once)."""
    with runtime(data_dir) as rt:
        owner_id = rt.users.get(owner).id if owner is not None else None
        key, token = rt.api_keys.create(name, role, days, scope, owner_id=owner_id)
    if json_out:
        print(json.dumps({"id": key.id, "name": key.name, "role": key.role, "api_key": token,
                          "scopes": list(key.scopes) if key.scopes else None,
                          "expires_at": key.expires_at.isoformat() if key.expires_at else None}))
    else:
        out.print(f"API key {key.id} (shown once): [bold]{token}[/bold]")


@apikeys_app.command("list")
def apikeys_list(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """List API keys (never their secrets)."""
    with runtime(data_dir) as rt:
        now = rt.clock.now()
        rows = [{"id": k.id, "name": k.name, "role": k.role, "state": k.state(now),
                 "scopes": list(k.scopes) if k.scopes else None,
                 "created_at": k.created_at.isoformat(),
                 "expires_at": k.expires_at.isoformat() if k.expires_at else None}
                for k in rt.api_keys.all()]
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("id", "name", "role", "state", "created", "expires")
    for r in rows:
        table.add_row(*(str(r[c] or "") for c in ("id", "name", "role", "state", "created_at",
                                                  "expires_at")))
    out.print(table)


@apikeys_app.command("revoke")
def apikeys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke an API key at once."""
    with runtime(data_dir) as rt:
        rt.api_keys.revoke(key_id)
    out.print(f"revoked {key_id}")


RoleOpt = Annotated[list[str], typer.Option("--role", help="Role from the policy pack; "
                                            "repeatable")]
RegionOpt = Annotated[list[str] | None, typer.Option("--region", help="Region the user "
                                                     "serves; repeatable")]


SubjectIdOpt = Annotated[str | None, typer.Option(
    "--subject-id", help="The customer record that is this user (self-access and co-worker "
    "alerts)")]
LastNameOpt = Annotated[str | None, typer.Option(
    "--last-name", help="The user's surname, kept only as a digest (same-surname alerts)")]


ManagerOpt = Annotated[str | None, typer.Option(
    "--manager", help="The username of the user's manager (reviews their access)")]
EmployeeIdOpt = Annotated[str | None, typer.Option(
    "--employee-id", help="HR's id for the user (fiduciary users sync-hr)")]


@users_app.command("create")
def users_create(username: str, role: RoleOpt, region: RegionOpt = None,
                 subject_id: SubjectIdOpt = None, last_name: LastNameOpt = None,
                 manager: ManagerOpt = None, employee_id: EmployeeIdOpt = None,
                 data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Create a staff user (in force at once); prints their one-time enrolment code, for the
    user alone: they choose a password and get their TOTP secret with POST /v1/auth/enrol."""
    unlinked: FiduciaryError | None = None
    with runtime(data_dir) as rt:
        # What can be checked without the user is checked before the user exists.
        if last_name is not None:
            rt.profiles.surname_digest(last_name)
        if subject_id is not None and not is_id(subject_id):
            raise InvalidInput("not a subject id", [FieldProblem("subject_id", "a subject id")])
        c = rt.users.create(username, role, region or [], manager=manager,
                            employee_id=employee_id)
        try:
            if subject_id is not None:
                rt.profiles.link_subject(SYSTEM, username, subject_id)
            if last_name is not None:
                rt.profiles.set_surname(SYSTEM, username, last_name)
        except FiduciaryError as exc:  # the user exists: their enrolment code still shows
            unlinked = exc
    _print_enrolment(c.user.username, list(c.user.roles), list(c.user.regions),
                     c.enrolment_code, c.enrolment_expires_at, json_out)
    if unlinked is not None:
        err.print(f"[red]the user was created, but not linked:[/red] fiduciary users "
                  f"link-subject {username} SUBJECT_ID", highlight=False)
        raise fail(unlinked)


def _print_enrolment(username: str, roles: list[str], regions: list[str], code: str | None,
                     expires: datetime | None, json_out: bool) -> None:
    doc = {"username": username, "roles": roles, "regions": regions, "enrolment_code": code,
           "enrolment_expires_at": expires.isoformat() if expires else None}
    if json_out:
        print(json.dumps(doc))
        return
    out.print(f"User {username} (roles: {', '.join(roles)}). Enrolment code, shown once, for "
              f"the user only (valid until {doc['enrolment_expires_at']}):", markup=False)
    out.print(f"  {code}", markup=False)
    out.print("  The user enrols with POST /v1/auth/enrol {username, enrolment_code, "
              "password} and then logs in.", markup=False)


@users_app.command("enrolment-code")
def users_enrolment_code(
    username: str,
    re_enrol: Annotated[bool, typer.Option(
        "--re-enrol", help="The user has enrolled: withdraw their password, TOTP and sessions "
                           "first")] = False,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Issue a user's one-time enrolment code (any earlier code stops working), e.g. for a
    user created or re-enrolled through the API once approved."""
    with runtime(data_dir) as rt:
        c = rt.users.issue_enrolment_code(username, re_enrol=re_enrol)
    _print_enrolment(c.user.username, list(c.user.roles), list(c.user.regions),
                     c.enrolment_code, c.enrolment_expires_at, json_out)


@users_app.command("list")
def users_list(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """List staff users."""
    with runtime(data_dir) as rt:
        users = rt.users.all()
    names = {u.id: u.username for u in users}
    rows = [{"username": u.username, "roles": list(u.roles), "regions": list(u.regions),
             "state": "disabled" if u.disabled_at else "active",
             "enrolled": u.enrolled,
             "mfa_enrolled": u.mfa_enrolled_at is not None,
             "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
             "manager": names.get(u.manager_id or ""), "employee_id": u.employee_id}
            for u in users]
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("username", "roles", "regions", "state", "MFA", "last login", "manager")
    for u, r in zip(users, rows, strict=True):
        table.add_row(str(r["username"]), ", ".join(u.roles), ", ".join(u.regions),
                      str(r["state"]), "yes" if r["mfa_enrolled"] else "no",
                      str(r["last_login_at"] or ""), str(r["manager"] or ""))
    out.print(table)


@users_app.command("link-subject")
def users_link_subject(
    username: str,
    subject_id: Annotated[str | None, typer.Argument(
        help="The customer record that is this user")] = None,
    unlink: Annotated[bool, typer.Option("--unlink", help="Remove the link")] = False,
    data_dir: DataDir = None,
) -> None:
    """Link a staff user to the customer record that is themselves (self-access and
    co-worker alerts)."""
    if unlink == (subject_id is not None):
        err.print("[red]error:[/red] give SUBJECT_ID, or --unlink without it")
        raise typer.Exit(code=2)
    with runtime(data_dir) as rt:
        rt.profiles.link_subject(SYSTEM, username, subject_id)
    out.print(f"{username}: linked to {subject_id}" if subject_id else f"{username}: unlinked",
              highlight=False, markup=False)


@users_app.command("disable")
def users_disable(username: str, data_dir: DataDir = None) -> None:
    """Disable a user and end their sessions."""
    with runtime(data_dir) as rt:
        rt.users.set_disabled(username, True)
    out.print(f"disabled {username}")


@users_app.command("enable")
def users_enable(username: str, data_dir: DataDir = None) -> None:
    """Enable a disabled user."""
    with runtime(data_dir) as rt:
        rt.users.set_disabled(username, False)
    out.print(f"enabled {username}")


@users_app.command("set-roles")
def users_set_roles(username: str, role: RoleOpt, data_dir: DataDir = None) -> None:
    """Replace a user's roles."""
    with runtime(data_dir) as rt:
        rt.users.set_roles(username, role)
    out.print(f"{username}: roles {', '.join(role)}")


@users_app.command("set-regions")
def users_set_regions(username: str, region: RegionOpt = None,
                      data_dir: DataDir = None) -> None:
    """Replace the regions a user serves."""
    with runtime(data_dir) as rt:
        rt.users.set_regions(username, region or [])
    out.print(f"{username}: regions {', '.join(region or []) or '(none)'}")


@users_app.command("reset-password")
def users_reset_password(username: str, data_dir: DataDir = None,
                         json_out: JsonFlag = False) -> None:
    """Issue a new one-time password; the user's sessions end."""
    with runtime(data_dir) as rt:
        password = rt.users.reset_password(username)
    if json_out:
        print(json.dumps({"username": username, "password": password}))
    else:
        out.print(f"one-time password for {username}: {password}", markup=False)


@access_app.command("review")
def access_review(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Every user's and API key's effective entitlements, state and review flags."""
    with runtime(data_dir) as rt:
        rows = rt.reviews.review()
    if json_out:
        print(json.dumps({"accounts": rows}))
        return
    table = Table("kind", "account", "state", "roles", "collections", "last used", "MFA",
                  "training", "flags")
    for r in rows:
        colls = sorted({c for e in r["entitlements"].values() for c in e["collections"]})
        table.add_row(r["kind"], r["name"], r["state"], ", ".join(r["roles"]),
                      ", ".join(colls) or "(no customer data)", str(r["last_used_at"] or "never"),
                      {True: "yes", False: "NO", None: "n/a"}[r["mfa_enrolled"]],
                      "n/a" if r["training"] is None else
                      ("current" if r["training"]["current"] else "EXPIRED"),
                      ", ".join(r["flags"]))
    out.print(table)


def _decide(account: str, decision: str, reviewer: str | None, note: str | None,
            data_dir: Path | None) -> None:
    who = reviewer or getpass.getuser()
    with runtime(data_dir) as rt:
        d = rt.reviews.decide(account, decision, who, note)
    out.print(f"{d.account_kind} {d.account_name}: {d.decision} by {d.reviewer} at "
              f"{d.at.isoformat()}")


ReviewerOpt = Annotated[str | None, typer.Option(help="Who decides [default: OS user]")]
NoteOpt = Annotated[str | None, typer.Option(help="Why")]


@access_app.command("certify")
def access_certify(account: str, reviewer: ReviewerOpt = None, note: NoteOpt = None,
                   data_dir: DataDir = None) -> None:
    """Record that ACCOUNT (username or API key id) still needs its access."""
    _decide(account, "certified", reviewer, note, data_dir)


@access_app.command("revoke")
def access_revoke(account: str, reviewer: ReviewerOpt = None, note: NoteOpt = None,
                  data_dir: DataDir = None) -> None:
    """Record that ACCOUNT no longer needs access, and disable it."""
    _decide(account, "revoked", reviewer, note, data_dir)


@access_app.command("history")
def access_history(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Every recorded review decision."""
    with runtime(data_dir) as rt:
        decisions = rt.reviews.history()
    rows = [{"kind": d.account_kind, "account": d.account_name, "id": d.account_id,
             "decision": d.decision, "reviewer": d.reviewer, "note": d.note,
             "at": d.at.isoformat()} for d in decisions]
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("at", "kind", "account", "decision", "reviewer", "note")
    for r in rows:
        table.add_row(*(str(r[k] or "") for k in ("at", "kind", "account", "decision",
                                                   "reviewer", "note")))
    out.print(table)


@access_app.command("break-glass")
def access_break_glass(pending: Annotated[bool, typer.Option(
        help="Only grants not yet reviewed")] = False,
        data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """Break-glass grants (each is marked for review)."""
    with runtime(data_dir) as rt:
        grants = rt.users.break_glass_grants(pending)
    rows = [{"id": g.id, "user_id": g.user_id, "subject_ids": g.subject_ids,
             "justification": g.justification, "created_at": g.created_at.isoformat(),
             "expires_at": g.expires_at.isoformat(),
             "review": "done" if g.reviewed_at else "pending"} for g in grants]
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("created", "user", "subjects", "expires", "justification", "review")
    for r in rows:
        table.add_row(str(r["created_at"]), str(r["user_id"]), str(len(r["subject_ids"])),
                      str(r["expires_at"]), str(r["justification"]), str(r["review"]))
    out.print(table)


def _approval_rows(items: list[Approval]) -> list[dict[str, object]]:
    return [a.as_dict() for a in items]


@access_app.command("approvals")
def access_approvals(
    status: Annotated[str | None, typer.Option(
        help="pending, approved or rejected [default: all]")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Proposals to give an account customer data (made through the API)."""
    with runtime(data_dir) as rt:
        rows = _approval_rows(rt.approvals.list(status))
    if json_out:
        print(json.dumps({"items": rows}))
        return
    table = Table("id", "kind", "target", "payload", "proposed by", "proposed", "status",
                  "decided by")
    for r in rows:
        decided = r["decided_by"]
        table.add_row(str(r["id"]), str(r["kind"]), str(r["target"]),
                      json.dumps(r["payload"]), str(r["proposed_by"]["name"]),  # type: ignore[index]
                      str(r["proposed_at"]), str(r["status"]),
                      str(decided["name"]) if isinstance(decided, dict) else "")
    out.print(table)


def _approval_decision(approval_id: str, approve: bool, note: str | None,
                       data_dir: Path | None, json_out: bool) -> None:
    with runtime(data_dir) as rt:
        decide = rt.approvals.approve if approve else rt.approvals.reject
        a = decide(SYSTEM, approval_id, note)
    if json_out:
        print(json.dumps(a.as_dict()))
        return
    out.print(f"{a.kind} {a.target}: {a.status}", markup=False)
    if approve and a.kind in ("user.create", "user.re_enrol"):
        out.print(f"The user enrols with a code from: fiduciary users enrolment-code {a.target}",
                  markup=False)


@access_app.command("approve")
def access_approve(approval_id: str, note: NoteOpt = None, data_dir: DataDir = None,
                   json_out: JsonFlag = False) -> None:
    """Approve a proposal as the operator: the change takes effect now."""
    _approval_decision(approval_id, True, note, data_dir, json_out)


@access_app.command("reject")
def access_reject(approval_id: str, note: NoteOpt = None, data_dir: DataDir = None,
                  json_out: JsonFlag = False) -> None:
    """Reject a proposal: nothing is applied (a proposed API key is revoked)."""
    _approval_decision(approval_id, False, note, data_dir, json_out)
