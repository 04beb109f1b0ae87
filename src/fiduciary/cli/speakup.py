"""CLI: the speak-up channel's case handling for the ethics officer's operator — list (with
the overdue lists), show, acknowledge, reply (the feedback the reporter reads), close — and
one round of the retaliation watch. Acts as the system, attributed to the operator running
the command (the audit trail names them); whoever runs it holds the keyring, so reads
what the ethics officer reads."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from fiduciary.cli.common import DataDir, JsonFlag, group, out, runtime
from fiduciary.principal import SYSTEM
from fiduciary.workforce.speakup import Overdue

speakup_app = group("Speak-up channel: reports, acknowledgement, feedback, the retaliation "
                    "watch.")

CaseId = Annotated[str, typer.Argument(help="The case id (speakup list)")]


def _line(case: dict[str, Any]) -> str:
    late = [f"{what} OVERDUE" for what in ("acknowledge", "feedback")
            if case[f"overdue_{what}"]]
    return "  ".join([case["id"], case["status"], f"received {case['received_on']}",
                      f"ack by {case['acknowledge_by'][:10]}",
                      f"feedback by {case['feedback_by'][:10]}", *late])


def _show(case: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print(json.dumps(case))
        return
    out.print(_line(case), highlight=False, markup=False)
    for name in ("category", "identify_as", "outcome"):
        if case.get(name):
            out.print(f"{name}: {case[name]}", highlight=False, markup=False)
    out.print(f"report:\n{case['report']}", highlight=False, markup=False)
    for m in case["thread"]:
        out.print(f"--- {m['from']}, {m['sent_on']}\n{m['text']}", highlight=False,
                  markup=False)


@speakup_app.command("list")
def speakup_list(
    overdue: Annotated[Overdue | None, typer.Option(
        help="Only open cases past this deadline")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Every case, newest first, with its deadlines and overdue flags."""
    with runtime(data_dir) as rt:
        items = rt.speakup.cases(SYSTEM, overdue)
    if json_out:
        print(json.dumps({"items": items}))
        return
    for case in items:
        out.print(_line(case), highlight=False, markup=False)
    if not items:
        out.print("no cases")


@speakup_app.command("show")
def speakup_show(case_id: CaseId, data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """A case in full: report, identity if given, thread and outcome."""
    with runtime(data_dir) as rt:
        _show(rt.speakup.show(SYSTEM, case_id), json_out)


@speakup_app.command("acknowledge")
def speakup_acknowledge(case_id: CaseId, data_dir: DataDir = None,
                        json_out: JsonFlag = False) -> None:
    """Acknowledge receipt (due 7 days from the day of the report)."""
    with runtime(data_dir) as rt:
        _show(rt.speakup.acknowledge(SYSTEM, case_id), json_out)


@speakup_app.command("reply")
def speakup_reply(
    case_id: CaseId,
    text: Annotated[str, typer.Option(help="The feedback the reporter reads (sealed)")],
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Give feedback: a message the reporter reads (due 3 months from the report)."""
    with runtime(data_dir) as rt:
        _show(rt.speakup.feedback(SYSTEM, case_id, text), json_out)


@speakup_app.command("close")
def speakup_close(
    case_id: CaseId,
    outcome: Annotated[str, typer.Option(help="What came of the report (sealed)")],
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Close the case with its outcome."""
    with runtime(data_dir) as rt:
        _show(rt.speakup.close(SYSTEM, case_id, outcome), json_out)


@speakup_app.command("watch")
def speakup_watch(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """One round of the retaliation watch over new audit events (``serve`` runs it every
    FIDUCIARY_SPEAKUP_WATCH_INTERVAL_SECONDS)."""
    with runtime(data_dir) as rt:
        run = rt.speakup_watch.run_once()
    if json_out:
        print(json.dumps({"events": run.events, "alerts": run.alerts}))
    else:
        out.print(f"{run.events} events read, {run.alerts} alerts raised")


@speakup_app.command("alerts")
def speakup_alerts(data_dir: DataDir = None, json_out: JsonFlag = False) -> None:
    """The retaliation watch's queue."""
    with runtime(data_dir) as rt:
        items = rt.speakup.alerts(SYSTEM)
    if json_out:
        print(json.dumps({"items": items}))
        return
    for a in items:
        out.print(f"{a['raised_on']}  case {a['case_id']}  {a['kind']}  {a['username']}  "
                  f"{a['action']} by {a['actor']} at {a['at']}", highlight=False, markup=False)
    if not items:
        out.print("no alerts")
