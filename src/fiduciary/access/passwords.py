"""Password rules (NYDFS 500.7(c): block common passwords; a strength estimate) and Argon2id
hashing, at most N hashes at once.

Strength is estimated with zxcvbn (the Python port of Dropbox's estimator, maintained; it
knows dictionaries, names, keyboard patterns, dates and l33t substitutions), told the username
and the words of this trade (an insurer's staff pick "Insurance2026!"). The blocklist of
breached passwords still applies on top, with trailing digits and punctuation stripped.

Argon2id is memory-hard (64 MiB per hash by default): a burst of logins must not take the
machine's memory or every CPU, so hashing goes through a semaphore, and callers run it outside
any database transaction.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from fiduciary.errors import FieldProblem, InvalidInput, RateLimited

#: zxcvbn's scale: 3 is "safely unguessable: moderate protection from offline slow-hash
#: scenarios" (about 10^8 guesses and more); 4 is 10^10 and more.
MIN_SCORE = 3
#: Longer passwords are refused when set and fail at login without being hashed.
MAX_LENGTH = 256
#: zxcvbn's cost grows with length; what follows this many characters adds no weakness.
_ESTIMATE_CHARS = 100
#: Words an attacker tries first at an insurer, lowered further by zxcvbn.
CONTEXT_WORDS = ("fiduciary", "insurance", "insurer", "assurance", "policy", "claims",
                 "underwriting", "premium", "password", "welcome", "company")
_EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")
#: How long a caller waits for a hashing slot before being told to come back.
_SLOT_WAIT_SECONDS = 20.0


def _text(value: object) -> bool:
    """A string that encodes to UTF-8 (JSON can carry lone surrogates, which do not)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _blocklist() -> frozenset[str]:
    text = resources.files("fiduciary.access").joinpath("common_passwords.txt").read_text()
    return frozenset(w.strip().lower() for w in text.splitlines()
                     if w.strip() and not w.startswith("#"))


class Passwords:
    """Argon2id (argon2-cffi's RFC 9106 defaults unless told otherwise) plus the rules."""

    def __init__(self, min_length: int = 12, hasher: PasswordHasher | None = None,
                 concurrency: int = 4) -> None:
        self.min_length = min_length
        self.hasher = hasher or PasswordHasher()
        self._blocked = _blocklist()
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        # Verified against when a username is unknown, so timing does not tell.
        self._dummy = self.hasher.hash("fiduciary-dummy-password")

    def check_rules(self, password: str, username: str, field: str = "new") -> None:
        problems = []
        if not _text(password):
            raise InvalidInput("password rejected: not valid text",
                               [FieldProblem(field, "not valid text")])
        if len(password) < self.min_length:
            problems.append(f"at least {self.min_length} characters")
        if len(password) > MAX_LENGTH:
            problems.append(f"at most {MAX_LENGTH} characters")
        low = password.lower()
        squeezed = "".join(c for c in low if c.isalnum())
        core = _EDGES.sub("", low)
        if {low, squeezed, core} & self._blocked or any(
            low.startswith(w) and low[len(w):].isdigit() for w in self._blocked if len(w) > 4
        ):
            problems.append("too common (on the blocklist of breached passwords)")
        if username and username.lower() in low:
            problems.append("must not contain the username")
        if len(set(password)) < 4:
            problems.append("too few distinct characters")
        if not problems and len(password) <= MAX_LENGTH:
            estimate = zxcvbn(password[:_ESTIMATE_CHARS],
                              user_inputs=[username, *CONTEXT_WORDS] if username
                              else list(CONTEXT_WORDS))
            if int(estimate["score"]) < MIN_SCORE:
                problems.append("too easy to guess (dictionary words, names, dates or "
                                "patterns): use a longer passphrase of unrelated words")
        if problems:
            raise InvalidInput("password rejected: " + "; ".join(problems),
                               [FieldProblem(field, p) for p in problems])

    def _slot(self) -> None:
        if not self._slots.acquire(timeout=_SLOT_WAIT_SECONDS):
            raise RateLimited("too many password checks at once; try again shortly", 5)

    def hash(self, password: str) -> str:
        self._slot()
        try:
            return self.hasher.hash(password)
        finally:
            self._slots.release()

    def verify(self, stored: str | None, password: str,
               before: Callable[[], None] | None = None) -> bool:
        """Whether ``password`` matches ``stored`` (None, or an unusable hash: never, after
        the same work as a real check). ``before`` runs once a hashing slot is held (and may
        raise): what changed while the caller waited is checked before the work is done."""
        if not _text(password) or len(password) > MAX_LENGTH * 4:
            return False  # never a valid password; not worth a hash
        usable = stored is not None and stored.startswith("$argon2")
        self._slot()
        try:
            if before is not None:
                before()
            return self.hasher.verify(stored if usable and stored else self._dummy,
                                      password) and usable
        except (VerificationError, InvalidHashError):
            return False
        finally:
            self._slots.release()
