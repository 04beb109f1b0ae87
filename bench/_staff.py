"""A staff session for the benchmarks: create a trained user of a role (the operator's
``users create``, which hands out a one-time enrolment code), then, over HTTP, enrol with the
code (choosing the password, receiving the TOTP secret) and log in with password + TOTP, as a
person would."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pyotp

from fiduciary.runtime import Runtime

#: The purpose each role reads persons for in the benchmarks.
ROLE_PURPOSE = {"claims_adjuster": "claims_handling", "call_center_agent": "customer_service",
                "underwriter": "underwriting", "fraud_investigator": "fraud_prevention",
                "dpo": "legal_obligation", "service": "customer_service"}
PASSWORD = "Bench-Mark-Tangerine-42"
#: Every region of the demo data: a regional role reaches every generated customer, and the
#: region condition is still decided on every read.
REGIONS = ["northeast", "southeast", "midwest", "southwest", "west"]


@dataclass(frozen=True)
class StaffAccount:
    username: str
    enrolment_code: str


def create_staff(rt: Runtime, role: str, username: str = "bench.user") -> StaffAccount:
    """A user of ``role`` trained in every course of the catalogue (each data class open to
    the role), not yet enrolled."""
    made = rt.users.create(username, [role], REGIONS)
    assert made.enrolment_code is not None
    train_fully(rt, username)
    return StaffAccount(username, made.enrolment_code)


def train_fully(rt: Runtime, username: str) -> None:
    """Every course current, so no field is withheld for want of training."""
    for course in rt.training.catalogue.courses:
        rt.users.record_training(username, course.id, rt.clock.now().date())


def login(base_url: str, account: StaffAccount) -> str:
    """Enrol with the one-time code (setting the password), then log in with password + TOTP;
    returns the session token."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        r = http.post("/v1/auth/enrol", json={"username": account.username,
                                              "enrolment_code": account.enrolment_code,
                                              "password": PASSWORD})
        r.raise_for_status()
        totp = pyotp.TOTP(r.json()["totp_secret"])
        r = http.post("/v1/auth/login", json={"username": account.username,
                                              "password": PASSWORD, "totp": totp.now()})
        r.raise_for_status()
        return str(r.json()["token"])
