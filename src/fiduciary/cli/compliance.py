"""CLI: compliance posture (check, history, attestations), the evidence pack, OSCAL, the NYDFS
certification and the CCPA metrics."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fiduciary.cli.common import DataDir, JsonFlag, domain_errors, fail, group, out, runtime
from fiduciary.clock import iso
from fiduciary.compliance import oscal
from fiduciary.compliance.evidence import Period
from fiduciary.compliance.filings import render_html
from fiduciary.compliance.model import ControlResult, Status
from fiduciary.compliance.posture import summary
from fiduciary.errors import FieldProblem, InvalidInput
from fiduciary.principal import SYSTEM

compliance_app = group("Compliance: posture, attestations, evidence pack, OSCAL, filings.")


# -- posture (issue 14 items 1-2) ---------------------------------------------------------------
def _print_results(results: list[ControlResult]) -> None:
    table = Table("control", "status", "sections", "checked")
    for r in results:
        colour = {"pass": "green", "fail": "red"}.get(r.status.value, "yellow")
        table.add_row(r.control.id, f"[{colour}]{r.status.value}[/{colour}]",
                      ", ".join(r.control.sections), iso(r.checked_at))
    out.print(table)


@compliance_app.command("check")
def compliance_check(
    data_dir: DataDir = None, json_out: JsonFlag = False,
    full: Annotated[bool, typer.Option(
        "--full", help="Verify the audit trail from its first event, not only what is new "
        "since the last verified size")] = False,
) -> None:
    """Run every control of the catalogue and store the results. Exit 1 when any control
    fails (the results are printed all the same), 0 otherwise."""
    with runtime(data_dir) as rt:
        results = rt.posture.check(full_audit=full)
    if json_out:
        print(json.dumps({"controls": [r.as_json() for r in results],
                          "summary": summary(results)}))
    else:
        _print_results(results)
        out.print(summary(results))
    if any(r.status == Status.FAIL for r in results):
        raise typer.Exit(code=1)


@compliance_app.command("history")
def compliance_history(
    control: str, data_dir: DataDir = None, json_out: JsonFlag = False,
    limit: Annotated[int, typer.Option(help="Most results shown, newest first")] = 30,
) -> None:
    """A control's results, newest first."""
    with runtime(data_dir) as rt:
        results = rt.posture.history(control, limit)
    if json_out:
        print(json.dumps({"items": [r.as_json() for r in results]}))
        return
    _print_results(results)


@compliance_app.command("attest")
def compliance_attest(
    control: str,
    reference: Annotated[str, typer.Option(help="The document's reference (title, version, "
                                           "location)")],
    document_date: Annotated[str, typer.Option("--date", help="The document's date, "
                                               "YYYY-MM-DD")],
    by: Annotated[str, typer.Option("--by", help="The named person who vouches for it")],
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Record an attestation (incident response plan, risk assessment, asset inventory): the
    control passes until the document's date plus its period."""
    try:
        day = date.fromisoformat(document_date)
    except ValueError:
        raise fail(InvalidInput.from_problems(
            [FieldProblem("date", "a date YYYY-MM-DD")], "attestation")) from None
    with runtime(data_dir) as rt:
        done = rt.posture.attest(SYSTEM, control, reference, day, by)
    if json_out:
        print(json.dumps(done))
        return
    out.print(f"{done['control']}: attested by {done['attested_by']}, valid until "
              f"{done['expires_on']}")


# -- evidence pack (issue 14 item 3) -----------------------------------------------------------
@compliance_app.command("evidence")
def compliance_evidence(
    output: Annotated[Path, typer.Option("--output", help="The zip to write")],
    period: Annotated[str | None, typer.Option(
        help="FROM..TO as ISO dates, both included (default: the last full quarter)")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Write the evidence pack for a period: control results and facts, the audit events they
    rest on with inclusion proofs and signed checkpoints, RoPA, the DSR log, the breach
    register, training and review records, a signed manifest and the verifier
    (``python verify_pack.py PACK.zip --public-key HEX``)."""
    with domain_errors():
        chosen = Period.parse(period) if period is not None else None
    with runtime(data_dir) as rt:
        made = rt.evidence.pack(SYSTEM, chosen or Period.last_full_quarter(rt.clock.now()),
                                output)
    d = made.as_dict()
    if json_out:
        print(json.dumps(d))
        return
    out.print(f"evidence pack for {d['period']} written to {d['output']}: {d['files']} files, "
              f"{d['inclusion_proofs']} inclusion proofs", highlight=False)
    out.print(f"audit signing key {d['public_key']} (SHA-256 fingerprint "
              f"{d['public_key_sha256']}): the examiner verifies with "
              f"python verify_pack.py {output.name} --public-key {d['public_key']}",
              highlight=False)


# -- OSCAL, the NYDFS certification, the CCPA metrics (issue 14 items 4-5) ---------------------
def _href(target: Path, document: Path) -> str:
    """Where ``target`` is, as a link written in ``document`` (relative to its folder)."""
    return Path(os.path.relpath(target.resolve(), document.resolve().parent)).as_posix()


@compliance_app.command("oscal")
def compliance_oscal(
    output: Annotated[Path, typer.Option("--output", help="The assessment results (JSON)")],
    plan: Annotated[Path | None, typer.Option(
        "--plan", help="Also write the assessment plan the results import")] = None,
    component_definition: Annotated[Path | None, typer.Option(
        "--component-definition", help="Also write the component definition (each control "
        "and the regulation sections it serves)")] = None,
    data_dir: DataDir = None, json_out: JsonFlag = False,
) -> None:
    """Every control's latest result as OSCAL 1.1 assessment results (a check runs first if a
    control has none yet). The results carry the plan, and the plan the component definition,
    in their back-matter; --plan and --component-definition write them as files too."""
    with runtime(data_dir) as rt:
        controls = rt.posture.catalogue.controls
        results = rt.posture.latest()
        if {c.id for c in controls} - {r.control.id for r in results}:
            results = rt.posture.check()
        now = rt.clock.now()
    # The plan links to the component definition from where it is: its file, or inside the
    # results.
    component_href = (None if component_definition is None
                      else _href(component_definition, plan or output))
    plan_doc, results_doc = oscal.assessment(
        results, controls, now, plan_href=None if plan is None else _href(plan, output),
        component_href=component_href)
    written = {"output": output}
    with domain_errors():
        _write_text(output, oscal.dumps(results_doc))
        if plan is not None:
            _write_text(plan, oscal.dumps(plan_doc))
            written["plan"] = plan
        if component_definition is not None:
            _write_text(component_definition,
                        oscal.dumps(oscal.component_definition(controls, now)))
            written["component_definition"] = component_definition
    counts = summary(results)
    if json_out:
        print(json.dumps({**{k: str(v) for k, v in written.items()},
                          "controls": len(results), "summary": counts}))
        return
    for what, path in written.items():
        out.print(f"{what.replace('_', ' ')}: {path}", highlight=False)
    out.print(f"{len(results)} controls: {counts}", highlight=False)


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput.from_problems(
            [FieldProblem(str(path), f"cannot write ({exc.strerror})")], "output") from None


YearOpt = Annotated[int | None, typer.Option(
    "--year", help="The calendar year covered (default: the previous one)")]
HtmlOpt = Annotated[Path | None, typer.Option(
    "--html", help="Also write the page as self-contained HTML")]


@compliance_app.command("nydfs-certification")
def compliance_nydfs_certification(
    year: YearOpt = None, data_dir: DataDir = None, json_out: JsonFlag = False,
    html: HtmlOpt = None,
) -> None:
    """Draft the NYDFS 500.17(b) filing for a calendar year (due 15 April after it): a
    Certification of Material Compliance when every Part 500 control passed all year, otherwise
    an Acknowledgment of Noncompliance naming the failing sections. The draft is stored for
    five years and audited; the signers fill the remediation timelines and sign."""
    with runtime(data_dir) as rt:
        filing = rt.filings.draft_nydfs(SYSTEM, year)
    body = filing.body
    if html is not None:
        with domain_errors():
            _write_text(html, render_html(body))
    if json_out:
        print(json.dumps({**body, "filing": {
            k: v for k, v in filing.as_json().items() if k != "body"}}))
        return
    out.print(f"{body['title']} (draft) for {body['calendar_year']}, due {body['due']}",
              highlight=False)
    for section in body["failing_sections"]:
        out.print(f"  section {section['section']}: "
                  + ", ".join(c["id"] for c in section["controls"]), highlight=False)
    out.print(f"stored as {filing.id}, kept until {iso(filing.retain_until)}", highlight=False)


@compliance_app.command("ccpa-metrics")
def compliance_ccpa_metrics(
    year: YearOpt = None, data_dir: DataDir = None, json_out: JsonFlag = False,
    html: HtmlOpt = None,
) -> None:
    """The CCPA regs 7102 metrics of a calendar year: requests to know, delete, correct, opt
    out and limit — received, complied with in whole or in part, denied — and the median and
    mean days to respond."""
    with runtime(data_dir) as rt:
        metrics = rt.filings.ccpa_metrics(year)
    if html is not None:
        with domain_errors():
            _write_text(html, render_html(metrics))
    if json_out:
        print(json.dumps(metrics))
        return
    table = Table("request", "received", "complied (whole or part)", "denied", "pending",
                  "median days", "mean days", title=f"CCPA 7102 — {metrics['calendar_year']}")
    for key, m in metrics["requests"].items():
        table.add_row(key, str(m["received"]), str(m["complied_in_whole_or_in_part"]),
                      str(m["denied"]), str(m["pending"]),
                      *("—" if m[k] is None else str(m[k])
                        for k in ("median_days_to_respond", "mean_days_to_respond")))
    out.print(table)
