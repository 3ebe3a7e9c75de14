"""The door: authentication and rate limits for every HTTP request (DESIGN.md, "HTTP API").

``AuthGate`` is a plain ASGI layer in front of the gateway's routes. A request to a public
path (``auth.public``, and the docs pages when ``auth.docs`` is ``public``) passes as is.
Any other request must carry ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``
(never a query-string token); RFC 6750 says how each refusal is answered:

    no credentials                    401  WWW-Authenticate: Bearer realm="zerogate"
    malformed, unknown, revoked, ...  401  ... error="invalid_token"
    two different credentials         400  ... error="invalid_request"
    over the token's rate             429  Retry-After, RateLimit-*
    too many failures from an address 429  Retry-After
    the token store cannot answer     503  Retry-After

Every answer to a token-bearing request carries ``RateLimit-Limit``, ``-Remaining`` and
``-Reset``. A request that passes gets its ``TokenInfo`` in ``RequestInfo.token``: scopes
are checked later, against the RPC target the request resolves to (``authorize``), never
against the raw path; and the token's id and name ride in every RPC header it causes
(``RequestInfo.metadata``, given to each call), the credential never does. One warning line
per refused request names the reason, the token's display prefix, the address and the trace
id.

The trace views (``/traces``, ``/stats``) show the calls of every service, other callers'
included, so they need an operator's token: one of scope ``*:*`` (``authorize_operator``).

A browser cannot send a bearer header when it opens a page, so the pages a person reads (the
trace views, and the docs' data when ``auth.docs`` is ``token``) also take HTTP Basic
credentials, the token as the password (or as the user name, when the password is empty),
and their 401s carry a Basic challenge too, so that the browser asks for it. Only there,
and only on GET and HEAD: a browser sends the credentials it was given with every request to
the gateway, cross-site ones included, and these pages only read.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Awaitable
from typing import Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import AuthConfig, DocsAccess
from gateway.http_io import raw_route_path
from gateway.observe import RequestInfo, request_info
from gateway.problems import PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED, Problem
from gateway.responses import problem_response

from .ratelimit import Decision, MemoryRateLimiter, RateLimiter, address_key, token_key
from .store import StoreError
from .tokens import display_prefix
from .verify import TokenInfo, TokenRejected, TokenVerifier

log = logging.getLogger("zerogate.auth")

REALM: Final = 'Bearer realm="zerogate"'
# The second challenge of a page's 401, for the browser: it asks for a user name and password.
BASIC_CHALLENGE: Final = (b"www-authenticate", b'Basic realm="zerogate", charset="UTF-8"')
# Pages that hold no data: public even when the document itself needs a token (a browser
# cannot send a bearer header when it opens a page).
DOCS_PAGES: Final = ("/docs", "/docs/assets/")
DOCS_DATA: Final = ("/openapi.json", "/redoc")
# The pages a person reads in a browser (GET and HEAD only): Basic credentials are read there.
BROWSER_PAGES: Final = frozenset({"/traces", "/stats", *DOCS_DATA})
BROWSER_PAGE_PREFIXES: Final = ("/traces/",)
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
# Failed authentications allowed per client address: a burst, then this rate.
FAILURE_RATE: Final = 1.0  # per second
FAILURE_BURST: Final = 20
# The scope that makes a token an operator's: it may read the trace views.
OPERATOR_SCOPE: Final = "*:*"
METADATA_ID: Final = "zerogate_token_id"
METADATA_NAME: Final = "zerogate_token_name"
_CALLER_CACHE: Final = 10_000


def public_paths(config: AuthConfig) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact paths, path prefixes) open without a token."""
    exact = set(config.public)
    prefixes: list[str] = []
    exact.add(DOCS_PAGES[0])
    prefixes.append(DOCS_PAGES[1])
    if config.docs is DocsAccess.PUBLIC:
        exact.update(DOCS_DATA)
    return frozenset(exact), tuple(prefixes)


def is_browser_page(scope: Scope) -> bool:
    """Whether the request reads a page a person opens in a browser (see the module doc),
    where Basic credentials are read."""
    if scope["method"] not in _SAFE_METHODS:
        return False
    path = raw_route_path(scope)
    return path in BROWSER_PAGES or path.startswith(BROWSER_PAGE_PREFIXES)


class Credentials:
    """What the request presented."""

    __slots__ = ("conflict", "other_scheme", "token", "via_query")

    def __init__(self) -> None:
        self.token: str | None = None
        self.conflict = False  # two different tokens (or two Authorization headers)
        self.via_query = False  # no header, but the query string looks like it holds one
        self.other_scheme: str | None = None  # an Authorization scheme not read here


_CREDENTIAL_HEADERS: Final = frozenset({b"authorization", b"x-api-key"})
_QUERY_NAMES: Final = (b"access_token=", b"api_key=", b"apikey=", b"token=")


def basic_token(encoded: str) -> str:
    """The token in Basic credentials (base64 of ``user:password``): the password, or the
    user name when the password is empty; "" when they are not base64 of that."""
    try:
        decoded = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
        user, colon, password = decoded.decode("utf-8").partition(":")
    except (UnicodeError, binascii.Error):
        return ""
    return (password or user).strip() if colon else ""


def credentials(scope: Scope, *, basic: bool = False) -> Credentials:
    """What the request presented; ``basic``: Basic credentials are read (``is_browser_page``)."""
    found = Credentials()
    seen: list[str] = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "bearer":
                seen.append(rest.strip())
            elif scheme == "basic" and basic:
                seen.append(basic_token(rest.strip()))
            else:
                seen.append("")
                found.other_scheme = scheme
        elif name == b"x-api-key":
            seen.append(value.decode("latin-1").strip())
    if seen:
        found.token = seen[0]
        found.conflict = any(other != seen[0] for other in seen[1:])
    else:
        query: bytes = scope.get("query_string", b"")
        found.via_query = any(query.startswith(key) or b"&" + key in query for key in _QUERY_NAMES)
    return found


def unauthenticated(detail: str, error: str | None = None) -> Problem:
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return Problem(401, detail, code=UNAUTHENTICATED, headers={"WWW-Authenticate": challenge})


def authorize(info: RequestInfo, service: str, method: str) -> None:
    """403 unless the request's token (if auth is on) may call ``service.method``."""
    token = info.token
    if token is not None and not token.allows(service, method):
        raise Problem(
            403,
            f"the token {token.name!r} may not call {service}.{method}",
            code=PERMISSION_DENIED,
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
            rpc={"service": service, "method": method},
        )


def authorize_operator(info: RequestInfo, what: str) -> None:
    """403 unless the request's token (if auth is on) is an operator's (scope ``*:*``):
    ``what`` (traces, statistics) shows every service's calls, those of other callers too, so
    a token that may call only some methods must not read it."""
    token = info.token
    if token is not None and OPERATOR_SCOPE not in token.scopes:
        raise Problem(
            403,
            f"the token {token.name!r} may not read {what}: that needs the scope {OPERATOR_SCOPE}",
            code=PERMISSION_DENIED,
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )


class AuthGate:
    """Authenticates and rate-limits every non-public HTTP request (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        config: AuthConfig,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        failures: MemoryRateLimiter,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.limiter = limiter
        self.failures = failures  # keyed by client address
        self.exact, self.prefixes = public_paths(config)
        self._memory = limiter if isinstance(limiter, MemoryRateLimiter) else None
        self._callers: dict[str, tuple[dict[str, str], str]] = {}

    def _identified(self, info: RequestInfo, token: TokenInfo) -> str:
        """Put ``token`` and the RPC header keys naming it in the request's info; return its
        rate-limit bucket (both made once per token, not per request)."""
        found = self._callers.get(token.id)
        if found is None or found[0][METADATA_NAME] != token.name:
            if len(self._callers) >= _CALLER_CACHE:
                self._callers.clear()
            metadata = {METADATA_ID: token.id, METADATA_NAME: token.name}
            found = self._callers[token.id] = (metadata, token_key(token.id))
        info.token, info.metadata = token, found[0]
        return found[1]

    def is_public(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine of its own: the usual request is decided without awaiting anything
        # (a token verified moments ago, a memory bucket), and goes on as the inner app's
        # awaitable; anything else takes the whole way (``_admit_and_call``).
        if scope["type"] != "http" or self.is_public(raw_route_path(scope)):
            return self.app(scope, receive, send)
        info = request_info(scope)
        token = self._verified_now(scope)
        memory = self._memory
        if token is None or memory is None:
            return self._admit_and_call(scope, receive, send, info, token)
        bucket = self._identified(info, token)
        refusal = self._limited(
            scope, info, memory.hit_now(bucket, rate=token.rate, burst=token.burst)
        )
        if refusal is not None:
            return problem_response(refusal, info)(scope, receive, send)
        return self.app(scope, receive, send)

    async def _admit_and_call(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        token: TokenInfo | None,
    ) -> None:
        try:
            if token is None:
                token = await self._verify(scope, info)
            bucket = self._identified(info, token)
            refusal = self._limited(
                scope, info, await self.limiter.hit(bucket, rate=token.rate, burst=token.burst)
            )
            if refusal is not None:
                raise refusal
        except Problem as problem:
            if problem.status == 401 and is_browser_page(scope):
                info.response_headers.append(BASIC_CHALLENGE)
            await problem_response(problem, info)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _limited(self, scope: Scope, info: RequestInfo, decision: Decision) -> Problem | None:
        """Add the RateLimit-* headers of ``decision`` to the answer; the 429 when it refuses."""
        info.response_headers += decision.headers()
        if decision.allowed:
            return None
        self._refused(scope, info, "rate limited", _presented(scope))
        assert info.token is not None  # _identified came first
        return Problem(
            429,
            f"the token {info.token.name!r} is over its rate limit of {decision.limit} calls "
            f"in a burst; retry after {decision.retry_after_seconds} s",
            code=RESOURCE_EXHAUSTED,
        )

    def _verified_now(self, scope: Scope) -> TokenInfo | None:
        """The usual request, decided from caches without a coroutine: one credential header,
        a token verified moments ago, no failed authentication anywhere lately. None sends
        the request the whole way (``_verify``), which decides every other case."""
        if len(self.failures):
            return None  # some address is being limited: the whole way checks this one
        found: bytes | None = None
        bearer = False
        for name, value in scope["headers"]:
            if name in _CREDENTIAL_HEADERS:
                if found is not None:
                    return None  # two credentials: the whole way says whether they conflict
                found, bearer = value, name == b"authorization"
        if found is None:
            return None
        if bearer:
            if not found.startswith(b"Bearer "):
                return None
            found = found[7:]
        try:
            # A presented string with stray spaces or another scheme's case is no cached
            # token: the whole way normalizes it.
            return self.verifier.verify_cached(found.decode("latin-1"))
        except TokenRejected:
            return None

    async def _verify(self, scope: Scope, info: RequestInfo) -> TokenInfo:
        found = credentials(scope, basic=is_browser_page(scope))
        presented = found.token
        if presented is None:
            detail = "this request needs a token: Authorization: Bearer <token>, or X-API-Key"
            if found.via_query:
                detail += " (tokens in the query string are not accepted)"
            self._refused(scope, info, "no credentials", None)
            raise unauthenticated(detail)
        # An address out of failures is refused before its guess is checked: a guesser learns
        # nothing more until its bucket refills (users behind the same address wait too).
        # (No failure anywhere, the usual case: no address to parse.)
        address = address_key(_client_address(scope)) if len(self.failures) else None
        wait = self.failures.retry_after(address) if address is not None else 0
        if wait:
            self._refused(scope, info, "too many failures from this address", presented)
            raise _too_many_failures(wait)
        if found.conflict:
            self._refused(scope, info, "conflicting credentials", presented)
            raise Problem(
                400,
                "the request carries two different credentials",
                code=UNAUTHENTICATED,
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_request"'},
            )
        try:
            return self.verifier.verify_cached(presented) or await self.verifier.verify(presented)
        except TokenRejected as rejected:
            self._refused(scope, info, rejected.reason.value, presented)
            await self.failures.hit(address or address_key(_client_address(scope)))
            detail = f"the token is not valid: {rejected}"
            if found.other_scheme == "basic" and not presented:
                detail += " (Basic credentials are read by the trace and docs pages only: send"
                detail += " Authorization: Bearer <token>)"
            elif found.other_scheme is not None and not presented:
                detail += " (the Authorization scheme must be Bearer)"
            raise unauthenticated(detail, "invalid_token") from None
        except StoreError as exc:
            log.error("token store unavailable (trace_id %s): %s", info.trace.trace_id, exc)
            raise Problem(
                503,
                "tokens cannot be checked right now",
                code="unavailable",
                headers={"Retry-After": "1"},
            ) from None

    @staticmethod
    def _refused(scope: Scope, info: RequestInfo, reason: str, presented: str | None) -> None:
        client = scope.get("client")
        log.warning(
            "refused %s %r: %s (token %s, address %s, trace_id %s)",
            scope["method"],
            scope["path"][:200],  # %r: a path with CR/LF in it cannot forge log lines
            reason,
            _shown(presented),
            client[0] if client else "?",
            info.trace.trace_id,
        )


def _presented(scope: Scope) -> str | None:
    return credentials(scope, basic=is_browser_page(scope)).token


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _too_many_failures(wait: int) -> Problem:
    return Problem(
        429,
        "too many failed authentications from this address",
        code=RESOURCE_EXHAUSTED,
        headers={"Retry-After": str(wait)},
    )


def _shown(presented: str | None) -> str:
    """The token's display prefix (never the secret part), or a description."""
    if presented is None:
        return "none"
    if presented.startswith("zgw_") and len(presented) > 16:
        return display_prefix(presented) + "..."
    return "not a zgw_ token"


def scoped_service(name: str, entry: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
    """A service's catalog entry limited to what the request's token may call."""
    token = info.token
    methods = entry.get("methods")
    if token is None or not isinstance(methods, dict):
        return entry
    return {**entry, "methods": {m: v for m, v in methods.items() if token.allows(name, m)}}


def scoped_catalog(catalog: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
    """``GET /rpc`` limited to what the request's token may call (unchanged without auth)."""
    if info.token is None:
        return catalog
    services = catalog["services"]
    return {**catalog, "services": {n: scoped_service(n, e, info) for n, e in services.items()}}
