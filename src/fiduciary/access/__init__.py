"""Identity and access: principals, API keys, users and sessions, the policy engine."""

from fiduciary.access.apikeys import ApiKey, ApiKeyService
from fiduciary.principal import SYSTEM, Principal

__all__ = ["SYSTEM", "ApiKey", "ApiKeyService", "Principal"]
