"""Prometheus metrics of the monitoring feature, read from the database at each scrape: every
server process (and a monitor run from cron) writes the same tables, so any one of them
answers for all, without a multiprocess directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from fiduciary.monitoring.alerts import AlertStatus
from fiduciary.storage import Database
from fiduciary.storage.schema import alert_deliveries, alerts

#: The classic text format: our names need nothing newer, and Prometheus 2 and 3 both read it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: Alerts still waiting for someone (dismissed and escalated ones are out of the queue).
_OPEN = (AlertStatus.OPEN, AlertStatus.TRIAGED)


class AlertCollector(Collector):
    """``fiduciary_alerts_total`` and ``fiduciary_alerts_open`` by detection and severity;
    ``fiduciary_alert_deliveries_pending`` and ``fiduciary_alert_deliveries_failed_total``
    by channel (every configured channel, at 0 when it has none)."""

    def __init__(self, db: Database, channels: Callable[[], list[str]]) -> None:
        self.db = db
        self.channels = channels

    def collect(self) -> Iterator[Metric]:
        a, d = alerts.c, alert_deliveries.c
        raised = CounterMetricFamily("fiduciary_alerts", "Alerts raised, ever",
                                     labels=["detection", "severity"])
        still_open = GaugeMetricFamily("fiduciary_alerts_open",
                                       "Alerts open or triaged (not dismissed or escalated)",
                                       labels=["detection", "severity"])
        pending = GaugeMetricFamily("fiduciary_alert_deliveries_pending",
                                    "Alert deliveries not yet sent (nor given up)",
                                    labels=["channel"])
        failed = CounterMetricFamily("fiduciary_alert_deliveries_failed",
                                     "Alert deliveries given up after every retry",
                                     labels=["channel"])
        open_count = sa.func.sum(sa.case((a.status.in_(_OPEN), 1), else_=0))
        undelivered = sa.and_(d.delivered_at.is_(None), d.failed_at.is_(None))
        with self.db.read() as conn:
            by_detection = conn.execute(
                sa.select(a.detection, a.severity, sa.func.count(), open_count)
                .group_by(a.detection, a.severity).order_by(a.detection, a.severity)).all()
            by_channel = conn.execute(
                sa.select(d.channel,
                          sa.func.sum(sa.case((undelivered, 1), else_=0)),
                          sa.func.sum(sa.case((d.failed_at.is_not(None), 1), else_=0)))
                .group_by(d.channel)).all()
        for detection, severity, total, opened in by_detection:
            raised.add_metric([detection, severity], total)
            still_open.add_metric([detection, severity], opened or 0)
        counts = {channel: (waiting or 0, gave_up or 0) for channel, waiting, gave_up
                  in by_channel}
        for channel in sorted(set(counts) | set(self.channels())):
            waiting, gave_up = counts.get(channel, (0, 0))
            pending.add_metric([channel], waiting)
            failed.add_metric([channel], gave_up)
        yield from (raised, still_open, pending, failed)


def exposition(db: Database, channels: Callable[[], list[str]]) -> bytes:
    """The metrics in the Prometheus text format (served as :data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AlertCollector(db, channels))
    return generate_latest(registry)
