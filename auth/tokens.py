"""What an API token, a token id and a scope look like; no I/O and no secrets kept.

A token is ``zgw_`` + 36 random base62 characters + a 6-character base62 checksum::

    zgw_ DDDDDDDD RRRRRRRRRRRRRRRRRRRRRRRRRRRR CCCCCC    (46 characters, without the spaces)

    D, R  random; D is the display part, shown by ``zerogate token list``
    C     checksum of D and R

Theory of operation:

* 36 characters drawn uniformly from 62 give 214 bits. The display prefix (``zgw_`` and D)
  is stored in clear; the 28 characters of R alone still hold 166 bits, above the 160 the
  design asks for.
* The checksum is the CRC32 of the random part written in base62 at a fixed width (62**6 is
  above 2**32). It is not a secret and proves nothing about validity: it lets a gateway turn
  away a typo or garbage before computing any hash or touching the store, and lets a secret
  scanner recognise a leaked token offline with almost no false positives. CRC32 catches every
  change of one character and every swap of two neighbours.
* Token ids (``tok_`` + 8 base62) name a token in the CLI and in logs; they are not secret.
"""

from __future__ import annotations

import re
import secrets
import string
import zlib
from enum import StrEnum
from typing import Final

PREFIX: Final = "zgw_"
ALPHABET: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_LENGTH: Final = 36
CHECKSUM_LENGTH: Final = 6
TOKEN_LENGTH: Final = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH  # 46
DISPLAY_LENGTH: Final = len(PREFIX) + 8  # "zgw_" and 8 random characters, shown by `list`
ID_PREFIX: Final = "tok_"
ID_RANDOM_LENGTH: Final = 8

# For secret scanners: a token anywhere in a text (its checksum still needs checking).
TOKEN_PATTERN: Final = re.compile(
    rf"\b{PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}\b", re.ASCII
)
_BODY: Final = re.compile(r"[0-9A-Za-z]*", re.ASCII)
_ID: Final = re.compile(rf"{ID_PREFIX}[0-9A-Za-z]{{{ID_RANDOM_LENGTH}}}", re.ASCII)
# service:method, each side a glob of word characters, '-', '.', and glob characters.
_SCOPE: Final = re.compile(r"[\w.*?\[\]!-]+:[\w.*?\[\]!-]+", re.ASCII)


class FormatProblem(StrEnum):
    """Why a string is not a token, as far as can be told without the store."""

    WRONG_PREFIX = "wrong_prefix"
    BAD_LENGTH = "bad_length"
    BAD_CHARACTER = "bad_character"
    BAD_CHECKSUM = "bad_checksum"

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES: Final = {
    FormatProblem.WRONG_PREFIX: f"not a zerogate token (they start with {PREFIX})",
    FormatProblem.BAD_LENGTH: f"a zerogate token has {TOKEN_LENGTH} characters",
    FormatProblem.BAD_CHARACTER: f"a zerogate token has only letters and digits after {PREFIX}",
    FormatProblem.BAD_CHECKSUM: "the token's checksum does not match: a typo or a damaged copy",
}


def generate() -> str:
    """A new token, from the operating system's secure random source."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PREFIX + body + checksum(body)


def checksum(random_part: str) -> str:
    """The CRC32 of ``random_part`` in base62, ``CHECKSUM_LENGTH`` characters wide."""
    value = zlib.crc32(random_part.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def check(text: str) -> FormatProblem | None:
    """What is wrong with ``text`` as a token, or None when it is well formed.

    Well formed is not valid: only the store knows whether the token was issued. The work
    done here depends on the length and format of ``text``, never on any stored secret.
    """
    if not text.startswith(PREFIX):
        return FormatProblem.WRONG_PREFIX
    if len(text) != TOKEN_LENGTH:
        return FormatProblem.BAD_LENGTH
    body = text[len(PREFIX) :]
    if not _BODY.fullmatch(body):
        return FormatProblem.BAD_CHARACTER
    random_part = body[:RANDOM_LENGTH]
    if checksum(random_part) != body[RANDOM_LENGTH:]:
        return FormatProblem.BAD_CHECKSUM
    return None


def is_token(text: str) -> bool:
    """Whether ``text`` is a well-formed token (prefix, length, characters, checksum)."""
    return check(text) is None


def display_prefix(token: str) -> str:
    """The part of a token that may be stored and shown: enough to tell tokens apart."""
    return token[:DISPLAY_LENGTH]


def new_token_id() -> str:
    """A fresh token id, ``tok_`` + 8 base62 characters (about 48 bits: unique enough, and a
    collision is refused by the store and retried)."""
    return ID_PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(ID_RANDOM_LENGTH))


def is_token_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def is_scope(text: str) -> bool:
    """Whether ``text`` is a scope: ``service:method`` where each side is a glob (``calc:*``)."""
    return _SCOPE.fullmatch(text) is not None
