"""Alert delivery to real receivers started here — an HTTP server, UDP and TCP syslog
listeners, an SMTP server (aiosmtpd) — with retries and backoff on the test clock, one send per
delivery across processes; and the Prometheus metrics at /metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fiduciary import __version__
from fiduciary.api.app import create_app
from fiduciary.api.routes.metrics import is_loopback
from fiduciary.clock import FixedClock
from fiduciary.config import Settings
from fiduciary.ids import new_id
from fiduciary.monitoring.alerts import Finding, insert_finding
from fiduciary.monitoring.delivery import MAX_ATTEMPTS, backoff
from fiduciary.monitoring.pack import Severity
from fiduciary.principal import SYSTEM
from fiduciary.runtime import Runtime, open_runtime
from fiduciary.storage.schema import alert_deliveries

SECRET = "whsec-test-0123456789"
#: Free text that would forge a line or a field if it reached a receiver as is.
FORGED = "why\r\n<14>1 2026-01-01T00:00:00Z forged fiduciary - x - forged\x07\x1b[2J\u2028\x85"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# -- receivers -----------------------------------------------------------------------------------
@dataclass
class Webhook:
    """An HTTP receiver that records every request and answers ``fail_status`` to the first
    ``failures`` of them (a 3xx with a Location elsewhere on itself)."""

    failures: int = 0
    fail_status: int = 500
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    @contextmanager
    def serving(self) -> Iterator[Webhook]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers.items()), body))
                failing = len(receiver.requests) <= receiver.failures
                self.send_response(receiver.fail_status if failing else 204)
                if failing:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        # A token in the URL: it must appear in no stored error and no log line.
        self.url = f"http://127.0.0.1:{server.server_port}/hooks/fiduciary?token=tok-in-url"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


@contextmanager
def udp_listener() -> Iterator[tuple[socket.socket, str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock, f"udp://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def tcp_listener() -> Iterator[tuple[socket.socket, str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(5)
        yield sock, f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def read_octet_counted(listener: socket.socket) -> list[bytes]:
    """Every RFC 6587 octet-counted frame of one connection."""
    conn, _ = listener.accept()
    data = b""
    with conn:
        conn.settimeout(5)
        while chunk := conn.recv(65536):
            data += chunk
    frames = []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[:int(length)])
        data = rest[int(length):]
    return frames


class Mailbox:
    """An aiosmtpd handler keeping each message with its envelope."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.content)))
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as probe:  # a free port (aiosmtpd checks it by connecting)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


# -- runtimes and alerts -------------------------------------------------------------------------
@contextmanager
def runtime(settings: Settings, clock: FixedClock, **update: Any) -> Iterator[Runtime]:
    """A runtime over the test's database with the given alert settings (a second one over
    the same settings is a second server process). A webhook is always signed."""
    if update.get("alert_webhook_url"):
        update.setdefault("alert_webhook_secret", SecretStr(SECRET))
    rt = open_runtime(settings.model_copy(update=update), create=True, clock=clock)
    try:
        yield rt
    finally:
        rt.close()


def raise_alert(rt: Runtime, severity: Severity = Severity.HIGH, *, reason: str = "watched",
                username: str = "ana") -> str:
    finding = Finding(detection="watchlist_subject", severity=severity, score=87.5,
                      principal_kind="user", principal_id="usr_1", principal_name=username,
                      reason=reason, dedup_key=new_id(), event_ids=[new_id(), new_id()],
                      subject_ids=[new_id()])
    with rt.db.write() as conn:
        alert_id = insert_finding(conn, finding, rt.clock.now(),
                                  rt.delivery.channels_for(severity))
    assert alert_id is not None
    return alert_id


def deliveries(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(alert_deliveries).order_by(alert_deliveries.c.id))]


# -- webhook -------------------------------------------------------------------------------------
def test_webhook_is_signed_and_retried_with_backoff(settings: Settings,
                                                    clock: FixedClock) -> None:
    with Webhook(failures=2).serving() as hook, runtime(
            settings, clock, alert_webhook_url=hook.url,
            alert_webhook_secret=SecretStr(SECRET)) as rt:
        alert_id = raise_alert(rt)
        [queued] = deliveries(rt)
        assert (queued["channel"], queued["attempts"]) == ("webhook", 0)

        assert rt.delivery.deliver_due() == 0  # the first answer is a 500
        [row] = deliveries(rt)
        assert row["attempts"] == 1 and row["last_error"] == "HTTP 500"
        assert row["next_at"] == clock.now() + timedelta(seconds=5)
        assert rt.delivery.deliver_due() == 0 and len(hook.requests) == 1  # not due yet
        clock.advance(seconds=5)
        assert rt.delivery.deliver_due() == 0 and len(hook.requests) == 2
        assert deliveries(rt)[0]["next_at"] == clock.now() + timedelta(seconds=30)
        clock.advance(seconds=29)
        assert rt.delivery.deliver_due() == 0 and len(hook.requests) == 2
        clock.advance(seconds=1)
        assert rt.delivery.deliver_due() == 1 and len(hook.requests) == 3
        [row] = deliveries(rt)
        assert row["delivered_at"] == clock.now() and row["last_error"] is None
        assert row["attempts"] == 3
        clock.advance(hours=1)
        assert rt.delivery.deliver_due() == 0 and len(hook.requests) == 3  # sent once

    for path, headers, body in hook.requests:
        assert path == "/hooks/fiduciary?token=tok-in-url"
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Fiduciary-Signature"] == f"sha256={expected}"
        assert headers["X-Fiduciary-Delivery"] == str(row["id"])
        assert headers["Content-Type"] == "application/json"
    alert = json.loads(hook.requests[-1][2])
    assert alert["id"] == alert_id
    assert set(alert) == {"id", "detection", "severity", "score", "status", "principal",
                          "subject_ids", "event_ids", "reason", "created_at"}
    assert alert["principal"] == {"kind": "user", "id": "usr_1", "username": "ana"}
    assert (alert["detection"], alert["severity"], alert["score"], alert["status"]) == (
        "watchlist_subject", "high", 87.5, "open")
    assert alert["created_at"] == "2026-01-31T12:00:00Z" and len(alert["event_ids"]) == 2


def test_webhook_gives_up_after_max_attempts_and_follows_no_redirect(
        settings: Settings, clock: FixedClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fiduciary.monitoring")
    with Webhook(failures=1000, fail_status=307).serving() as hook, runtime(
            settings, clock, alert_webhook_url=hook.url,
            alert_webhook_secret=SecretStr(SECRET)) as rt:
        raise_alert(rt, reason=FORGED)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            assert rt.delivery.deliver_due() == 0
            assert len(hook.requests) == attempt
            [row] = deliveries(rt)
            assert row["attempts"] == attempt and row["last_error"] == "HTTP 307"
            if attempt < MAX_ATTEMPTS:
                assert row["failed_at"] is None
                clock.advance(seconds=backoff(attempt).total_seconds())
        assert row["failed_at"] == clock.now() and row["delivered_at"] is None
        clock.advance(days=30)
        assert rt.delivery.deliver_due() == 0 and len(hook.requests) == MAX_ATTEMPTS
    # Never followed to /elsewhere, and the failures are logged without values.
    assert {path for path, _, _ in hook.requests} == {"/hooks/fiduciary?token=tok-in-url"}
    logged = [r.getMessage() for r in caplog.records if r.name == "fiduciary.monitoring"]
    assert len(logged) == MAX_ATTEMPTS and "given up after 10 attempts" in logged[-1]
    assert not [m for m in logged if "tok-in-url" in m or "forged" in m or "127.0.0.1" in m]


def test_two_processes_send_each_delivery_once(settings: Settings, clock: FixedClock) -> None:
    with Webhook().serving() as hook:
        config = {"alert_webhook_url": hook.url, "alert_webhook_secret": SecretStr(SECRET)}
        with runtime(settings, clock, **config) as one, runtime(settings, clock, **config) as two:
            alert_ids = {raise_alert(one) for _ in range(8)}
            start = threading.Barrier(2)
            sent: list[int] = []

            def serve(rt: Runtime) -> None:
                start.wait()
                sent.append(rt.delivery.deliver_due())

            threads = [threading.Thread(target=serve, args=(rt,)) for rt in (one, two)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sum(sent) == 8
            assert all(r["delivered_at"] is not None and r["attempts"] == 1
                       for r in deliveries(one))
    delivery_ids = [headers["X-Fiduciary-Delivery"] for _, headers, _ in hook.requests]
    assert len(delivery_ids) == 8 == len(set(delivery_ids))
    assert {json.loads(body)["id"] for _, _, body in hook.requests} == alert_ids


def test_a_blackholed_webhook_does_not_hold_up_the_other_channels(
        settings: Settings, clock: FixedClock) -> None:
    # Connections complete in the kernel's backlog; nothing ever answers.
    with socket.socket() as blackhole, udp_listener() as (syslog, syslog_url):
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}/hook"
        with runtime(settings, clock, alert_webhook_url=url, alert_syslog_url=syslog_url) as rt:
            rt.delivery.timeout = 0.4
            for _ in range(6):
                raise_alert(rt)
            started = time.monotonic()
            assert rt.delivery.deliver_due() == 6  # every syslog one
            elapsed = time.monotonic() - started
            lines = [syslog.recvfrom(65536)[0] for _ in range(6)]
            rows = deliveries(rt)
    # One webhook try (its timeout), then the round ends; six in a row would take 2.4 s.
    assert elapsed < 1.5, elapsed
    assert len(lines) == 6
    webhook = [r for r in rows if r["channel"] == "webhook"]
    tried = [r for r in webhook if r["attempts"] == 1]
    assert len(tried) == 1 and tried[0]["last_error"] == "timeout"
    assert all(r["attempts"] == 0 and r["last_error"] is None for r in webhook if r not in tried)
    assert all(r["delivered_at"] is not None for r in rows if r["channel"] == "syslog")


def test_alerts_below_the_minimum_severity_are_not_queued(settings: Settings,
                                                          clock: FixedClock) -> None:
    with Webhook().serving() as hook, udp_listener() as (_, syslog_url), runtime(
            settings, clock, alert_min_severity="high", alert_webhook_url=hook.url,
            alert_syslog_url=syslog_url) as rt:
        raise_alert(rt, Severity.LOW)
        raise_alert(rt, Severity.MEDIUM)
        assert deliveries(rt) == []
        assert rt.delivery.deliver_due() == 0 and hook.requests == []
        critical = raise_alert(rt, Severity.CRITICAL)
        assert sorted(r["channel"] for r in deliveries(rt)) == ["syslog", "webhook"]
        assert rt.delivery.deliver_due() == 2
    [(_, _, body)] = hook.requests
    assert json.loads(body)["id"] == critical


# -- syslog and CEF ------------------------------------------------------------------------------
def test_syslog_over_udp_escapes_control_characters(settings: Settings,
                                                    clock: FixedClock) -> None:
    with udp_listener() as (listener, url), runtime(settings, clock, alert_syslog_url=url) as rt:
        alert_id = raise_alert(rt, reason=FORGED, username='ana"]x')
        assert rt.delivery.deliver_due() == 1
        datagram, _ = listener.recvfrom(65536)
    line = datagram.decode()
    assert not CONTROL.search(line), line
    # <PRI> = facility 14 (log alert) * 8 + severity 3 (error) for a high alert.
    head = f"<115>1 2026-01-31T12:00:00Z {socket.gethostname()} fiduciary - watchlist_subject "
    assert line.startswith(head + f'[fiduciary@32473 id="{alert_id}" ')
    assert 'principalName="ana\\"\\]x"' in line and 'severity="high"' in line
    assert '\\r\\n<14>1 2026-01-01T00:00:00Z forged' in line and "\\u001b" in line
    # The message is the alert as JSON: the reason comes back whole.
    message = json.loads(line[line.index(' {"created_at"') + 1:])
    assert message["id"] == alert_id and message["reason"] == FORGED


def test_cef_over_tcp_is_octet_counted_and_escaped(settings: Settings,
                                                   clock: FixedClock) -> None:
    with tcp_listener() as (listener, url), runtime(
            settings, clock, alert_syslog_url=url, alert_syslog_format="cef") as rt:
        first = raise_alert(rt, reason=f"{FORGED}|pipe=equals")
        second = raise_alert(rt, Severity.CRITICAL)
        assert rt.delivery.deliver_due() == 2
        frames = read_octet_counted(listener) + read_octet_counted(listener)
    lines = [f.decode() for f in frames]
    assert len(lines) == 2
    for line in lines:
        assert not CONTROL.search(line), line
        # Seven header fields; a pipe in an extension value needs no escape in CEF.
        assert re.search(r"\s(CEF:0\|Fiduciary\|Fiduciary\|[^|]+\|watchlist_subject\|"
                         r"(high|critical) alert: watchlist_subject\|\d+\|rt=\d+ )", line)
    assert lines[0].startswith("<115>1 2026-01-31T12:00:00Z ")  # high: error
    assert lines[1].startswith("<114>1 2026-01-31T12:00:00Z ")  # critical: critical
    assert f"CEF:0|Fiduciary|Fiduciary|{__version__}|watchlist_subject|" \
           "high alert: watchlist_subject|8|" in lines[0]
    assert "|critical alert: watchlist_subject|10|" in lines[1]
    assert f"externalId={first} " in lines[0] and f"externalId={second} " in lines[1]
    assert "reason=why\\r\\n<14>1" in lines[0] and "|pipe\\=equals" in lines[0]
    assert "suser=ana " in lines[0] and "cfp1Label=score cfp1=87.5" in lines[0]


# -- email ---------------------------------------------------------------------------------------
def test_email_reaches_every_recipient(settings: Settings, clock: FixedClock) -> None:
    with smtp_server() as (mailbox, port), runtime(
            settings, clock, alert_smtp_host="127.0.0.1", alert_smtp_port=port,
            alert_email_from="vault@insurer.example",
            alert_email_to="soc@insurer.example, dpo@insurer.example") as rt:
        alert_id = raise_alert(rt, reason=FORGED)
        assert rt.delivery.deliver_due() == 1
    [(sender, recipients, message)] = mailbox.messages
    assert sender == "vault@insurer.example"
    assert recipients == ["soc@insurer.example", "dpo@insurer.example"]
    assert message["Subject"] == "[Fiduciary] high alert: watchlist_subject"
    assert message["To"] == "soc@insurer.example, dpo@insurer.example"
    assert message["Message-ID"].endswith("@insurer.example>")
    body = message.get_payload(decode=True).decode()
    assert f"Alert {alert_id}" in body
    assert "Severity:   high (score 87.5)" in body and "Principal:  ana (user, id usr_1)" in body
    # The forged text stays on the reason's line.
    [reason] = [line for line in body.splitlines() if line.startswith("Reason:")]
    assert "\\r\\n<14>1" in reason
    assert not [line for line in body.splitlines() if CONTROL.search(line)]


def test_an_unreachable_smtp_server_is_retried(settings: Settings, clock: FixedClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with runtime(settings, clock, alert_smtp_host="127.0.0.1", alert_smtp_port=port,
                 alert_email_to="soc@insurer.example") as rt:
        raise_alert(rt)
        assert rt.delivery.deliver_due() == 0
        [row] = deliveries(rt)
    assert row["channel"] == "email" and row["attempts"] == 1
    assert row["last_error"] == "ConnectionRefusedError (ECONNREFUSED)"
    assert row["next_at"] == clock.now() + timedelta(seconds=5)


# -- metrics -------------------------------------------------------------------------------------
def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    [value] = re.findall(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(value)


def test_metrics_count_alerts_and_deliveries_with_the_token(settings: Settings,
                                                            clock: FixedClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
    with runtime(settings, clock, alert_webhook_url=dead,
                 metrics_token=SecretStr("scrape-token")) as rt:
        first, _ = raise_alert(rt), raise_alert(rt)
        for attempt in range(1, MAX_ATTEMPTS + 1):  # refused every time: both given up
            rt.delivery.deliver_due()
            clock.advance(seconds=backoff(attempt).total_seconds())
        raise_alert(rt)  # pending
        raise_alert(rt, Severity.LOW)
        rt.alerts.dismiss(SYSTEM, first, "a known test account")
        client = TestClient(create_app(rt), raise_server_exceptions=False)
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
        refused = [client.get("/metrics"),
                   client.get("/metrics", headers={"Authorization": "Bearer scrape-tokeN"})]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    labels = {"detection": "watchlist_subject", "severity": "high"}
    assert sample(r.text, "fiduciary_alerts_total", **labels) == 3
    assert sample(r.text, "fiduciary_alerts_open", **labels) == 2
    assert sample(r.text, "fiduciary_alerts_total", detection="watchlist_subject",
                  severity="low") == 1
    assert sample(r.text, "fiduciary_alert_deliveries_pending", channel="webhook") == 1
    assert sample(r.text, "fiduciary_alert_deliveries_failed_total", channel="webhook") == 2
    assert "# TYPE fiduciary_alerts_total counter" in r.text
    assert "# TYPE fiduciary_alerts_open gauge" in r.text
    for refusal in refused:
        assert refusal.status_code == 403, refusal.text
        assert refusal.json()["error"]["code"] == "forbidden"
        assert "fiduciary_alerts" not in refusal.text


def test_metrics_from_loopback_need_no_token(rt: Runtime) -> None:
    # log_config=None: uvicorn must not reconfigure this process's loggers (later tests in
    # the worker check what the log handlers print).
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=0,
                                           lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        r = httpx.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert r.status_code == 200, r.text
    assert "# TYPE fiduciary_alerts_total counter" in r.text
    # TestClient's "testclient", a LAN address, no address: refused without the token.
    assert TestClient(create_app(rt)).get("/metrics").status_code == 403
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1")] \
        == [True] * 4
    assert [is_loopback(h) for h in ("testclient", "10.0.0.1", "::ffff:10.0.0.1", "", None)] \
        == [False] * 5


def test_misconfigured_channels_stop_the_start(settings: Settings, clock: FixedClock) -> None:
    """An unsigned webhook (anyone reaching the receiver could forge alerts) or a malformed
    channel is refused at start, naming the setting, not found later as failed deliveries."""
    from fiduciary.errors import ConfigurationError

    for update, named in (
            ({"alert_webhook_url": "https://siem.example/hook"}, "WEBHOOK_SECRET"),
            ({"alert_syslog_url": "syslog.example:514"}, "SYSLOG_URL"),
            ({"alert_min_severity": "urgent"}, "MIN_SEVERITY")):
        with pytest.raises(ConfigurationError, match=named):
            open_runtime(settings.model_copy(update=update), create=True, clock=clock)
