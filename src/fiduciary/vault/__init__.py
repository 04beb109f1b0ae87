"""The record service and subject data keys."""

from fiduciary.vault.keys import SubjectKeys
from fiduciary.vault.records import Record
from fiduciary.vault.service import VaultService
from fiduciary.vault.store import Subject

__all__ = ["Record", "Subject", "SubjectKeys", "VaultService"]
