"""CLI: compliance posture (check, history, attestations), the evidence pack, OSCAL, the NYDFS
certification and the CCPA metrics."""

from __future__ import annotations

from fiduciary.cli.common import group

compliance_app = group("Compliance: posture, attestations, evidence pack, OSCAL, filings.")
