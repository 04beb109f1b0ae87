"""Privacy operations: consent, data-subject requests, erasure, retention, records of
processing."""
