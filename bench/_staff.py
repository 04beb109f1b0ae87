"""A staff session for the benchmarks: create a trained user of a role, then log in over HTTP
(password + TOTP) and set the permanent password, as a person would."""

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


@dataclass(frozen=True)
class StaffAccount:
    username: str
    password: str
    totp_secret: str


def create_staff(rt: Runtime, role: str, username: str = "bench.user") -> StaffAccount:
    """A user of ``role`` whose required training is current (regions: all of the demo's)."""
    creds = rt.users.create(username, [role],
                            ["northeast", "southeast", "midwest", "southwest", "west"])
    for course in rt.policy.pack.settings.required_training:
        rt.users.record_training(username, course, rt.clock.now().date())
    return StaffAccount(username, creds.password, creds.totp_secret)


def login(base_url: str, account: StaffAccount) -> str:
    """Log in (password + TOTP), replace the one-time password; returns the session token."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        r = http.post("/v1/auth/login", json={
            "username": account.username, "password": account.password,
            "totp": pyotp.TOTP(account.totp_secret).now()})
        r.raise_for_status()
        token = str(r.json()["token"])
        r = http.post("/v1/auth/password", json={"current": account.password, "new": PASSWORD},
                      headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
    return token
