"""Compliance posture: controls mapped to the regulations, checked continuously, evidence an
examiner verifies offline, OSCAL, the NYDFS certification and the CCPA metrics."""
