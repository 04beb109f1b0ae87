"""What the vault asks before it serves or changes a record, for rules that are not its own
(GDPR Art. 18 restriction, legal holds). ``fiduciary.privacy.gates`` answers; the vault never
imports the privacy package, and the rules are written once, there."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.engine import Connection

from fiduciary.principal import Principal


class RecordGate(Protocol):
    def may_process(self, principal: Principal, subject_status: str, purpose: str) -> bool:
        """May the subject's data (a subject in this status) serve this purpose for this
        principal? False: skip the record (lists and searches)."""
        ...

    def check_process(self, principal: Principal, subject_id: str, subject_status: str,
                      purpose: str) -> None:
        """As :meth:`may_process`, raising ``Forbidden`` with its reason when not."""
        ...

    def check_change(self, conn: Connection, subject_id: str, record_id: str,
                     collection: str, action: str) -> None:
        """Raise ``Forbidden`` if the record may not be changed or deleted (``action`` is the
        past participle for the message: ``changed``, ``deleted``)."""
        ...
