"""CLI: legal holds and retention."""

from __future__ import annotations
