"""A reporter uses the speak-up channel from a real browser's context: the report is filed,
the thread is read back with the receipt alone, and the browser is given no cookie.

The API's responses carry ``default-src 'none'``, so no page of the API's own may script a
request: they go through the browser context's request client (its cookie jar is the
browser's)."""

from __future__ import annotations

from tests.console.conftest import Console, Tab

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
