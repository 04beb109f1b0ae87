"""Breach notification letters to the affected people (GDPR Art. 34, Cal. Civ. Code 1798.82,
the other US state breach laws), rendered in batches as HTML and PDF.

Each person's name and postal address are read through the vault, for purpose
``legal_obligation``, as the principal who runs the batch: the read is permissioned and
audited like any other, and a principal the policy refuses gets the vault's refusal (the
privacy office and the operator may; a security analyst may not). A letter names the
*categories* of data involved (:func:`fiduciary.incidents.notices.category_names`) and never
any value but the addressee's own name and address. What the letter says about the incident
is written and approved by a person (``incident["letter"]``, :class:`LetterText`): nothing is
invented, and a batch that lacks a text its letters need is refused before any data is read.

Files follow the rules of access packages (``privacy/access_package.py``): one directory per
batch (0700), one pair of files per person named by subject id (0600), each sealed
(AES-256-GCM) under that person's own data key — ciphertext on disk and in backups, unreadable
once the person is erased — and opened only through :meth:`LetterService.open_letter`, which
is audited. The manifest holds ids, jurisdictions, templates, reason codes and digests: no
name, address or e-mail address.

::

    render_batch(principal, incident, affected, batch_id)
      ├── permission (incidents:manage), ids, texts the letters need   → refused: nothing read
      ├── per person: vault.list_subject_records(principal, sid, "legal_obligation")
      │     ├── refused by the policy          → the vault's error; the batch is removed
      │     ├── erased / no persons record / no postal address → skipped, with a reason
      │     └── template_for(jurisdiction) → Jinja2 (autoescaped) → HTML → WeasyPrint → PDF
      │           → sealed under the person's key
      │           → out_dir/<incident>/<batch>/<subject>.html.sealed, <subject>.pdf.sealed
      ├── manifest.json (0600, no personal data)
      └── audit: incident.letters_rendered
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import jinja2

from fiduciary.audit.events import AuditLog
from fiduciary.clock import Clock, iso
from fiduciary.crypto.aead import DecryptionError
from fiduciary.errors import (
    FieldProblem,
    Forbidden,
    Gone,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    WorkflowConflict,
)
from fiduciary.ids import is_id
from fiduciary.incidents.notices import EEA, category_names, is_eea, kind_name
from fiduciary.principal import Permission, Principal, Scope, require_permission, require_training
from fiduciary.vault.records import Record
from fiduciary.vault.service import VaultService

FORMAT = "fiduciary-letter-batch/1"
#: The purpose a breach notification serves (GDPR Art. 6(1)(c), state breach laws).
LETTER_PURPOSE = "legal_obligation"
MANIFEST = "manifest.json"
_FILE = "{subject_id}.{fmt}.sealed"
#: The associated data's "collection": a letter can never pass for a record's field.
_AD_COLLECTION = "_incident_letter"
_MEDIA = {"html": "text/html; charset=utf-8", "pdf": "application/pdf"}
#: WorkflowConflict reason: a batch id renders once.
BATCH_EXISTS = "batch_exists"

#: What a letter needs of the persons collection: whom to address, and where.
NAME_FIELDS = ("first_name", "last_name")
ADDRESS_FIELDS = ("address_line", "city", "postal_code", "state", "country")
_CONTACT_FIELDS = NAME_FIELDS + ADDRESS_FIELDS

#: The nationwide credit reporting agencies (Cal. Civ. Code 1798.82(d)(2)(G)). Check them
#: against the agencies' own pages before a mailing: they are printed on every letter.
CREDIT_BUREAUS = (
    {"name": "Equifax", "phone": "1-800-685-1111",
     "address": "P.O. Box 105788, Atlanta, GA 30348", "web": "www.equifax.com"},
    {"name": "Experian", "phone": "1-888-397-3742",
     "address": "P.O. Box 9554, Allen, TX 75013", "web": "www.experian.com"},
    {"name": "TransUnion", "phone": "1-888-909-8872",
     "address": "P.O. Box 2000, Chester, PA 19016", "web": "www.transunion.com"},
)

#: States whose law forbids telling residents the nature of the breach (M.G.L. c. 93H s3(b)).
_NO_DESCRIPTION = frozenset({"US-MA"})
#: What a state's law adds to the letter to its residents.
_STATE_NOTES = {
    "US-MA": ("Under Massachusetts law, you have the right to obtain any police report filed "
              "about this incident. If you are the victim of identity theft, you also have the "
              "right to file a police report and obtain a copy of it. Placing, lifting or "
              "removing a security freeze is free of charge.",),
}

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


class LetterTemplate(StrEnum):
    """Templates in ``incidents/templates/`` (``<value>.html.j2``)."""

    US = "letter_us"
    US_CA = "letter_us_ca"
    EU = "letter_eu"


class SkipReason(StrEnum):
    """Why a person in the batch got no letter (the manifest's reason codes)."""

    NO_PERSONS_RECORD = "no_persons_record"
    NO_CONTACT_ADDRESS = "no_contact_address"
    SUBJECT_ERASED = "subject_erased"


#: Countries outside the EEA whose law asks for the GDPR Art. 34 letter (UK GDPR Art. 34).
_GDPR_ALIKE = {"GB": "United Kingdom"}


def template_for(jurisdiction: str) -> LetterTemplate:
    """California's own letter, the GDPR letter for the EU/EEA and the UK, the US letter
    otherwise (every other state and country)."""
    code = jurisdiction.upper()
    if code == "US-CA":
        return LetterTemplate.US_CA
    if is_eea(code) or code in _GDPR_ALIKE:
        return LetterTemplate.EU
    return LetterTemplate.US


@dataclass(frozen=True)
class LetterText:
    """What the letters say about the incident, written and approved by a person
    (``incident["letter"]``); plain text, paragraphs separated by blank lines.

    - ``what_happened``, ``what_we_are_doing``: every letter.
    - ``likely_consequences``: letters to the EU/EEA and the UK (GDPR Art. 34(2), 33(3)(c)).
    - ``law_enforcement_delay`` (true or false): letters to California (1798.82(d)(2)(E)).
    - ``services_offer``: letters to California when a government identifier was involved
      (1798.82(d)(2)(H)); an empty text records that none is offered.
    - ``what_you_can_do``, ``breach_period`` (e.g. "between March 2 and March 9, 2026"):
      optional.
    """

    what_happened: str
    what_we_are_doing: str
    likely_consequences: str | None = None
    law_enforcement_delay: bool | None = None
    services_offer: str | None = None
    what_you_can_do: str | None = None
    breach_period: str | None = None

    @classmethod
    def from_incident(cls, incident: Mapping[str, Any],
                      affected: list[tuple[str, str, list[str]]]) -> LetterText:
        raw = incident.get("letter")
        given: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        problems: list[FieldProblem] = []

        def text(key: str, required: bool) -> str | None:
            value = given.get(key)
            if value is None or (isinstance(value, str) and not value.strip()
                                 and key != "services_offer"):
                if required:
                    problems.append(FieldProblem(f"letter.{key}", "required"))
                return None
            if not isinstance(value, str):
                problems.append(FieldProblem(f"letter.{key}", "expected text"))
                return None
            return value

        ca = [classes for _, j, classes in affected if template_for(j) is LetterTemplate.US_CA]
        eu = any(template_for(j) is LetterTemplate.EU for _, j, _ in affected)
        delay = given.get("law_enforcement_delay")
        if delay is not None and not isinstance(delay, bool):
            problems.append(FieldProblem("letter.law_enforcement_delay", "true or false"))
            delay = None
        elif delay is None and ca:
            problems.append(FieldProblem("letter.law_enforcement_delay",
                                         "required for letters to California"))
        out = cls(
            what_happened=text("what_happened", True) or "",
            what_we_are_doing=text("what_we_are_doing", True) or "",
            likely_consequences=text("likely_consequences", eu),
            law_enforcement_delay=delay,
            services_offer=text("services_offer", any("government_id" in c for c in ca)),
            what_you_can_do=text("what_you_can_do", False),
            breach_period=text("breach_period", False),
        )
        if problems:
            raise InvalidInput.from_problems(problems, what="letter texts")
        return out


def _paragraphs(value: str | None) -> list[str]:
    if not value:
        return []
    return [" ".join(p.split()) for p in value.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fiduciary.incidents", "templates"),
        # Every template escapes, whatever its name: the letters carry customers' names.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                            default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["paragraphs"] = _paragraphs
    return env


def refusing_url_fetcher() -> Any:
    """A WeasyPrint URL fetcher that fetches nothing: no file, data or network URL is read
    while a letter renders (every one is refused before it is opened)."""
    from weasyprint.urls import URLFetcher  # type: ignore[import-untyped]

    return URLFetcher(allowed_protocols=(), allow_redirects=False)


def render_pdf(html: str) -> bytes:
    """A letter's HTML as PDF, fetching nothing."""
    import weasyprint  # type: ignore[import-untyped]  # (slow to import: only when rendering)

    pdf = weasyprint.HTML(string=html, base_url=None,
                          url_fetcher=refusing_url_fetcher()).write_pdf()
    assert isinstance(pdf, bytes)
    return pdf


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        except ValueError:
            return None
    return None


def _spoken(day: date, eu: bool) -> str:
    month = _MONTHS[day.month - 1]
    return f"{day.day} {month} {day.year}" if eu else f"{month} {day.day}, {day.year}"


def _text_of(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return " ".join(str(value).split()) if value is not None else ""


def _addressee(data: Mapping[str, Any], eu: bool) -> dict[str, Any] | None:
    """Name and postal address lines, or None without a usable postal address."""
    street, city, postal = (_text_of(data, k) for k in ("address_line", "city", "postal_code"))
    if not street or not (city or postal):
        return None
    name = " ".join(p for p in (_text_of(data, "first_name"), _text_of(data, "last_name")) if p)
    state, country = _text_of(data, "state"), _text_of(data, "country").upper()
    if eu:
        lines = [street, " ".join(p for p in (postal, city) if p),
                 EEA.get(country) or _GDPR_ALIKE.get(country, country)]
    else:
        lines = [street, " ".join(p for p in (f"{city}," if city else "", state, postal) if p)]
        if country and country != "US":
            lines.append(country)
    return {"name": name, "lines": [line for line in (name, *lines) if line],
            "greeting": name or "Customer"}


class LetterService:
    """Renders the letters of an incident. ``org``: the insurer as the letters name it —
    ``name``, ``address``, ``phone``, ``email``, ``dpo`` — over the data map's controller."""

    def __init__(self, vault: VaultService, audit: AuditLog, clock: Clock, out_dir: Path,
                 org: dict[str, str] | None = None) -> None:
        self.vault = vault
        self.audit = audit
        self.clock = clock
        self.out_dir = out_dir
        controller = vault.datamap.controller
        self.org = {"name": controller.get("name", ""), "address": controller.get("address", ""),
                    "phone": "", "email": controller.get("contact", ""),
                    "dpo": controller.get("dpo", "")} | dict(org or {})
        self._env = _environment()

    # -- rendering ----------------------------------------------------------------------------
    def render_batch(self, principal: Principal, incident: dict[str, Any],
                     affected: list[tuple[str, str, list[str]]], batch_id: str,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Render one letter per affected person ``(subject_id, jurisdiction,
        classifications)``; ``progress(done, total)`` after each. Returns the manifest, with
        its ``path``. Refused (nothing read, nothing written) without ``incidents:manage``,
        with a bad id, or without a text the letters need; a refusal by the vault part-way
        removes what the batch wrote and re-raises."""
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=Scope.READ)
        require_training(principal)
        incident_id = str(incident.get("id", ""))
        rows = self._rows(affected)
        self._check_ids(incident_id, batch_id)
        text = LetterText.from_incident(incident, rows)
        self._check_org(rows)
        folder = self._batch_dir(incident_id, batch_id)
        for path in (self.out_dir, self.out_dir / incident_id):
            path.mkdir(exist_ok=True, mode=0o700)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            raise WorkflowConflict(f"letter batch {batch_id} was already rendered",
                                   reason=BATCH_EXISTS) from None
        now = self.clock.now()
        letters: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        try:
            for done, (subject_id, jurisdiction, classes) in enumerate(rows, 1):
                outcome = self._letter(principal, incident, text, folder, batch_id, now,
                                       subject_id, jurisdiction, classes)
                (letters if "files" in outcome else skipped).append(outcome)
                if progress is not None:
                    progress(done, len(rows))
            manifest = self._manifest(incident_id, batch_id, now, letters, skipped)
            body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
            path = folder / MANIFEST
            _write_private(path, body)
            self.audit.append_committed(self.audit.event(
                principal, "incident.letters_rendered",
                subject_ids=[entry["subject_id"] for entry in letters],
                purpose=LETTER_PURPOSE,
                details={"incident_id": incident_id, "batch_id": batch_id,
                         "letters": len(letters), "skipped": len(skipped),
                         "manifest_sha256": hashlib.sha256(body).hexdigest()}))
        except BaseException:
            # A refusal (or any failure) leaves no partial batch behind.
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return manifest | {"path": str(path)}

    def _letter(self, principal: Principal, incident: Mapping[str, Any], text: LetterText,
                folder: Path, batch_id: str, now: datetime, subject_id: str,
                jurisdiction: str, classes: list[str]) -> dict[str, Any]:
        template = template_for(jurisdiction)
        entry: dict[str, Any] = {"subject_id": subject_id, "jurisdiction": jurisdiction}
        erased = entry | {"reason": SkipReason.SUBJECT_ERASED.value, "email_on_file": False}
        try:
            found = self.vault.list_subject_records(principal, subject_id, LETTER_PURPOSE)
        except Gone:
            return erased
        person = self._person(principal, found)
        if person is None:
            return entry | {"reason": SkipReason.NO_PERSONS_RECORD.value,
                            "email_on_file": False}
        addressee = _addressee(person.data, template is LetterTemplate.EU)
        if addressee is None:
            # The e-mail is an alternative channel for a person; the manifest only says so.
            return entry | {"reason": SkipReason.NO_CONTACT_ADDRESS.value,
                            "email_on_file": bool(_text_of(person.data, "email"))}
        letter_id = str(uuid.uuid4())
        html = self._html(template, incident, text, now, letter_id, addressee,
                          jurisdiction, classes)
        try:
            cipher = self.vault.keys.cipher_for(subject_id)
        except Gone:  # erased since the read: nothing of theirs is written
            return erased
        files = []
        for fmt, content in (("html", html.encode()), ("pdf", render_pdf(html))):
            blob = cipher.encrypt(_AD_COLLECTION, batch_id, fmt, content)
            path = folder / _FILE.format(subject_id=subject_id, fmt=fmt)
            _write_private(path, blob)
            files.append({"format": fmt, "name": path.name,
                          "sha256": hashlib.sha256(blob).hexdigest()})
        return entry | {"letter_id": letter_id, "template": template.value,
                        "classifications": sorted(set(classes)), "files": files}

    def _person(self, principal: Principal, found: list[Record]) -> Record | None:
        """The persons record to address (the latest with a postal address). Contact fields
        the policy withholds or masks are a refusal, not a missing address."""
        persons = sorted((r for r in found if r.collection == "persons"),
                         key=lambda r: (bool(_text_of(r.data, "address_line")), r.updated_at),
                         reverse=True)
        if not persons:
            # Nothing came back: no record, or a role no grant lets read one for this purpose.
            self.require_contact_read(principal)
            return None
        person = persons[0]
        refused = [w for w in person.withheld if w.field in _CONTACT_FIELDS] + [
            FieldProblem(n, "masked") for n in person.masked if n in _CONTACT_FIELDS]
        if refused:
            raise Forbidden("the contact fields a letter needs are not permitted in clear for "
                            f"purpose {LETTER_PURPOSE!r}", reason=refused[0].reason,
                            fields=refused)
        return person

    def _html(self, template: LetterTemplate, incident: Mapping[str, Any], text: LetterText,
              now: datetime, letter_id: str, addressee: dict[str, Any], jurisdiction: str,
              classes: list[str]) -> str:
        eu = template is LetterTemplate.EU
        discovered = _day(incident.get("discovered_at"))
        return self._env.get_template(f"{template.value}.html.j2").render(
            title="Notice of Data Breach" if not eu
            else "Personal data breach: information for you",
            page_size="A4" if eu else "letter",
            org=self.org,
            letter_date=_spoken(now.date(), eu),
            reference=letter_id,
            addressee=addressee,
            kind=kind_name(incident.get("kind")),
            discovered_on=_spoken(discovered, eu) if discovered else "a date we are confirming",
            text=text,
            categories=category_names(classes),
            involves={"government_id": "government_id" in classes,
                      "financial": "financial" in classes,
                      "health": "special_category" in classes},
            bureaus=CREDIT_BUREAUS,
            describe_incident=jurisdiction.upper() not in _NO_DESCRIPTION,
            state_notes=_STATE_NOTES.get(jurisdiction.upper(), ()),
        )

    @staticmethod
    def _manifest(incident_id: str, batch_id: str, now: datetime,
                  letters: list[dict[str, Any]], skipped: list[dict[str, Any]]
                  ) -> dict[str, Any]:
        by_template: dict[str, int] = {}
        for entry in letters:
            by_template[entry["template"]] = by_template.get(entry["template"], 0) + 1
        by_reason: dict[str, int] = {}
        for entry in skipped:
            by_reason[entry["reason"]] = by_reason.get(entry["reason"], 0) + 1
        return {
            "format": FORMAT,
            "batch_id": batch_id,
            "incident_id": incident_id,
            "created_at": iso(now),
            "sealed": "each file AES-256-GCM under its subject's data key; "
                      "opened by LetterService.open_letter",
            "letters": letters,
            "skipped": skipped,
            "totals": {"affected": len(letters) + len(skipped), "letters": len(letters),
                       "skipped": len(skipped), "by_template": dict(sorted(by_template.items())),
                       "skipped_by_reason": dict(sorted(by_reason.items())),
                       "email_alternative": sum(1 for s in skipped if s["email_on_file"])},
        }

    # -- reading and erasure ------------------------------------------------------------------
    def open_letter(self, principal: Principal, incident_id: str, batch_id: str,
                    subject_id: str, fmt: str) -> tuple[bytes, str]:
        """One rendered letter, opened, and its media type — for printing or mailing. Only
        for whoever may run incidents and read a person's name and address for
        ``legal_obligation``; each opening audited. 410 once the person is erased."""
        require_permission(principal, Permission.INCIDENTS_MANAGE, scope=Scope.READ)
        require_training(principal)
        self.require_contact_read(principal)
        if fmt not in _MEDIA:
            raise InvalidInput("format is html or pdf", [FieldProblem("format", "html|pdf")])
        self._check_ids(incident_id, batch_id)
        if not is_id(subject_id):
            raise InvalidInput("not a subject id", [FieldProblem("subject_id", "a uuid")])
        cipher = self.vault.keys.cipher_for(subject_id)  # Gone (410) after an erasure
        path = self._batch_dir(incident_id, batch_id) / _FILE.format(subject_id=subject_id,
                                                                      fmt=fmt)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise NotFound("no such letter in this batch", code="letter_not_found") from None
        try:
            content = cipher.decrypt(_AD_COLLECTION, batch_id, fmt, blob)
        except DecryptionError:
            raise IntegrityFailure(f"letter of batch {batch_id} failed its integrity check"
                                   ) from None
        self.audit.append_committed(self.audit.event(
            principal, "incident.letter_opened", subject_ids=[subject_id],
            purpose=LETTER_PURPOSE,
            details={"incident_id": incident_id, "batch_id": batch_id, "format": fmt}))
        return content, _MEDIA[fmt]

    def delete_for(self, subject_id: str) -> int:
        """Remove a person's letters from every batch (an erasure may: sealed under the
        erased key, they are unreadable already)."""
        if not is_id(subject_id) or not self.out_dir.is_dir():
            return 0
        gone = 0
        for fmt in _MEDIA:
            for path in self.out_dir.glob(f"*/*/{_FILE.format(subject_id=subject_id, fmt=fmt)}"):
                path.unlink(missing_ok=True)
                gone += 1
        return gone

    # -- checks -------------------------------------------------------------------------------
    def require_contact_read(self, principal: Principal) -> None:
        """The policy's answer, before any record: may this principal see a person's name and
        address in clear for ``legal_obligation`` at all? (Conditions on the record are the
        vault's to check as it reads.)"""
        decisions = self.vault.policy.precheck(principal, "read", self.vault.collection(
            "persons"), LETTER_PURPOSE, _CONTACT_FIELDS)
        refused = [FieldProblem(n, str(d.reason) if d.masking is None else "masked")
                   for n, d in decisions.items() if d.masking != "clear"]
        if refused:
            raise Forbidden("not permitted to read the contact fields a letter needs for "
                            f"purpose {LETTER_PURPOSE!r}", reason=refused[0].reason,
                            fields=refused)

    #: The name ``batches.py`` calls it by (to move to the public one).
    _require_contact_read = require_contact_read

    def _check_org(self, rows: Iterable[tuple[str, str, list[str]]]) -> None:
        problems = []
        if not self.org.get("name"):
            problems.append(FieldProblem("org.name", "required"))
        if any(template_for(j) is LetterTemplate.EU for _, j, _ in rows) and not (
                self.org.get("dpo")):
            problems.append(FieldProblem("org.dpo", "required for GDPR letters"))
        if problems:
            raise InvalidInput.from_problems(problems, what="letter settings")

    @staticmethod
    def _check_ids(incident_id: str, batch_id: str) -> None:
        # Both name directories: only ids, never a path.
        problems = [FieldProblem(name, "a uuid") for name, value in
                    (("incident_id", incident_id), ("batch_id", batch_id)) if not is_id(value)]
        if problems:
            raise InvalidInput.from_problems(problems)

    @staticmethod
    def _rows(affected: Any) -> list[tuple[str, str, list[str]]]:
        problems: list[FieldProblem] = []
        rows: list[tuple[str, str, list[str]]] = []
        seen: set[str] = set()
        for i, row in enumerate(affected if isinstance(affected, list | tuple) else ()):
            where = f"affected[{i}]"
            if not (isinstance(row, list | tuple) and len(row) == 3):
                problems.append(FieldProblem(where, "(subject_id, jurisdiction, "
                                                    "classifications)"))
                continue
            sid, jurisdiction, classes = row
            if isinstance(classes, str):
                classes = classes.split()
            if not is_id(sid):
                problems.append(FieldProblem(f"{where}.subject_id", "a uuid"))
            elif sid in seen:
                problems.append(FieldProblem(f"{where}.subject_id", "listed twice"))
            elif not isinstance(jurisdiction, str) or not (
                    isinstance(classes, list | tuple)
                    and all(isinstance(c, str) for c in classes)):
                problems.append(FieldProblem(where, "a jurisdiction and a list of data classes"))
            else:
                seen.add(sid)
                rows.append((sid, jurisdiction, list(classes)))
        if not isinstance(affected, list | tuple):
            problems.append(FieldProblem("affected", "a list"))
        if problems:
            raise InvalidInput.from_problems(problems, what="affected people")
        return rows

    def _batch_dir(self, incident_id: str, batch_id: str) -> Path:
        return self.out_dir / incident_id / batch_id


def _write_private(path: Path, blob: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
