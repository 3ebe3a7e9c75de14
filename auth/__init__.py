"""auth: API tokens, scopes and rate limits in front of the RPC network.

Tokens (``zgw_`` + random + checksum, DESIGN.md "HTTP API") are checked offline by
``auth.tokens``, hashed with the server secret by ``auth.secret``, kept by a store of
``auth.store`` (SQLite or Redis) and verified with a short-lived cache by ``auth.verify``::

    hasher = load_hasher(config.auth.secret)          # SecretError: refuse to start
    store = open_token_store(config.auth.store)
    verifier = TokenVerifier(store, hasher)
    info = await verifier.verify(presented)           # TokenRejected(reason) or TokenInfo
    info.allows("calc", "add")
"""

from .secret import MIN_SECRET_BYTES, SecretError, TokenHasher, load_hasher
from .store import (
    DuplicateToken,
    NewToken,
    RedisTokenStore,
    SqliteTokenStore,
    StoreError,
    TokenRecord,
    TokenStatus,
    TokenStore,
    issue_token,
    open_token_store,
    rotate_token,
)
from .tokens import FormatProblem, is_scope, is_token
from .verify import DEFAULT_CACHE_TTL, Reason, TokenInfo, TokenRejected, TokenVerifier

__all__ = [
    "DEFAULT_CACHE_TTL",
    "MIN_SECRET_BYTES",
    "DuplicateToken",
    "FormatProblem",
    "NewToken",
    "Reason",
    "RedisTokenStore",
    "SecretError",
    "SqliteTokenStore",
    "StoreError",
    "TokenHasher",
    "TokenInfo",
    "TokenRecord",
    "TokenRejected",
    "TokenStatus",
    "TokenStore",
    "TokenVerifier",
    "is_scope",
    "is_token",
    "issue_token",
    "load_hasher",
    "open_token_store",
    "rotate_token",
]
