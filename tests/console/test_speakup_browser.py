"""A reporter uses the speak-up channel from a real browser: over the API from the browser's
context, and through the console's public pages (the ethics officer answering in the
console); the thread is read back with the receipt alone, typed into a form, the browser is
given no cookie and the server logs nothing of it.

The API's responses carry ``default-src 'none'``, so no page of the API's own may script a
request: they go through the browser context's request client (its cookie jar is the
browser's)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.console.conftest import Console, Tab, sign_in

RECEIPT = "X-Speakup-Receipt"
REPORT = "Underwriter Ottoline-Quarrier waives medical checks for friends (canary 60613)"


def test_a_reporter_files_a_report_and_reads_the_thread_with_the_receipt(
        console: Console, tab: Tab) -> None:
    browser = tab.page.request
    r = browser.post(console.url("/v1/speakup/reports"), data={"text": REPORT})
    assert r.status == 201, r.text()
    receipt = r.json()["receipt"]

    r = browser.get(console.url("/v1/speakup/thread"), headers={RECEIPT: receipt})
    assert r.status == 200 and r.json()["report"] == REPORT
    r = browser.get(console.url("/v1/speakup/thread"), headers={RECEIPT: "0" * 20})
    assert r.status == 401 and REPORT not in r.text()
    # Nothing in the browser ties the reporter to the report, and the server logged neither
    # the report nor the receipt.
    assert tab.page.context.cookies() == []
    output = console.output()
    assert REPORT.encode() not in output and receipt.encode() not in output


CATEGORY = "medical-waivers"
FEEDBACK = "Thank you: an inquiry is open and the audit team has the files (canary 77120)"
REPLY = "The second set of waivers is in the March folder (canary Quillwort-5523)"


def test_a_reporter_uses_the_public_page_and_reads_the_officers_answer_with_the_receipt(
        console: Console, tab: Tab, browser: Browser, shot: Callable[[str], Path]) -> None:
    page = tab.page
    page.goto(console.url("/console/speakup"))
    page.get_by_label("What happened?").fill(REPORT)
    page.get_by_label("Category").fill(CATEGORY)
    page.get_by_role("button", name="Send the report").click()
    expect(page.locator("h1")).to_contain_text("Report received")
    receipt = page.locator("output#receipt").inner_text()
    assert len(re.sub(r"\D", "", receipt)) == 20
    shot("speakup-receipt")
    assert page.context.cookies() == []

    # The ethics officer answers in the console, in a browser of their own.
    officer = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        desk = Tab(officer.new_page(), [], [])
        sign_in(desk, console, console.staff["speakup.ethics"])
        desk.page.get_by_role("link", name="Speak-up cases").click()
        desk.page.get_by_role("row").filter(has_text=CATEGORY).get_by_role("link").click()
        expect(desk.page.locator("blockquote")).to_contain_text("Ottoline-Quarrier")
        desk.page.get_by_label("Answer the reporter").fill(FEEDBACK)
        desk.page.get_by_role("button", name="Send the answer").click()
        expect(desk.page.locator(".thread")).to_contain_text(FEEDBACK)
        expect(desk.page.locator("dl.facts")).to_contain_text("acknowledged")
    finally:
        officer.close()

    # The reporter comes back with the receipt alone, typed into a form (not the URL).
    page.goto(console.url("/console/speakup/thread"))
    page.get_by_label("Receipt").fill(receipt)
    page.get_by_role("button", name="Read the answers").click()
    expect(page.locator(".thread")).to_contain_text(FEEDBACK)
    assert receipt not in page.url
    page.get_by_label("Add a message").fill(REPLY)
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".thread")).to_contain_text(REPLY)
    shot("speakup-thread")
    # A wrong receipt gets the one refusal and no thread.
    page.goto(console.url("/console/speakup/thread"))
    page.get_by_label("Receipt").fill("1" * 20)
    page.get_by_role("button", name="Read the answers").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert REPORT not in page.content()

    assert page.context.cookies() == []
    assert not tab.page_errors
    assert not [e for e in tab.console_errors if "401" not in e], tab.console_errors
    output = console.output()
    assert b"/console/login" in output  # the access log is on, for the officer's sign-in …
    for canary in (REPORT, REPLY, receipt, "/console/speakup"):  # … not for the channel
        assert canary.encode() not in output, canary
