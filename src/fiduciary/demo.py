"""Realistic synthetic insurance customers (Faker) across every default collection.

Everything generated passes the default data map's validators, goes through the same importer
as customer files, and is therefore encrypted and indexed like real data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

from faker import Faker

from fiduciary.errors import FieldProblem
from fiduciary.principal import SYSTEM
from fiduciary.vault.importer import Importer, ImportReport, ParsedRow
from fiduciary.vault.service import VaultService

REGIONS = ["northeast", "southeast", "midwest", "southwest", "west"]
ADJUSTERS = ["a.jones", "m.garcia", "k.chen", "s.patel", "r.okafor"]
ICD10 = ["S82.101A", "M54.5", "J45.909", "E11.9", "I10", "S13.4XXA", "F32.9", "K35.80",
         "S72.001A", "M17.11", "S06.0X0A", "T14.90"]
PURPOSE = {"persons": "policy_administration", "policies": "policy_administration",
           "quotes": "underwriting", "vehicles": "policy_administration",
           "claims": "claims_handling", "claim_notes": "claims_handling",
           "medical_records": "claims_handling", "payment_methods": "billing",
           "beneficiaries": "policy_administration", "underwriting_answers": "underwriting"}


_EU_DEMO = ("DE", "FR", "IE", "NL", "ES", "IT")


class DemoGenerator:
    def __init__(self, seed: int | None = None) -> None:
        self.fake = Faker("en_US")
        self.rng = random.Random(seed)
        self._serial = 0
        if seed is not None:
            self.fake.seed_instance(seed)

    def _date_between(self, start_years_ago: int, end_years_ago: int) -> date:
        days = self.rng.randint(end_years_ago * 365, start_years_ago * 365)
        return date.today() - timedelta(days=days)

    def person(self) -> dict[str, Any]:
        f, r = self.fake, self.rng
        gender = r.choice(["female", "male", "female", "male", "non_binary", "undisclosed"])
        first = f.first_name_female() if gender == "female" else f.first_name_male()
        state = f.state_abbr(include_territories=False)
        last = f.last_name()
        # People's addresses are their own: a serial keeps them unique, as real ones are
        # (Faker's would repeat by the thousand in a large store).
        self._serial += 1
        # One customer in twenty lives in the EU (GDPR); drawn without the shared generator,
        # so the rest of the demo stays as it was.
        country = _EU_DEMO[self._serial // 20 % len(_EU_DEMO)] if self._serial % 20 == 0 \
            else "US"
        local = re.sub(r"[^a-z.]", "", f"{first}.{last}".lower())
        person = {
            "first_name": first,
            "last_name": last,
            "date_of_birth": self._date_between(85, 18).isoformat(),
            "gender": gender,
            "email": f"{local}.{self._serial}@{f.free_email_domain()}",
            "phone": f"+1 {r.randint(201, 989)}-{r.randint(200, 999)}-{r.randint(0, 9999):04d}",
            "address_line": f.street_address(),
            "city": f.city(),
            "postal_code": f.postcode(),
            "state": state,
            "country": country,
            "region": r.choice(REGIONS),
            "national_id": f.ssn(),
            "drivers_licence_number": f"{r.choice('ABCDEFGHJKLMNPRSTWY')}"
                                      f"{r.randint(0, 9_999_999):07d}",
            "drivers_licence_state": state,
            "passport_number": f.passport_number(),
            "occupation": f.job()[:120],
            "vip": r.random() < 0.02,
            "employee": r.random() < 0.03,
        }
        if country != "US":
            del person["state"], person["drivers_licence_state"]
        return person

    def records_for(self, subject_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Everything else an insurer holds about one person."""
        f, r = self.fake, self.rng
        for _ in range(r.randint(1, 2)):
            product = r.choice(["auto", "home", "life", "health", "travel"])
            policy_number = f"POL-{r.randint(0, 99_999_999):08d}"
            start = self._date_between(8, 0)
            yield "policies", {
                "subject_id": subject_id, "policy_number": policy_number, "product": product,
                "status": r.choice(["active", "active", "active", "lapsed", "cancelled",
                                    "expired"]),
                "start_date": start.isoformat(),
                "end_date": (start + timedelta(days=365)).isoformat(),
                "premium": f"{r.uniform(200, 4000):.2f}",
                "sum_insured": f"{r.choice([25_000, 50_000, 100_000, 250_000, 500_000])}.00",
            }
            if product == "auto":
                yield "vehicles", {
                    "subject_id": subject_id, "vin": f.vin(), "policy_number": policy_number,
                    "licence_plate": f"{r.randint(1, 9)}{f.lexify('???').upper()}"
                                     f"{r.randint(100, 999)}",
                    "make": r.choice(["Toyota", "Ford", "Honda", "Chevrolet", "Tesla", "BMW"]),
                    "model": f.word().title(), "year": r.randint(2005, 2026),
                }
            if product in ("life", "health"):
                yield "underwriting_answers", {
                    "subject_id": subject_id, "policy_number": policy_number,
                    "answered_on": start.isoformat(), "smoker": r.random() < 0.15,
                    "bmi": f"{r.uniform(18, 38):.1f}", "alcohol_units_per_week": r.randint(0, 30),
                    "medical_history": f.sentence(nb_words=12),
                }
                yield "beneficiaries", {
                    "subject_id": subject_id, "policy_number": policy_number,
                    "full_name": f.name(), "relationship": r.choice(["spouse", "child",
                                                                     "parent", "partner"]),
                    "date_of_birth": self._date_between(80, 1).isoformat(),
                    "national_id": f.ssn(), "share_percent": "100",
                }
            if r.random() < 0.4:
                claim_number = f"CLM-{r.randint(0, 99_999_999):08d}"
                closed = r.random() < 0.5
                loss = self._date_between(6, 0)
                yield "claims", {
                    "subject_id": subject_id, "claim_number": claim_number,
                    "policy_number": policy_number,
                    "status": "closed" if closed else r.choice(["open", "under_review"]),
                    "loss_date": loss.isoformat(),
                    "reported_at": f"{(loss + timedelta(days=2)).isoformat()}T09:30:00Z",
                    "closed_at": (loss + timedelta(days=90)).isoformat() if closed else None,
                    "assigned_adjuster": r.choice(ADJUSTERS),
                    "restricted": r.random() < 0.05,
                    "description": f.paragraph(nb_sentences=3),
                    "amount_claimed": f"{r.uniform(500, 40_000):.2f}",
                }
                yield "claim_notes", {
                    "subject_id": subject_id, "claim_number": claim_number,
                    "author": r.choice(ADJUSTERS), "note": f.sentence(nb_words=15),
                }
                if r.random() < 0.3:
                    codes = r.sample(ICD10, 3)
                    yield "medical_records", {
                        "subject_id": subject_id, "claim_number": claim_number,
                        "primary_icd_code": codes[0], "secondary_icd_codes": ",".join(codes[1:]),
                        "treatment": f.sentence(nb_words=10),
                        "treatment_date": (loss + timedelta(days=1)).isoformat(),
                        "provider_name": f"{f.last_name()} Medical Center",
                    }
        if r.random() < 0.5:
            yield "payment_methods", {
                "subject_id": subject_id, "kind": "card", "account_holder_name": f.name(),
                "card_number": f.credit_card_number(),
                "card_expiry": f.credit_card_expire(), "last_used_on": date.today().isoformat(),
            }
        else:
            yield "payment_methods", {
                "subject_id": subject_id, "kind": "bank_account", "account_holder_name": f.name(),
                "bank_account_number": str(r.randint(10_000_000, 9_999_999_999)),
                "routing_number": f.aba(), "iban": f.iban(),
                "last_used_on": date.today().isoformat(),
            }
        if r.random() < 0.3:
            yield "quotes", {
                "subject_id": subject_id, "quote_number": f"QTE-{r.randint(0, 99_999_999):08d}",
                "product": r.choice(["auto", "home", "life"]),
                "decision": r.choice(["accepted", "declined"]),
                "decision_date": self._date_between(3, 0).isoformat(),
                "premium_quoted": f"{r.uniform(200, 3000):.2f}",
            }


def fill(vault: VaultService, subjects: int, seed: int | None = None,
         progress: Callable[[int], None] | None = None) -> dict[str, ImportReport]:
    """Create ``subjects`` demo customers with their records; returns a report per collection."""
    gen = DemoGenerator(seed)
    importer = Importer(vault)
    problems: list[tuple[str, int, list[FieldProblem]]] = []

    def rows(collection: str, items: list[dict[str, Any]]) -> Iterator[ParsedRow]:
        for i, item in enumerate(items, start=1):
            yield i, {k: v for k, v in item.items() if v is not None}, []

    people = [gen.person() for _ in range(subjects)]
    reports = {"persons": importer.run(
        SYSTEM, "persons", rows("persons", people), PURPOSE["persons"],
        lambda line, p: problems.append(("persons", line, p)))}
    owners = reports["persons"].created_subject_ids
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for done, subject_id in enumerate(owners, start=1):
        for collection, row in gen.records_for(subject_id):
            by_collection.setdefault(collection, []).append(row)
        if progress and done % 100 == 0:
            progress(done)
    for collection, items in by_collection.items():
        def note(line: int, found: list[FieldProblem], c: str = collection) -> None:
            problems.append((c, line, found))

        reports[collection] = importer.run(SYSTEM, collection, rows(collection, items),
                                           PURPOSE[collection], note)
    if problems:
        first = problems[0]
        raise RuntimeError(f"demo data did not validate: {len(problems)} rows, first "
                           f"{first[0]} #{first[1]}: {[p.as_dict() for p in first[2]]}")
    return reports
