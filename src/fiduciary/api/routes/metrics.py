"""Prometheus scrape endpoint: ``GET /metrics``, from the loopback address or with the
``metrics_token``. Aggregate counts only (no id, no name), so a scrape is not an audit event.

Out of /openapi.json: it answers the Prometheus text format to a scraper, not JSON to an API
client, and its credential is not the API's bearer key."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request, Response

from fiduciary.api.deps import Bearer, OneHopRoute, Rt
from fiduciary.errors import Forbidden, Reason
from fiduciary.monitoring.metrics import CONTENT_TYPE, exposition

router = APIRouter(tags=["ops"], route_class=OneHopRoute)


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or an IPv4-mapped loopback; a name (``testclient``) is not."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time; no token configured matches nothing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, rt: Rt, creds: Bearer) -> Response:
    """Alert counts by detection and severity, deliveries pending and given up by channel."""
    configured = rt.settings.metrics_token
    if not (is_loopback(request.client.host if request.client else None)
            or token_matches(creds.credentials if creds else None,
                             configured.get_secret_value() if configured else None)):
        raise Forbidden("metrics are served to the loopback address or with the metrics token",
                        reason=Reason.FIELD_NOT_PERMITTED)
    return Response(exposition(rt.db, rt.delivery.channels), media_type=CONTENT_TYPE)
