"""What token auth needs at run time, built from the config: ``Door.from_config``.

The server secret is loaded at once, so a gateway with ``auth.mode: token`` and no usable
secret refuses to start (a ``ConfigError`` naming ``auth.secret``); the token store and the
Redis rate limiter connect on first use and are closed by ``aclose`` at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp

from gateway.config import Config, ConfigError

from .gate import FAILURE_BURST, FAILURE_RATE, AuthGate
from .ratelimit import MemoryRateLimiter, RateLimiter, limiter_from_config
from .secret import SecretError, load_hasher
from .store import TokenStore, open_token_store
from .verify import TokenVerifier


@dataclass(slots=True)
class Door:
    config: Config
    store: TokenStore
    verifier: TokenVerifier
    limiter: RateLimiter  # per token
    failures: MemoryRateLimiter  # failed authentications, per client address

    @classmethod
    def from_config(cls, config: Config) -> Door:
        source = config.source or "the config"
        try:
            hasher = load_hasher(config.auth.secret)
        except SecretError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        store = open_token_store(config.auth.store)
        return cls(
            config,
            store,
            TokenVerifier(store, hasher),
            limiter_from_config(config.rate_limit),
            # In memory in every process: refusing a guesser needs no shared state.
            MemoryRateLimiter(rate=FAILURE_RATE, burst=FAILURE_BURST),
        )

    def gate(self, app: ASGIApp) -> AuthGate:
        return AuthGate(app, self.config.auth, self.verifier, self.limiter, self.failures)

    async def aclose(self) -> None:
        await self.verifier.aclose()
        await self.store.aclose()
        await self.limiter.aclose()
        await self.failures.aclose()
