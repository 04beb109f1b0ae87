"""The quickstart's first command: ``serve --demo`` prints the API and console URLs and one
demo staff member per oversight role, with a password and TOTP secret that work — once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pyotp

from tests.realserver import RealServer

STAFF_LINE = re.compile(r"(\w+): username (\S+)  password (\S+)  TOTP secret ([A-Z2-7]+)")


def test_serve_demo_prints_console_users_that_sign_in(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": f"sqlite:///{data / 'fiduciary.db'}"}
    server = RealServer(data, env, "--demo", "--subjects", "5").start()
    try:
        login = httpx.get(f"{server.base}/console/login")
        assert login.status_code == 200 and "Sign in" in login.text
        printed = server.output_path.read_text()
        staff = {m[0]: m[1:] for m in STAFF_LINE.findall(printed)}
        assert f"Console: {server.base}/console/" in printed
        assert set(staff) == {"dpo", "compliance_officer", "security_analyst",
                              "ethics_officer", "claims_adjuster"}
        username, password, secret = staff["dpo"]
        r = httpx.post(f"{server.base}/v1/auth/login", json={
            "username": username, "password": password, "totp": pyotp.TOTP(secret).now()})
        assert r.status_code == 200, r.text
        me = httpx.get(f"{server.base}/v1/auth/me",
                       headers={"Authorization": f"Bearer {r.json()['token']}"}).json()
        assert me["roles"] == ["dpo"] and me["training_current"] is True
    finally:
        server.stop()
    # A second start shows no secret again: nothing kept them.
    again = RealServer(data, env, "--demo").start()
    try:
        printed = again.output_path.read_text()
    finally:
        again.stop()
    assert "were printed at the first start" in printed
    assert password not in printed and secret not in printed
