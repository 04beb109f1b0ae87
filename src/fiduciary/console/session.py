"""The console's cookie session and CSRF tokens.

The session is the API's staff session (``UserService.login``: lockout, throttling, idle and
absolute timeouts) carried in an ``HttpOnly; SameSite=Strict; Path=/console`` cookie instead
of a bearer header. Every POST form carries a CSRF token: an HMAC, under a keyring-derived key,
of the session token's digest — or, before sign-in, of a random pre-session cookie (so a
forged sign-in form is refused too).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fiduciary.errors import Forbidden, Reason

#: The session token (``fds_…``) of a signed-in console user.
SESSION_COOKIE = "fdy_console"
#: A random value binding the sign-in form's CSRF token to this browser.
PRE_SESSION_COOKIE = "fdy_console_pre"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"


class CsrfTokens:
    """Issues and checks CSRF tokens bound to a cookie value (the session or pre-session)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, bound_to: str) -> str:
        digest = hashlib.sha256(bound_to.encode()).digest()
        return hmac.new(self._key, digest, "sha256").hexdigest()

    def check(self, bound_to: str | None, given: str | None) -> None:
        """Refuses (403) a missing or wrong token, or a form without its cookie."""
        if not bound_to or not given or not hmac.compare_digest(self.token(bound_to), given):
            raise Forbidden("the form's security token is missing or wrong: reload the page "
                            "and try again", reason=Reason.CSRF_FAILED)


def new_pre_session() -> str:
    return secrets.token_urlsafe(32)
