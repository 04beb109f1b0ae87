"""Draft notices to regulators for a personal-data breach: one per regulator obligation of the
incident, each with the content its law asks for, filled from the incident and its scope, and
explicit placeholders for what only a person can say.

Which law asks what (each form is one function below):

- GDPR Art. 33(3): (a) the nature of the breach, with the categories and approximate numbers
  of data subjects and of records; (b) the DPO's name and contact details; (c) the likely
  consequences; (d) the measures taken or proposed, including mitigation. Art. 33(1): the
  reasons for a notification after 72 hours.
  Art. 33(5): the breach register's facts, effects and remedial action. UK GDPR alike.
- NYDFS 23 NYCRR 500.17(a): the DFS portal's fields — date of determination, description,
  whether nonpublic information (500.1) was affected, the number affected by state, status;
  500.17(c)(1) and (2): the extortion payment, and the reasons for it.
- HIPAA 45 CFR 164.408: the HHS breach portal's fields — dates, number of individuals, type
  of breach, location of the information, type of PHI, safeguards, actions taken; 164.406:
  the media notice for states with more than 500 residents affected.
- NAIC Insurance Data Security Model Law (#668) s6(B): the commissioner's list.
- GLBA Safeguards Rule 16 CFR 314.4(j)(1): the FTC's notification event form.
- State breach laws: the attorney general's form — residents of that state, dates, the
  categories, the notice sent to residents.

A draft never holds a customer value: counts, plain-language categories of data
(:func:`category_names`), jurisdictions, dates and the incident's kind. The incident's title
and description are free text that may name people: they are not copied; the narrative is a
placeholder the analyst writes.

::

    draft_notices(incident, scope, obligations, dpo_contact)
        └── per obligation whose recipient is not the affected individuals
             ├── form_for(obligation) → NoticeForm (GDPR, NYDFS, HIPAA, NAIC, GLBA, state …)
             ├── fields: facts from the incident and scope; placeholders() names the rest
             └── text: the fields as a readable draft
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from fiduciary.clock import iso

#: Every field a person still has to write starts with this; :func:`placeholders` finds them.
PLACEHOLDER = "[TO COMPLETE"

#: Recipients that are people, not regulators: their notices are letters (``letters.py``).
INDIVIDUALS = frozenset({"affected individuals", "individuals", "data subjects",
                         "affected data subjects"})

#: GDPR applies to residents of the EU and EEA (ISO 3166-1 alpha-2 -> name for addresses).
EEA: dict[str, str] = {
    "AT": "Austria", "BE": "Belgium", "BG": "Bulgaria", "HR": "Croatia", "CY": "Cyprus",
    "CZ": "Czechia", "DK": "Denmark", "EE": "Estonia", "FI": "Finland", "FR": "France",
    "DE": "Germany", "GR": "Greece", "HU": "Hungary", "IE": "Ireland", "IT": "Italy",
    "LV": "Latvia", "LT": "Lithuania", "LU": "Luxembourg", "MT": "Malta",
    "NL": "Netherlands", "PL": "Poland", "PT": "Portugal", "RO": "Romania", "SK": "Slovakia",
    "SI": "Slovenia", "ES": "Spain", "SE": "Sweden", "IS": "Iceland", "LI": "Liechtenstein",
    "NO": "Norway",
}

#: Data classes of the data map as people say them, most sensitive first.
CATEGORY_NAMES: dict[str, str] = {
    "special_category": "health information",
    "government_id": "government identifiers such as Social Security, driver's license or "
                     "passport numbers",
    "financial": "financial account information such as bank account or payment card "
                 "numbers",
    "personal": "names, contact details and other personal details",
    "internal": "insurance reference information such as policy and claim numbers",
}
_OTHER_CATEGORY = "other information"

#: The incident register's kinds, in a sentence.
KIND_NAMES: dict[str, str] = {
    "unauthorized_access": "unauthorized access to personal information",
    "lost_device": "the loss of a device holding personal information",
    "ransomware": "a ransomware attack on our systems",
    "extortion": "an extortion attempt involving personal information",
    "misdirected_disclosure": "personal information sent to the wrong recipient",
    "vendor_breach": "a security incident at one of our service providers",
    "other": "a security incident involving personal information",
}

#: Classes that make information "nonpublic" under NYDFS 500.1 (identifiers, account numbers,
#: health information); names and contact details alone do not.
_NPI_CLASSES = frozenset({"government_id", "financial", "special_category"})

#: HHS breach portal: type of breach, by incident kind.
_HHS_TYPE = {
    "unauthorized_access": "Unauthorized Access/Disclosure",
    "misdirected_disclosure": "Unauthorized Access/Disclosure",
    "lost_device": "Loss",
    "ransomware": "Hacking/IT Incident",
    "extortion": "Hacking/IT Incident",
}
#: HHS breach portal: type of protected health information, by data class.
_HHS_PHI = {"personal": "Demographic", "government_id": "Demographic",
            "financial": "Financial", "special_category": "Clinical"}

_US_STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan",
    "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey",
    "NM": "New Mexico", "NY": "New York", "NC": "North Carolina", "ND": "North Dakota",
    "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania",
    "PR": "Puerto Rico", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia",
    "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}
_STATE_CODE = re.compile(r"(?<![A-Za-z])US[-_]([A-Za-z]{2})(?![A-Za-z])", re.IGNORECASE)


class NoticeForm(StrEnum):
    """The content a notice takes, by the law (and paragraph) that asks for it."""

    GDPR = "gdpr_art33"
    GDPR_REGISTER = "gdpr_art33_5"
    NYDFS = "nydfs_500_17a"
    NYDFS_EXTORTION_PAYMENT = "nydfs_500_17c1"
    NYDFS_EXTORTION_REASONS = "nydfs_500_17c2"
    HIPAA = "hipaa_hhs"
    HIPAA_MEDIA = "hipaa_media"
    NAIC = "naic_668"
    GLBA_FTC = "glba_ftc"
    STATE_AG = "state_ag"
    GENERIC = "generic"


def todo(what: str) -> str:
    """A placeholder for what only a person can say (never filled in by this module)."""
    return f"{PLACEHOLDER}: {what}]"


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PLACEHOLDER)


def placeholders(draft: Mapping[str, Any]) -> list[str]:
    """The fields of a draft a person still has to write (empty when it is ready to file)."""
    return [k for k, v in draft["fields"].items() if is_placeholder(v)]


def is_eea(jurisdiction: str) -> bool:
    return jurisdiction.upper() in EEA


def category_names(classifications: Iterable[str]) -> list[str]:
    """Data classes in plain language, most sensitive first; ``public`` is no category."""
    classes = {c for c in classifications if c != "public"}
    names = [CATEGORY_NAMES[c] for c in CATEGORY_NAMES if c in classes]
    if classes - CATEGORY_NAMES.keys():
        names.append(_OTHER_CATEGORY)
    return names


def kind_name(kind: Any) -> str:
    return KIND_NAMES.get(str(kind), KIND_NAMES["other"])


def is_for_individuals(obligation: Mapping[str, Any]) -> bool:
    return str(obligation.get("recipient", "")).strip().lower() in INDIVIDUALS


def form_for(obligation: Mapping[str, Any]) -> NoticeForm:
    """Which law's content an obligation's notice takes, from its regime, recipient and basis
    (the rows of ``default_rules.yaml``: GDPR, UK GDPR, NYDFS, NAIC, HIPAA, GLBA, US-XX)."""
    regime = str(obligation.get("regime", "")).strip().lower()
    recipient = str(obligation.get("recipient", "")).strip().lower()
    basis = str(obligation.get("basis", "")).replace(" ", "").lower()
    if recipient == "breach register":
        return NoticeForm.GDPR_REGISTER
    if "gdpr" in regime:
        return NoticeForm.GDPR
    if "nydfs" in regime or "500.17" in basis:
        if "500.17(c)(1)" in basis:
            return NoticeForm.NYDFS_EXTORTION_PAYMENT
        if "500.17(c)(2)" in basis:
            return NoticeForm.NYDFS_EXTORTION_REASONS
        return NoticeForm.NYDFS
    if "hipaa" in regime:
        return NoticeForm.HIPAA_MEDIA if recipient == "media" else NoticeForm.HIPAA
    if "naic" in regime or "commissioner" in recipient:
        return NoticeForm.NAIC
    if "glba" in regime or recipient == "ftc":
        return NoticeForm.GLBA_FTC
    if regime.startswith("us-") or "attorney general" in recipient:
        return NoticeForm.STATE_AG
    return NoticeForm.GENERIC


def state_of(obligation: Mapping[str, Any]) -> str | None:
    """The US state (two letters) an obligation is owed in: a ``US-XX`` in its jurisdiction,
    regime, rule id or recipient, a recipient that starts with the state's code ("CA attorney
    general"), or a state named in its recipient."""
    for key in ("jurisdiction", "regime", "rule_id", "recipient"):
        value = obligation.get(key)
        if isinstance(value, str):
            found = _STATE_CODE.search(value)
            if found and found.group(1).upper() in _US_STATES:
                return found.group(1).upper()
    recipient = str(obligation.get("recipient", "")).strip()
    lead = re.match(r"([A-Z]{2})\b", recipient)
    if lead and lead.group(1) in _US_STATES:
        return lead.group(1)
    # The longest name first: "West Virginia" is not "Virginia".
    for code, name in sorted(_US_STATES.items(), key=lambda item: -len(item[1])):
        if re.search(rf"\b{name}\b", recipient, re.IGNORECASE):
            return code
    return None


def draft_notices(incident: Mapping[str, Any], scope: Mapping[str, Any] | None,
                  obligations: Iterable[Mapping[str, Any]],
                  dpo_contact: str) -> list[dict[str, Any]]:
    """One draft per regulator obligation (a recipient other than the affected individuals):
    ``{"obligation_id", "regime", "recipient", "basis", "due_at", "fields", "text"}``. Facts
    come from the incident and its scope (None: not computed yet, so the numbers are
    placeholders too); what a person must write is a placeholder (:func:`placeholders`)."""
    facts = _Facts(incident, scope, dpo_contact)
    drafts = []
    for ob in obligations:
        if is_for_individuals(ob):
            continue
        form = form_for(ob)
        fields = _FORMS[form](facts, ob)
        drafts.append({
            "obligation_id": ob.get("id"),
            "regime": ob.get("regime"),
            "recipient": ob.get("recipient"),
            "basis": ob.get("basis"),
            "due_at": _when(ob.get("due_at")),
            "form": form.value,
            "fields": fields,
            "text": _text(form, incident, ob, fields),
        })
    return drafts


def _when(value: Any) -> str | None:
    if isinstance(value, datetime):
        return iso(value)
    return str(value) if value else None


class _Facts:
    """What the incident and its scope say, as a notice states it (counts, never values)."""

    def __init__(self, incident: Mapping[str, Any], scope: Mapping[str, Any] | None,
                 dpo_contact: str) -> None:
        self.incident_id = str(incident.get("id", ""))
        self.kind = str(incident.get("kind", "other"))
        self.status = str(incident.get("status", "")) or todo("status of the incident")
        self.discovered = _when(incident.get("discovered_at")) or todo("date of discovery")
        self.determined = _when(incident.get("determined_at")) or todo(
            "date the incident was determined to be a breach")
        self.paid = _when(incident.get("extortion_paid_at")) or todo(
            "date and time the extortion payment was made")
        self.dpo = dpo_contact.strip() or todo("name and contact details of the DPO")
        self.scoped = scope is not None
        scope = scope or {}
        exposure = scope.get("subjects") or {}
        self.by_exposure = {str(k): int(v) for k, v in exposure.items()}
        self.subjects = sum(self.by_exposure.values())
        self.records = int(scope.get("records") or 0)
        self.classes = [str(c) for c in scope.get("classifications") or ()]
        self.by_jurisdiction = {str(k): int(v)
                                for k, v in (scope.get("by_jurisdiction") or {}).items()}
        self.safe_harbour = bool(scope.get("safe_harbour"))

    def count(self, n: int) -> int | str:
        return n if self.scoped else todo("number (scope not yet computed)")

    def categories(self) -> list[str] | str:
        if not self.scoped:
            return todo("categories of data (scope not yet computed)")
        return category_names(self.classes)

    def residents(self, state: str | None) -> int | str:
        if state is None:
            return todo("the state this notice is for")
        return self.count(self.by_jurisdiction.get(f"US-{state}", 0))

    def us_states(self) -> dict[str, int] | str:
        if not self.scoped:
            return todo("numbers by state (scope not yet computed)")
        return {j[3:]: n for j, n in sorted(self.by_jurisdiction.items())
                if j.startswith("US-")}

    def eea_subjects(self) -> int | str:
        return self.count(sum(n for j, n in self.by_jurisdiction.items() if is_eea(j)))

    def in_country(self, code: str) -> int | str:
        return self.count(sum(n for j, n in self.by_jurisdiction.items()
                              if j == code or j.startswith(f"{code}-")))

    def states_over(self, threshold: int) -> list[str] | str:
        if not self.scoped:
            return todo("states (scope not yet computed)")
        return [j[3:] for j, n in sorted(self.by_jurisdiction.items())
                if j.startswith("US-") and n > threshold]


def _gdpr(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    uk = "uk" in str(ob.get("regime", "")).lower()
    return {
        "controller_reference": f.incident_id,
        "nature_of_breach": kind_name(f.kind),
        "description": todo("what happened, when, and how it was found (no customer data)"),
        "date_of_discovery": f.discovered,
        "date_of_awareness": f.determined,
        "categories_of_data_subjects": todo(
            "categories of data subjects, e.g. policyholders, claimants, beneficiaries"),
        "approximate_number_of_data_subjects": f.count(f.subjects),
        ("data_subjects_in_uk" if uk else "data_subjects_in_eea"):
            f.in_country("GB") if uk else f.eea_subjects(),
        "data_subjects_by_exposure": f.by_exposure if f.scoped else f.count(0),
        "categories_of_personal_data": f.categories(),
        "approximate_number_of_records": f.count(f.records),
        "only_encrypted_data_exposed": f.safe_harbour if f.scoped else f.count(0),
        "dpo_contact": f.dpo,
        "likely_consequences": todo("likely consequences for the data subjects"),
        "measures_taken_or_proposed": todo(
            "measures taken or proposed, including those to mitigate adverse effects"),
        "reasons_for_delay": todo("reasons, if notified more than 72 hours after awareness "
                                  "(Art. 33(1)); otherwise 'not applicable'"),
    }


def _gdpr_register(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    """Art. 33(5): every breach documented — its facts, effects and remedial action — whether
    notified or not (and NAIC #668 s5(D): records of every cybersecurity event)."""
    return {
        "incident_reference": f.incident_id,
        "nature_of_breach": kind_name(f.kind),
        "date_of_discovery": f.discovered,
        "date_of_determination": f.determined,
        "facts": todo("the facts of the breach (no customer data)"),
        "number_of_data_subjects": f.count(f.subjects),
        "data_subjects_by_exposure": f.by_exposure if f.scoped else f.count(0),
        "number_of_records": f.count(f.records),
        "categories_of_personal_data": f.categories(),
        "number_by_jurisdiction": (dict(sorted(f.by_jurisdiction.items()))
                                   if f.scoped else f.count(0)),
        "effects": todo("the effects of the breach on the people concerned"),
        "remedial_action": todo("the remedial action taken"),
        "notification_decisions": todo(
            "which notices were made or found not required, and why"),
    }


def _nydfs(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    npi: bool | str = bool(set(f.classes) & _NPI_CLASSES) if f.scoped else todo(
        "whether nonpublic information was affected (scope not yet computed)")
    fields: dict[str, Any] = {
        "date_of_determination": f.determined,
        "date_of_discovery": f.discovered,
        "event_type": kind_name(f.kind),
        "description": todo("description of the cybersecurity event (no customer data)"),
        "nonpublic_information_affected": npi,
        "categories_of_information": f.categories(),
        "number_affected_total": f.count(f.subjects),
        "number_affected_by_state": f.us_states(),
        "number_affected_outside_us": f.count(sum(
            n for j, n in f.by_jurisdiction.items() if not j.startswith("US")
            and j != "unknown")),
        "status": f.status,
        "remediation": todo("steps taken to contain and remediate the event"),
        "contact": f.dpo,
    }
    if f.kind in ("ransomware", "extortion"):
        fields["extortion_payment"] = todo(
            "whether an extortion payment was made (500.17(c): notice within 24 hours of "
            "payment, reasons within 30 days)")
    return fields


def _hipaa(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    over_500 = f.subjects >= 500
    return {
        "breach_start_date": todo("date the breach began"),
        "breach_end_date": todo("date the breach ended"),
        "discovery_date": f.discovered,
        "approximate_number_of_individuals": f.count(f.subjects),
        "report_timing": (todo("number of individuals (scope not yet computed)")
                          if not f.scoped else
                          "within 60 days of discovery (500 or more individuals)" if over_500
                          else "within 60 days of the end of the calendar year "
                               "(fewer than 500 individuals)"),
        "type_of_breach": _HHS_TYPE.get(f.kind) or todo("type of breach"),
        "location_of_breached_information": todo(
            "location: laptop, desktop, network server, e-mail, other portable device, "
            "electronic medical record, paper, other"),
        "business_associate_involved": (True if f.kind == "vendor_breach"
                                        else todo("whether a business associate was involved")),
        "type_of_phi": (sorted({_HHS_PHI[c] for c in f.classes if c in _HHS_PHI})
                        if f.scoped else f.count(0)),
        "brief_description": todo("brief description of the breach (no customer data)"),
        "safeguards_in_place": todo("safeguards in place before the breach"),
        "actions_taken": todo("actions taken in response"),
        "individual_notice_date": todo("date notice was sent to individuals"),
        "contact": f.dpo,
    }


def _hipaa_media(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    """45 CFR 164.406: prominent media outlets of each state with more than 500 residents
    affected, with the content of the individual notice (164.404(c))."""
    return {
        "states_over_500_residents": f.states_over(500),
        "number_affected_by_state": f.us_states(),
        "description": todo("what happened, with the date of the breach (no customer data)"),
        "date_of_discovery": f.discovered,
        "types_of_information": f.categories(),
        "steps_individuals_should_take": todo(
            "steps individuals should take to protect themselves"),
        "what_we_are_doing": todo("what we are doing to investigate, mitigate and protect"),
        "contact_procedures": todo(
            "toll-free number, e-mail address, website or postal address for questions"),
    }


def _naic(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    state = state_of(ob)
    return {
        "state": state or todo("the state of this commissioner"),
        "date_of_event": todo("date of the cybersecurity event"),
        "date_of_discovery": f.discovered,
        "how_discovered": todo("how the event was discovered"),
        "information_recovered": todo("whether lost, stolen or breached information was "
                                      "recovered, and how"),
        "source_of_event": todo("identity of the source of the event"),
        "law_enforcement_notified": todo("whether law enforcement or regulators were "
                                         "notified, and when"),
        "event_type": kind_name(f.kind),
        "categories_of_information": f.categories(),
        "period_systems_compromised": todo("period during which systems were compromised"),
        "consumers_affected_in_state": f.residents(state),
        "consumers_affected_total": f.count(f.subjects),
        "results_of_internal_review": todo("results of any internal review"),
        "remediation": todo("efforts being undertaken to remediate the situation"),
        "notice_to_consumers": todo("a copy of the notice sent to consumers"),
        "contact": f.dpo,
    }


def _state_ag(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    state = state_of(ob)
    return {
        "state": state or todo("the state of this attorney general"),
        "residents_affected": f.residents(state),
        "total_affected": f.count(f.subjects),
        "event_type": kind_name(f.kind),
        "date_of_breach": todo("date or date range of the breach"),
        "date_of_discovery": f.discovered,
        "categories_of_information": f.categories(),
        "description": todo("description of the breach (no customer data)"),
        "notice_to_residents_date": todo("date notice was or will be sent to residents"),
        "notice_to_residents_sample": todo("a sample of the letter sent to residents"),
        "services_offered": todo("identity theft prevention services offered, if any"),
        "contact": f.dpo,
    }


def _nydfs_extortion_payment(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    """500.17(c)(1): notice of an extortion payment, within 24 hours of paying."""
    return {
        "incident_reference": f.incident_id,
        "event_type": kind_name(f.kind),
        "date_of_payment": f.paid,
        "payment_details": todo("amount, form and recipient of the payment"),
        "contact": f.dpo,
    }


def _nydfs_extortion_reasons(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    """500.17(c)(2): within 30 days, why paying was necessary and what was tried first."""
    return {
        "incident_reference": f.incident_id,
        "date_of_payment": f.paid,
        "reasons_payment_was_necessary": todo("why the payment was necessary"),
        "alternatives_considered": todo("the alternatives to payment considered"),
        "diligence_to_find_alternatives": todo("the diligence performed to find alternatives"),
        "diligence_to_comply": todo("the diligence performed to comply with applicable rules "
                                    "and regulations, including OFAC sanctions"),
        "contact": f.dpo,
    }


def _glba_ftc(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    """16 CFR 314.4(j)(1): the FTC's notification event form."""
    return {
        "institution_contact": f.dpo,
        "types_of_information": f.categories(),
        "date_of_event": todo("date or date range of the event, if it can be determined"),
        "date_of_discovery": f.discovered,
        "number_of_consumers_affected": f.count(f.subjects),
        "description": todo("general description of the event (no customer data)"),
        "law_enforcement_delay": todo("whether a law enforcement official has asked in "
                                      "writing for a delay of public notice"),
    }


def _generic(f: _Facts, ob: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event_type": kind_name(f.kind),
        "date_of_discovery": f.discovered,
        "date_of_determination": f.determined,
        "description": todo("description of the breach (no customer data)"),
        "categories_of_information": f.categories(),
        "number_affected_total": f.count(f.subjects),
        "number_affected_by_jurisdiction": (dict(sorted(f.by_jurisdiction.items()))
                                            if f.scoped else f.count(0)),
        "approximate_number_of_records": f.count(f.records),
        "measures_taken": todo("measures taken or proposed"),
        "contact": f.dpo,
    }


_FORMS: dict[NoticeForm, Callable[[_Facts, Mapping[str, Any]], dict[str, Any]]] = {
    NoticeForm.GDPR: _gdpr, NoticeForm.GDPR_REGISTER: _gdpr_register,
    NoticeForm.NYDFS: _nydfs, NoticeForm.NYDFS_EXTORTION_PAYMENT: _nydfs_extortion_payment,
    NoticeForm.NYDFS_EXTORTION_REASONS: _nydfs_extortion_reasons,
    NoticeForm.HIPAA: _hipaa, NoticeForm.HIPAA_MEDIA: _hipaa_media, NoticeForm.NAIC: _naic,
    NoticeForm.GLBA_FTC: _glba_ftc, NoticeForm.STATE_AG: _state_ag,
    NoticeForm.GENERIC: _generic,
}

_TITLES = {
    NoticeForm.GDPR: "Notification of a personal data breach (Art. 33)",
    NoticeForm.GDPR_REGISTER: "Breach register entry (GDPR Art. 33(5))",
    NoticeForm.NYDFS: "Notice of cybersecurity incident (23 NYCRR 500.17(a))",
    NoticeForm.NYDFS_EXTORTION_PAYMENT: "Notice of extortion payment (23 NYCRR 500.17(c)(1))",
    NoticeForm.NYDFS_EXTORTION_REASONS: "Reasons for extortion payment (23 NYCRR 500.17(c)(2))",
    NoticeForm.HIPAA: "Breach of unsecured protected health information (45 CFR 164.408)",
    NoticeForm.HIPAA_MEDIA: "Media notice of breach (45 CFR 164.406)",
    NoticeForm.NAIC: "Notification of a cybersecurity event (Insurance Data Security Law)",
    NoticeForm.GLBA_FTC: "Notification event (16 CFR 314.4(j))",
    NoticeForm.STATE_AG: "Notice of security breach",
    NoticeForm.GENERIC: "Notice of security breach",
}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) or "none"
    return str(value)


def _text(form: NoticeForm, incident: Mapping[str, Any], ob: Mapping[str, Any],
          fields: Mapping[str, Any]) -> str:
    lines = [f"DRAFT (not filed): {_TITLES[form]}",
             f"To: {ob.get('recipient')}",
             f"Basis: {ob.get('basis')}",
             f"Due: {_when(ob.get('due_at')) or 'no fixed deadline'}",
             f"Incident reference: {incident.get('id')}",
             ""]
    for key, value in fields.items():
        lines.append(f"{key.replace('_', ' ').capitalize()}: {_show(value)}")
    return "\n".join(lines) + "\n"
