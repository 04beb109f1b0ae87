"""The monitor: reads audit events in leaf order from a stored cursor, runs the detections,
and writes alerts with the cursor in one transaction (so a rerun never repeats one)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from fiduciary.audit.events import AuditLog
from fiduciary.audit.trail import AuditTrail
from fiduciary.clock import Clock
from fiduciary.datamap import DataMap
from fiduciary.monitoring.delivery import AlertDelivery
from fiduciary.monitoring.pack import DetectionPack
from fiduciary.storage import Database


@dataclass(frozen=True)
class MonitorRun:
    events: int
    alerts: int
    suppressed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "alerts": self.alerts, "suppressed": self.suppressed}


class Monitor:
    def __init__(self, db: Database, clock: Clock, audit: AuditLog, trail: AuditTrail,
                 pack: DetectionPack, datamap: DataMap, delivery: AlertDelivery) -> None:
        self.db = db
        self.clock = clock
        self.audit = audit
        self.trail = trail
        self.pack = pack
        self.datamap = datamap
        self.delivery = delivery

    def run_once(self) -> MonitorRun:
        raise NotImplementedError

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.wait(interval):
            pass
