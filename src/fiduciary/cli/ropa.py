"""CLI: records of processing (GDPR Art. 30)."""

from __future__ import annotations
