"""Audit events for a SIEM: JSON lines, RFC 5424 syslog, ArcSight CEF."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fiduciary import __version__

_FACILITY_LOG_AUDIT = 13  # RFC 5424 facility 13: log audit
_SD_ID = "fiduciary@32473"  # 32473: the example enterprise number reserved by RFC 5612


def jsonl(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


def _severity(event: dict[str, Any]) -> tuple[int, int]:
    """(syslog severity, CEF severity): denials and integrity failures stand out."""
    if event["action"] == "integrity.failure":
        return 2, 10
    if event["decision"] == "deny":
        return 4, 7
    return 6, 3


def _sd_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog(event: dict[str, Any], hostname: str | None = None) -> str:
    sev, _ = _severity(event)
    actor = event["actor"]
    params = {"id": event["id"], "action": event["action"], "decision": event["decision"],
              "reason": event["reason"] or "", "actor": actor.get("id") or actor["kind"],
              "actorName": actor.get("name") or "", "roles": ",".join(actor.get("roles", [])),
              "collection": event["collection"] or "", "purpose": event["purpose"] or "",
              "subjects": ",".join(event["subject_ids"]), "records": ",".join(event["record_ids"]),
              "fields": ",".join(event["fields"]), "requestId": event["request_id"] or "",
              "client": event["client"] or ""}
    sd = "[" + _SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    host = (hostname or socket.gethostname() or "-")[:255]
    return (f"<{_FACILITY_LOG_AUDIT * 8 + sev}>1 {event['time']} {host} fiduciary - "
            f"{event['action'][:32]} {sd} {jsonl(event)}")


def _cef_header(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|")


def _cef_ext(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return (s.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n")
            .replace("\r", "\\r"))


def cef(event: dict[str, Any]) -> str:
    _, sev = _severity(event)
    actor = event["actor"]
    ms = int(datetime.fromisoformat(event["time"]).timestamp() * 1000)
    ext = {"rt": ms, "act": event["action"], "outcome": event["decision"],
           "reason": event["reason"] or "", "suid": actor.get("id") or actor["kind"],
           "suser": actor.get("name") or "", "spriv": ",".join(actor.get("roles", [])),
           "src": event["client"] or "", "externalId": event["id"],
           "cs1Label": "purpose", "cs1": event["purpose"] or "",
           "cs2Label": "collection", "cs2": event["collection"] or "",
           "cs3Label": "subjectIds", "cs3": ",".join(event["subject_ids"]),
           "cs4Label": "recordIds", "cs4": ",".join(event["record_ids"]),
           "cs5Label": "fields", "cs5": ",".join(event["fields"]),
           "cs6Label": "requestId", "cs6": event["request_id"] or ""}
    head = "|".join(_cef_header(x) for x in (
        "CEF:0", "Fiduciary", "Fiduciary", __version__, event["action"],
        f"{event['action']} {event['decision']}", str(sev)))
    return head + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items() if v != "")


FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {"jsonl": jsonl, "syslog": syslog,
                                                       "cef": cef}
