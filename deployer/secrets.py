"""Masking of secret values in everything the tool writes: terminal, logs, error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "****"

# Names that are secret even when a stack forgets to declare them.
_SECRET_NAME = re.compile(r"(secret|password|passwd|token|private|credential)", re.IGNORECASE)

# Values this short are not masked: replacing every "1" or "on" in the output would make it
# unreadable and leak nothing an attacker could not guess. Config validation refuses secrets
# this short instead (see config.MIN_SECRET_LENGTH).
MIN_MASKED_LENGTH = 4


def is_secret_name(name: str) -> bool:
    """`jwt_secret_key`, `DB_PASSWORD`, `frp_token` are secret by name."""
    return bool(_SECRET_NAME.search(name))


class Masker:
    """Replaces every known secret value with `****`.

    >>> m = Masker(["hunter2-long"]); m.mask("pw=hunter2-long")
    'pw=****'
    """

    def __init__(self, values: Iterable[str] = ()):
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: str) -> None:
        # A multi-line secret (a PEM key) reaches a log one line at a time: each line is masked.
        lines = {line.strip() for v in values if "\n" in v for line in v.splitlines()}
        values = (*values, *lines)
        fresh = {v for v in values if v and len(v) >= MIN_MASKED_LENGTH} - self._values
        if not fresh:
            return
        self._values |= fresh
        # Longest first so a secret that contains another is masked whole.
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def mask(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)
