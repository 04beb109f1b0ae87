"""CLI: data-subject requests and the consent ledger."""

from __future__ import annotations
