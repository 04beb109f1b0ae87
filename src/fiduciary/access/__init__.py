"""Principals and credentials."""

from fiduciary.access.apikeys import ApiKey, ApiKeyService, Principal

__all__ = ["ApiKey", "ApiKeyService", "Principal"]
