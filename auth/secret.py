"""The server secret: loading it from where the config points, and its one use, hashing tokens.

Tokens are stored only as HMAC-SHA256(secret, token). A copy of the store alone (a backup, a
Redis snapshot) then cannot be used to check guesses offline, unlike a plain SHA-256. The
config names the secret (``env:NAME`` or ``file:PATH``, a relative path already resolved
against the config file's folder); this module reads it. The secret's value never appears in
a message, a ``repr`` or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Final

from gateway.config import EnvSecret, FileSecret

MIN_SECRET_BYTES: Final = 32  # HMAC-SHA256's own key size
HOW_TO_MAKE: Final = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
_BLANKS: Final = b" \t\r\n"


class SecretError(ValueError):
    """The secret is missing, unreadable or too short; the message says which and where."""


class TokenHasher:
    """Keyed hashes of tokens: ``hash(token)`` is the hex HMAC-SHA256 the store keeps."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_SECRET_BYTES:
            raise SecretError(
                f"the secret has {len(key)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
                f"(make one with: {HOW_TO_MAKE})"
            )
        self._key = key

    def __repr__(self) -> str:
        return "<TokenHasher hmac-sha256>"

    def hash(self, token: str) -> str:
        # hmac.digest is the one-shot C implementation: about a microsecond per token.
        return hmac.digest(self._key, token.encode("utf-8"), hashlib.sha256).hex()


def load_hasher(
    secret: EnvSecret | FileSecret | None, *, environ: Mapping[str, str] | None = None
) -> TokenHasher:
    """A ``TokenHasher`` keyed with the secret the config's ``auth.secret`` names.

    Raises ``SecretError`` when there is none, or when it cannot be read, is empty or is
    shorter than ``MIN_SECRET_BYTES``. Surrounding blanks (a file's final newline) are dropped.
    """
    key, where = _read(secret, os.environ if environ is None else environ)
    key = key.strip(_BLANKS)
    if not key:
        raise SecretError(f"auth.secret: {where} is empty (make a secret with: {HOW_TO_MAKE})")
    try:
        return TokenHasher(key)
    except SecretError as exc:
        raise SecretError(f"auth.secret: {where}: {exc}") from None


def _read(secret: EnvSecret | FileSecret | None, environ: Mapping[str, str]) -> tuple[bytes, str]:
    if secret is None:
        raise SecretError(
            "auth.secret is not set: tokens are stored as keyed hashes and need a server secret "
            "(auth.secret: env:NAME or file:PATH)"
        )
    if isinstance(secret, EnvSecret):
        where = f"environment variable {secret.name}"
        value = environ.get(secret.name)
        if value is None:
            raise SecretError(f"auth.secret: {where} is not set")
        return os.fsencode(value), where
    where = f"file {secret.path}"
    try:
        return secret.path.read_bytes(), where
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise SecretError(f"auth.secret: cannot read {where}: {reason}") from None
