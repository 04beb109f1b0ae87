"""Alert delivery: each new alert at or above the configured severity is queued (in the
transaction that raises it) for every configured channel — webhook, syslog/CEF, email — and
sent by a separate loop with retries and backoff, so a slow receiver never holds up the
detector.

::

    alert_deliveries row ──claim──▶ attempts + 1, next_at = now + LEASE   (one short write)
                          ──send───▶ no transaction open, SEND_TIMEOUT per network call
                          ──record─▶ delivered_at
                                     or last_error and next_at = now + BACKOFF[attempts - 1]
                                     or failed_at once MAX_ATTEMPTS have failed

The claim is ``UPDATE … WHERE attempts = <as read>``: of two processes that read the same row,
one updates it and the other updates nothing and moves on, so a delivery is sent once (at least
once: a process that dies mid-send leaves the row to be claimed again when its lease ends).
Each channel is served by its own thread, which starts no send once ``timeout`` has passed in
the round: a blackholed receiver costs its channel one timeout per round and the other
channels nothing.

Notices (a training reminder) are the small non-alert kind: :meth:`AlertDelivery.send_notice`
sends one at once on the webhook (``{"kind": …}``, signed the same way) and by e-mail, once,
without the outbox; whoever calls it keeps its own record of what was sent (an audit event).

Wire formats: the webhook body is :func:`alert_message` as compact JSON with sorted keys;
syslog is one RFC 5424 message (``siem.alert_syslog``, or ``siem.alert_cef_syslog`` for CEF)
per UDP datagram, or per TCP connection with RFC 6587 octet counting; e-mail is plain text.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from fiduciary import __version__
from fiduciary.audit import siem
from fiduciary.clock import Clock
from fiduciary.config import Settings
from fiduciary.errors import ConfigurationError
from fiduciary.monitoring.alerts import alert_message
from fiduciary.monitoring.pack import Severity
from fiduciary.storage import Database
from fiduciary.storage.schema import alert_deliveries, alerts

log = logging.getLogger("fiduciary.monitoring")

WEBHOOK = "webhook"
SYSLOG = "syslog"
EMAIL = "email"

#: Seconds each network call (connect, send, answer) may take.
SEND_TIMEOUT = 5.0
#: Wait after the n-th failed attempt (the last value repeats): about 19 hours in all.
BACKOFF = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2),
           timedelta(minutes=10), timedelta(hours=1), timedelta(hours=2), timedelta(hours=4),
           timedelta(hours=6))
#: Attempts before a delivery is given up (``failed_at``).
MAX_ATTEMPTS = 10
#: How long a claimed delivery is left to its claimant before another process may retry it:
#: far longer than a round can take.
LEASE = timedelta(minutes=5)
#: Most deliveries one channel sends in a round.
ROUND_LIMIT = 50
MAX_ERROR = 200


def backoff(attempts: int) -> timedelta:
    """The wait before the next try, after ``attempts`` failed ones."""
    return BACKOFF[min(attempts, len(BACKOFF)) - 1]


class DeliveryFailed(Exception):
    """A receiver refused or could not be reached; the message is value-free."""


@dataclass(frozen=True)
class _Claimed:
    id: int
    channel: str
    attempts: int
    alert: dict[str, Any]


def check_settings(settings: Settings) -> Severity:
    """Channel settings are checked at start, not discovered as failed deliveries."""
    problems = []
    try:
        severity = Severity(settings.alert_min_severity)
    except ValueError:
        problems.append(f"FIDUCIARY_ALERT_MIN_SEVERITY: one of {', '.join(Severity)}")
        severity = Severity.MEDIUM
    url = settings.alert_webhook_url
    if url and not url.startswith(("http://", "https://")):
        problems.append("FIDUCIARY_ALERT_WEBHOOK_URL: an http(s) URL")
    if url and not settings.alert_webhook_secret:
        # An unsigned alert could be forged by anyone who can reach the receiver.
        problems.append("FIDUCIARY_ALERT_WEBHOOK_SECRET: required with a webhook URL")
    syslog = settings.alert_syslog_url
    if syslog and not syslog.startswith(("udp://", "tcp://")):
        problems.append("FIDUCIARY_ALERT_SYSLOG_URL: udp://host:port or tcp://host:port")
    if settings.alert_syslog_format not in ("syslog", "cef"):
        problems.append("FIDUCIARY_ALERT_SYSLOG_FORMAT: syslog or cef")
    if problems:
        raise ConfigurationError("alert delivery misconfigured: " + "; ".join(problems))
    return severity


class AlertDelivery:
    """The outbox of alerts to the configured channels (``deliver_due`` sends what is due)."""

    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.min_severity = check_settings(settings)
        #: Per network call; a test may shorten it.
        self.timeout = SEND_TIMEOUT
        self._senders: dict[str, Callable[[int, dict[str, Any]], None]] = {
            WEBHOOK: self._send_webhook, SYSLOG: self._send_syslog, EMAIL: self._send_email}

    def channels(self) -> list[str]:
        out = []
        if self.settings.alert_webhook_url:
            out.append(WEBHOOK)
        if self.settings.alert_syslog_url:
            out.append(SYSLOG)
        if self.settings.alert_smtp_host and self.recipients():
            out.append(EMAIL)
        return out

    def channels_for(self, severity: Severity) -> list[str]:
        return self.channels() if severity.rank >= self.min_severity.rank else []

    def recipients(self) -> list[str]:
        return [a.strip() for a in self.settings.alert_email_to.split(",") if a.strip()]

    # -- the loop ------------------------------------------------------------------------------
    def deliver_due(self) -> int:
        """Send what is due on every configured channel (each in its own thread, for about
        ``timeout`` at most); returns how many were delivered. Rows of a channel no longer
        configured stay queued."""
        due = self._due_channels()
        if not due:
            return 0
        if len(due) == 1:
            return self._deliver_channel(due[0])
        with ThreadPoolExecutor(len(due), thread_name_prefix="alert-delivery") as pool:
            return sum(pool.map(self._deliver_channel, due))

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.wait(interval):
            try:
                self.deliver_due()
            except Exception as exc:  # a database hiccup must not end the loop
                log.error("alert delivery round failed: %s", type(exc).__name__)

    def _due_channels(self) -> list[str]:
        """The configured channels with something due: a read, so an idle loop never takes
        SQLite's write lock."""
        configured = self.channels()
        if not configured:
            return []
        d = alert_deliveries.c
        with self.db.read() as conn:
            return list(conn.scalars(
                sa.select(d.channel).distinct()
                .where(d.delivered_at.is_(None), d.failed_at.is_(None),
                       d.next_at <= self.clock.now(), d.channel.in_(configured))))

    def _deliver_channel(self, channel: str) -> int:
        deadline = time.monotonic() + self.timeout
        delivered = 0
        for _ in range(ROUND_LIMIT):
            # Start nothing new once the round's time is spent: the rest waits for the next.
            if time.monotonic() >= deadline:
                break
            claimed = self._claim(channel)
            if claimed is None:
                break
            try:
                self._senders[channel](claimed.id, claimed.alert)
            except Exception as exc:  # any failure of a receiver is recorded, then retried
                self._record_failure(claimed, _short_error(exc))
            else:
                self._record_delivery(claimed)
                delivered += 1
        return delivered

    # -- the outbox ----------------------------------------------------------------------------
    def _claim(self, channel: str) -> _Claimed | None:
        """The oldest due delivery of ``channel``, claimed for this process (see the module
        docstring), with its alert; None when nothing is due."""
        d = alert_deliveries.c
        now = self.clock.now()
        with self.db.write() as conn:
            rows = conn.execute(
                sa.select(d.id.label("delivery_id"), d.attempts, alerts)
                .join(alerts, alerts.c.id == d.alert_id)
                .where(d.channel == channel, d.delivered_at.is_(None), d.failed_at.is_(None),
                       d.next_at <= now)
                .order_by(d.next_at, d.id).limit(5)).all()
            for row in rows:
                taken = conn.execute(
                    alert_deliveries.update()
                    .where(d.id == row.delivery_id, d.attempts == row.attempts,
                           d.delivered_at.is_(None), d.failed_at.is_(None))
                    .values(attempts=row.attempts + 1, next_at=now + LEASE)).rowcount
                if taken == 1:
                    return _Claimed(row.delivery_id, channel, row.attempts + 1,
                                    alert_message(row))
        return None

    def _record_delivery(self, claimed: _Claimed) -> None:
        d = alert_deliveries.c
        with self.db.write() as conn:
            conn.execute(alert_deliveries.update()
                         .where(d.id == claimed.id, d.delivered_at.is_(None))
                         .values(delivered_at=self.clock.now(), last_error=None))

    def _record_failure(self, claimed: _Claimed, error: str) -> None:
        now = self.clock.now()
        give_up = claimed.attempts >= MAX_ATTEMPTS
        values: dict[str, Any] = {"last_error": error[:MAX_ERROR]}
        if give_up:
            values["failed_at"] = now
        else:
            values["next_at"] = now + backoff(claimed.attempts)
        d = alert_deliveries.c
        with self.db.write() as conn:
            # Unless another process took the row over after our lease ran out.
            conn.execute(alert_deliveries.update()
                         .where(d.id == claimed.id, d.attempts == claimed.attempts,
                                d.delivered_at.is_(None))
                         .values(**values))
        if give_up:
            log.error("alert delivery %d (%s, alert %s) given up after %d attempts: %s",
                      claimed.id, claimed.channel, claimed.alert["id"], claimed.attempts, error)
        else:
            log.warning("alert delivery %d (%s, alert %s) failed, attempt %d of %d: %s",
                        claimed.id, claimed.channel, claimed.alert["id"], claimed.attempts,
                        MAX_ATTEMPTS, error)

    # -- notices -------------------------------------------------------------------------------
    def send_notice(self, notice: dict[str, Any], subject: str, text: str) -> list[str]:
        """Send a non-alert message (``notice["kind"]`` names it) on the webhook and e-mail
        channels, once each, now; returns the channels that took it. A failure is logged
        (value-free) and not retried."""
        sent = []
        for channel in self.channels():
            try:
                if channel == WEBHOOK:
                    self._post(notice, f"notice:{notice['kind']}")
                elif channel == EMAIL:
                    self._mail(subject, text, "notice")
                else:
                    continue  # syslog carries security events, not reminders
            except Exception as exc:
                log.warning("%s notice on %s failed: %s", notice["kind"], channel,
                            _short_error(exc))
            else:
                sent.append(channel)
        return sent

    # -- the channels --------------------------------------------------------------------------
    def _send_webhook(self, delivery_id: int, alert: dict[str, Any]) -> None:
        self._post(alert, str(delivery_id))

    def _post(self, payload: dict[str, Any], delivery: str) -> None:
        """POST ``payload`` as JSON, signed over the exact body bytes; any answer but 2xx (a
        redirect included) is a failure."""
        url = self.settings.alert_webhook_url or ""
        if urlsplit(url).scheme not in ("http", "https"):
            raise DeliveryFailed("webhook URL is not http(s)")
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json",
                   "User-Agent": f"Fiduciary/{__version__}",
                   "X-Fiduciary-Delivery": delivery}
        secret = self.settings.alert_webhook_secret
        if secret is not None:
            mac = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256)
            headers["X-Fiduciary-Signature"] = "sha256=" + mac.hexdigest()
        # The scheme is checked above: no file: or custom scheme reaches urllib.
        request = urllib.request.Request(url, data=body, headers=headers,  # noqa: S310
                                         method="POST")
        with _NO_REDIRECTS.open(request, timeout=self.timeout) as response:
            response.read(65536)  # let the receiver finish; its answer is not ours to keep

    def _send_syslog(self, _delivery_id: int, alert: dict[str, Any]) -> None:
        """One message per alert: a UDP datagram, or over TCP with RFC 6587 octet-counting
        framing (``<length> <message>``), a connection per message."""
        url = urlsplit(self.settings.alert_syslog_url or "")
        try:
            port = url.port
        except ValueError:
            port = None
        if url.scheme not in ("udp", "tcp") or not url.hostname or port is None:
            raise DeliveryFailed("syslog URL is not udp://host:port or tcp://host:port")
        fmt = self.settings.alert_syslog_format
        if fmt not in ("syslog", "cef"):
            raise DeliveryFailed("alert_syslog_format is not syslog or cef")
        line = (siem.alert_cef_syslog(alert) if fmt == "cef" else siem.alert_syslog(alert))
        message = line.encode()
        if url.scheme == "tcp":
            with socket.create_connection((url.hostname, port), timeout=self.timeout) as conn:
                conn.sendall(b"%d " % len(message) + message)
            return
        family, kind, proto, _, address = socket.getaddrinfo(
            url.hostname, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(self.timeout)
            sock.sendto(message, address)

    def _send_email(self, _delivery_id: int, alert: dict[str, Any]) -> None:
        self._mail(f"[Fiduciary] {alert['severity']} alert: {alert['detection']}",
                   _email_body(alert), "alert")

    def _mail(self, subject: str, text: str, kind: str) -> None:
        """A plain-text e-mail through the SMTP relay (no TLS or login: a relay on the host
        or the internal network)."""
        sender = self.settings.alert_email_from
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = sender
        msg["To"] = ", ".join(self.recipients())
        msg["Date"] = format_datetime(self.clock.now())
        # An explicit domain: make_msgid would otherwise ask DNS for this host's name.
        msg["Message-ID"] = make_msgid(kind, domain=sender.rpartition("@")[2] or "localhost")
        msg.set_content(text)
        with smtplib.SMTP(self.settings.alert_smtp_host or "", self.settings.alert_smtp_port,
                          timeout=self.timeout) as smtp:
            smtp.send_message(msg)


def _email_body(alert: dict[str, Any]) -> str:
    principal = alert["principal"]
    who = principal["username"] or principal["id"] or principal["kind"]
    lines = [
        f"Alert {alert['id']}",
        "",
        f"Detection:  {alert['detection']}",
        f"Severity:   {alert['severity']} (score {alert['score']:g})",
        f"Status:     {alert['status']}",
        f"Raised at:  {alert['created_at']}",
        f"Principal:  {who} ({principal['kind']}, id {principal['id'] or '-'})",
        f"Reason:     {alert['reason']}",
        f"Subjects:   {' '.join(alert['subject_ids']) or '-'}",
        f"Events:     {' '.join(alert['event_ids']) or '-'}",
        "",
        "Triage it in Fiduciary by its id: there the alert carries the audit events behind",
        "it with their inclusion proofs.",
    ]
    # Free text stays on its line: a reason or a name cannot forge a field below it.
    return "\n".join(siem.escape_controls(line) for line in lines) + "\n"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: a failure, never a second POST elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def _short_error(exc: BaseException) -> str:
    """What went wrong, without values: exception messages can quote a URL (and the token in
    it), a server's banner or an address, so only types and status codes are kept."""
    if isinstance(exc, DeliveryFailed):
        return str(exc)[:MAX_ERROR]
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _short_error(exc.reason)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({str(code) for code, _ in exc.recipients.values()})
        return f"SMTP recipients refused ({', '.join(codes)})"
    if isinstance(exc, TimeoutError):
        return "timeout"
    name = type(exc).__name__
    code = exc.errno if isinstance(exc, OSError) else None
    if code is not None and code in errno.errorcode:
        return f"{name} ({errno.errorcode[code]})"
    return name
