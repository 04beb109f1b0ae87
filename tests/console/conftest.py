"""The browser harness: Debian's Chromium driven by Playwright (sync API, headless, never a
downloaded browser) against a real ``fiduciary serve`` on a free loopback port.

One server per test module and backend (starting one costs seconds; the journeys of a module
share it, each with its own users so one journey's TOTP code or lockout never meets another's);
a fresh browser context (no cookies) per test; screenshots in a per-test directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from fiduciary.config import Settings
from fiduciary.runtime import open_runtime
from tests.conftest import BACKENDS, STRONG
from tests.pgserver import PostgresServer
from tests.realserver import RealServer, cli

CHROMIUM = Path(os.environ.get("FIDUCIARY_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Where ``FIDUCIARY_TEST_SCREENSHOTS`` is unset, screenshots stay in the test's tmp_path.
SCREENSHOTS_ENV = "FIDUCIARY_TEST_SCREENSHOTS"


@dataclass
class StaffLogin:
    """A staff user enrolled before the server started: what they type to sign in."""

    username: str
    password: str
    totp_secret: str

    def totp(self) -> str:
        return pyotp.TOTP(self.totp_secret).now()


@dataclass
class Console:
    """A running server, its data directory and environment, and its enrolled staff."""

    base: str
    backend: str
    data: Path
    env: dict[str, str]
    server: RealServer
    staff: dict[str, StaffLogin] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path

    def output(self) -> bytes:
        """Everything the server printed so far (its access log and errors)."""
        return self.server.output_path.read_bytes()


#: (username, roles, regions): enrolled in every module's server, every course completed.
STAFF: list[tuple[str, list[str], list[str]]] = [
    ("dina.dpo", ["dpo"], []),
    ("dora.dpo", ["dpo"], []),
    ("wes.wrongcode", ["dpo"], []),
    ("cora.csrf", ["dpo"], []),
    ("cyd.csp", ["dpo"], []),
    ("adam.adjuster", ["claims_adjuster"], ["west"]),
    ("priv.dpo", ["dpo"], []),
    ("priv.second", ["dpo"], []),
    ("sec.sam", ["security_analyst"], []),
    ("sec.fiona", ["fraud_investigator"], []),
    ("speakup.ethics", ["ethics_officer"], []),
    ("comp.officer", ["compliance_officer"], []),
    ("comp.reader", ["dpo"], []),
    ("admin.ada", ["admin"], []),
    ("admin.cole", ["compliance_officer"], []),
]


def _enrol_staff(settings: Settings) -> dict[str, StaffLogin]:
    """Creates, trains and enrols :data:`STAFF` through the runtime, before serving."""
    rt = open_runtime(settings)
    try:
        today = datetime.now(UTC).date()
        made = {}
        for username, roles, regions in STAFF:
            code = rt.users.create(username, roles, regions).enrolment_code
            for course in rt.training.catalogue.courses:
                rt.users.record_training(username, course.id, today - timedelta(days=10))
            enrolled = rt.users.enrol(username, code, STRONG)
            made[username] = StaffLogin(username, STRONG, enrolled.totp_secret)
        return made
    finally:
        rt.close()


@pytest.fixture(scope="module", params=BACKENDS)
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Console]:
    backend = str(request.param)
    root = tmp_path_factory.mktemp("console")
    data = root / "data"
    if backend == "sqlite":
        url = f"sqlite:///{data / 'fiduciary.db'}"
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_database(f"console_{os.getpid()}_{root.name}")
    # Real Argon2id at a test cost; every journey signs in from the one loopback address.
    env = {**os.environ, "FIDUCIARY_DATABASE_URL": url, "FIDUCIARY_ARGON2_TIME_COST": "1",
           "FIDUCIARY_ARGON2_MEMORY_KIB": "8192", "FIDUCIARY_SPEAKUP_KDF_MEMORY_KIB": "8192",
           "FIDUCIARY_LOGIN_RATE_PER_CLIENT": "1000", "FIDUCIARY_LOGIN_RATE_GLOBAL": "1000"}
    cli(env, "init", "--data-dir", str(data))
    staff = _enrol_staff(Settings(data_dir=data, database_url=url, master_key=None,
                                  datamap=None, argon2_time_cost=1, argon2_memory_kib=8192))
    server = RealServer(data, env).start()
    try:
        yield Console(server.base, backend, data, env, server, staff)
    finally:
        server.stop()


# Per module, like the server: Playwright's event loop is gone before another module's
# tests (which may run their own loops) run in this worker.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: install Debian's package chromium "
                           "(.ci/run does) or set FIDUCIARY_TEST_CHROMIUM")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class Tab:
    """A page in a fresh browser context, and what the browser reported while it ran."""

    page: Page
    console_errors: list[str]
    page_errors: list[str]


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    # 1280 px wide: the console's target desktop width.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    tab = Tab(page, [], [])

    def on_console(message: ConsoleMessage) -> None:
        # CSP violations and failed loads (the favicon too) are reported here as well.
        if message.type == "error":
            tab.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: tab.page_errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def shot(tab: Tab, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``shot("name")`` saves a full-page screenshot of the tab, in the test's tmp_path or,
    with FIDUCIARY_TEST_SCREENSHOTS=<dir>, there (e.g. to refresh docs/screenshots/)."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    journey = re.sub(r"\W+", "_", request.node.name).strip("_")

    def take(name: str) -> Path:
        path = folder / (f"{name}.png" if chosen else f"{journey}-{name}.png")
        tab.page.screenshot(path=str(path), full_page=True)
        return path

    return take


SESSION_COOKIE = "fdy_console"


def sign_in(tab: Tab, console: Console, user: StaffLogin, totp: str | None = None) -> None:
    """Fills and submits the sign-in form as the user would (``totp`` overrides the code)."""
    page = tab.page
    page.goto(console.url("/console/login"))
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(user.password)
    page.get_by_label("Authenticator code").fill(totp or user.totp())
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def session_cookies(tab: Tab) -> list[dict[str, object]]:
    return [dict(c) for c in tab.page.context.cookies() if c["name"] == SESSION_COOKIE]


def service_key(console: Console, name: str) -> str:
    """A new service API key, made by the operator's CLI."""
    key: str = cli(console.env, "apikeys", "create", "--name", name, "--data-dir",
                   str(console.data))["api_key"]
    return key


def create_customer(api: httpx.Client, last_name: str) -> tuple[str, str]:
    """A customer and their persons record, entered over the API by ``api``'s service key:
    (subject id, record id)."""
    subject = str(api.post("/v1/subjects").json()["id"])
    r = api.post("/v1/collections/persons/records", params={
        "purpose": "policy_administration"}, json={
        "subject_id": subject, "data": {"first_name": "Ada", "last_name": last_name}})
    assert r.status_code == 201, r.text
    return subject, str(r.json()["id"])
