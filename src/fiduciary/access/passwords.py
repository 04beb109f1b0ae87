"""Password rules (NYDFS 500.7(c): block common passwords) and Argon2id hashing."""

from __future__ import annotations

from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fiduciary.errors import FieldProblem, InvalidInput


def _blocklist() -> frozenset[str]:
    text = resources.files("fiduciary.access").joinpath("common_passwords.txt").read_text()
    return frozenset(w.strip().lower() for w in text.splitlines()
                     if w.strip() and not w.startswith("#"))


class Passwords:
    """Argon2id (argon2-cffi's RFC 9106 defaults unless told otherwise) plus the rules."""

    def __init__(self, min_length: int = 12, hasher: PasswordHasher | None = None) -> None:
        self.min_length = min_length
        self.hasher = hasher or PasswordHasher()
        self._blocked = _blocklist()
        # Verified against when a username is unknown, so timing does not tell.
        self._dummy = self.hasher.hash("fiduciary-dummy-password")

    def check_rules(self, password: str, username: str, field: str = "new") -> None:
        problems = []
        if len(password) < self.min_length:
            problems.append(f"at least {self.min_length} characters")
        low = password.lower()
        squeezed = "".join(c for c in low if c.isalnum())
        if low in self._blocked or squeezed in self._blocked or any(
            low.startswith(w) and low[len(w):].isdigit() for w in self._blocked if len(w) > 4
        ):
            problems.append("too common (on the blocklist of breached passwords)")
        if username and username.lower() in low:
            problems.append("must not contain the username")
        if len(set(password)) < 4:
            problems.append("too few distinct characters")
        if problems:
            raise InvalidInput("password rejected: " + "; ".join(problems),
                               [FieldProblem(field, p) for p in problems])

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False
