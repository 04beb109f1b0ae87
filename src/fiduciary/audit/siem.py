"""Audit events and monitoring alerts for a SIEM: JSON lines, RFC 5424 syslog, ArcSight CEF.
Every free-text value is escaped here, in one place, whichever feature sends it."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fiduciary import __version__

_FACILITY_LOG_AUDIT = 13  # RFC 5424 facility 13: log audit
_FACILITY_LOG_ALERT = 14  # RFC 5424 facility 14: log alert
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


#: Every control character (C0, DEL, C1) and the Unicode line and paragraph separators: in
#: an export they could end a line, forge a field or a record, or hide what follows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_controls(s: str) -> str:
    """Control characters as visible escapes (``\\n``, ``\\r``, ``\\t``, ``\\u0000``)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m[0], f"\\u{ord(m[0]):04x}"), s)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _sd_value(v: Any) -> str:
    # RFC 5424 6.3.3: '"', '\\' and ']' are escaped with a backslash; and no control character
    # may pass (a line feed would end the message on line-framed transports).
    s = _text(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return _escape_controls(s)


def _printable_ascii(s: str, limit: int) -> str:
    """RFC 5424 header fields (HOSTNAME, MSGID): PRINTUSASCII only, at most ``limit``."""
    return "".join(c if "!" <= c <= "~" else "_" for c in s)[:limit] or "-"


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
    # The message is JSON with ASCII escapes: no control character can appear in it.
    return _rfc5424(_FACILITY_LOG_AUDIT * 8 + sev, event["time"], hostname, event["action"],
                    _structured_data(params), jsonl(event))


def _structured_data(params: dict[str, Any]) -> str:
    return "[" + _SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"


def _rfc5424(pri: int, time: str, hostname: str | None, msgid: str, sd: str, msg: str) -> str:
    """One RFC 5424 message: header fields printable ASCII, ``msg`` already escaped."""
    host = _printable_ascii(hostname or socket.gethostname(), 255)
    return (f"<{pri}>1 {_printable_ascii(time, 64)} {host} fiduciary - "
            f"{_printable_ascii(msgid, 32)} {sd} {msg}")


def _cef_header(s: str) -> str:
    # CEF: '\\' and '|' escaped in the header; no control character may pass.
    return _escape_controls(s.replace("\\", "\\\\").replace("|", "\\|"))


def _cef_ext(v: Any) -> str:
    # CEF: '\\' and '=' escaped in extension values, newlines as \\n and \\r; every other
    # control character as \\uXXXX.
    return _escape_controls(_text(v).replace("\\", "\\\\").replace("=", "\\="))


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


# -- monitoring alerts ----------------------------------------------------------------------
#: Alert severity as (syslog severity, CEF severity).
_ALERT_SEVERITY = {"low": (5, 3), "medium": (4, 5), "high": (3, 8), "critical": (2, 10)}


def alert_syslog(alert: dict[str, Any], hostname: str | None = None) -> str:
    """An alert (the shape ``monitoring.delivery`` sends) as one RFC 5424 message: the main
    fields as structured data, the whole alert as JSON in the message."""
    sev, _ = _ALERT_SEVERITY[alert["severity"]]
    principal = alert["principal"]
    params = {"id": alert["id"], "detection": alert["detection"],
              "severity": alert["severity"], "score": alert["score"], "status": alert["status"],
              "principalKind": principal["kind"], "principal": principal["id"] or "",
              "principalName": principal["username"] or "",
              "subjects": ",".join(alert["subject_ids"]), "reason": alert["reason"]}
    return _rfc5424(_FACILITY_LOG_ALERT * 8 + sev, alert["created_at"], hostname,
                    alert["detection"], _structured_data(params), jsonl(alert))


def alert_cef(alert: dict[str, Any]) -> str:
    """An alert as one CEF line (signature id: the detection)."""
    _, sev = _ALERT_SEVERITY[alert["severity"]]
    principal = alert["principal"]
    ms = int(datetime.fromisoformat(alert["created_at"]).timestamp() * 1000)
    ext = {"rt": ms, "externalId": alert["id"], "cat": alert["detection"],
           "reason": alert["reason"], "suid": principal["id"] or principal["kind"],
           "suser": principal["username"] or "",
           "cs1Label": "subjectIds", "cs1": ",".join(alert["subject_ids"]),
           "cs2Label": "eventIds", "cs2": ",".join(alert["event_ids"]),
           "cs3Label": "status", "cs3": alert["status"],
           "cs4Label": "principalKind", "cs4": principal["kind"],
           "cfp1Label": "score", "cfp1": alert["score"]}
    head = "|".join(_cef_header(x) for x in (
        "CEF:0", "Fiduciary", "Fiduciary", __version__, alert["detection"],
        f"{alert['severity']} alert: {alert['detection']}", str(sev)))
    return head + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items() if v != "")


def alert_cef_syslog(alert: dict[str, Any], hostname: str | None = None) -> str:
    """The CEF line behind an RFC 5424 header (no structured data), as syslog receivers and
    CEF collectors expect it on the wire."""
    sev, _ = _ALERT_SEVERITY[alert["severity"]]
    return _rfc5424(_FACILITY_LOG_ALERT * 8 + sev, alert["created_at"], hostname,
                    alert["detection"], "-", alert_cef(alert))


def escape_controls(text: str) -> str:
    """Free text fit for a line-oriented message (an alert e-mail's body): every control
    character as a visible escape."""
    return _escape_controls(text)
