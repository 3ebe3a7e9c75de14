"""``zerogate token``: create, list, revoke and rotate API tokens in the store the config names.

    zerogate token create [-c FILE] --name NAME --scope GLOB [--scope GLOB ...]
                          [--expires 30d] [--rate 10/s] [--burst 20]
    zerogate token list   [-c FILE] [--json]
    zerogate token revoke [-c FILE] ID
    zerogate token rotate [-c FILE] ID [--grace 24h]

``-c`` is as for ``serve``: else ``$ZEROGATE_CONFIG``, else ``zerogate.yaml`` here. ``create``
and ``rotate`` print the new token alone on stdout, the only time it is ever shown; what else
they say goes to stderr, so ``TOKEN=$(zerogate token create ...)`` works. ``list`` never shows
a token or its hash. Revoking and rotating apply to running gateways within their cache's TTL
(5 s). ``create`` and ``rotate`` hash the new token, so they need ``auth.secret``; ``list`` and
``revoke`` do not, so a token can be revoked from a shell without the secret.

Exit status: 0 done, 1 the store refused or failed (unknown id, revoked token, unreachable
store), 2 a usage, config or secret problem (nothing was changed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from auth.secret import SecretError, TokenHasher, load_hasher
from auth.store import (
    StoreError,
    TokenRecord,
    TokenStatus,
    TokenStore,
    issue_token,
    open_token_store,
    rotate_token,
)
from auth.tokens import is_scope
from auth.verify import DEFAULT_CACHE_TTL

from .config import AuthMode, Config, ConfigError, default_config_path, load_config

PROG: Final = "zerogate token"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_GRACE: Final = "24h"
MAX_NAME: Final = 100
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"([0-9]+)([smhdw])")
_RATE: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?)(?:/([sm]))?")


class _Failed(Exception):
    """The command cannot go on; the message is printed and the status returned."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage API tokens in the store the config's auth.store names.",
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = commands.add_parser(
        "create",
        help="make a token and print it, once",
        description="Make a token and print it alone on stdout: it is never shown again.",
    )
    _config_option(create)
    create.add_argument(
        "--name", required=True, type=_name, help="what the token is for (shown by list)"
    )
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        type=_scope,
        metavar="GLOB",
        help="service:method glob the token may call, e.g. 'calc:*' (repeat for more)",
    )
    create.add_argument(
        "--expires",
        type=_duration,
        metavar="DURATION",
        help="lifetime like 90m, 12h, 30d or 2w (default: never expires)",
    )
    create.add_argument(
        "--rate",
        type=_rate,
        help="this token's rate limit, like 10/s or 600/m (default: rate_limit.per_token)",
    )
    create.add_argument(
        "--burst",
        type=_burst,
        metavar="N",
        help="this token's burst, calls at once (default: rate_limit.burst)",
    )
    listing = commands.add_parser(
        "list", help="show every token (never the secrets)", description="Show every token."
    )
    _config_option(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = commands.add_parser(
        "revoke",
        help="revoke a token",
        description=f"Revoke a token; running gateways refuse it within {DEFAULT_CACHE_TTL:g} s.",
    )
    _config_option(revoke)
    revoke.add_argument("id", help="the token's id (tok_...), as list shows it")
    rotate = commands.add_parser(
        "rotate",
        help="give a token a new secret",
        description="Give a token a new secret and print it alone on stdout; the old secret "
        "keeps working for the grace period.",
    )
    _config_option(rotate)
    rotate.add_argument("id", help="the token's id (tok_...), as list shows it")
    rotate.add_argument(
        "--grace",
        type=_grace,
        default=_grace(DEFAULT_GRACE),
        metavar="DURATION",
        help=f"how long the old secret still works, like 0, 30m or 2d (default {DEFAULT_GRACE})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except _Failed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.status


def _run(args: argparse.Namespace) -> int:
    config = _read_config(args)
    if config.auth.mode is AuthMode.NONE:
        _note(
            f"warning: auth.mode is none in {config.source}: the gateway does not ask for "
            "tokens, but the store is managed all the same"
        )
    action: str = args.action
    if action == "list":
        return _with_store(config, lambda store: _list(store, as_json=args.json))
    if action == "revoke":
        return _with_store(config, lambda store: _revoke(store, args.id))
    hasher = _hasher(config)
    if action == "create":
        return _with_store(config, lambda store: _create(store, hasher, args))
    return _with_store(config, lambda store: _rotate(store, hasher, args.id, args.grace))


async def _create(store: TokenStore, hasher: TokenHasher, args: argparse.Namespace) -> int:
    now = time.time()
    new = await issue_token(
        store,
        hasher,
        name=args.name,
        scopes=args.scope,
        now=now,
        expires_at=None if args.expires is None else now + args.expires,
        rate=args.rate,
        burst=args.burst,
    )
    print(new.token, flush=True)
    record = new.record
    _note(
        f"created {record.id} ({record.name!r}, scopes {' '.join(record.scopes)}, "
        f"expires {_when(record.expires_at)}); the token above is shown only this once"
    )
    return EXIT_OK


async def _list(store: TokenStore, *, as_json: bool) -> int:
    records = await store.records()
    now = time.time()
    if as_json:
        print(json.dumps([_public(record, now) for record in records], indent=2))
        return EXIT_OK
    header = ("ID", "NAME", "PREFIX", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED")
    rows = [header] + [
        (
            record.id,
            record.name,
            record.prefix + "...",
            ",".join(record.scopes),
            _status(record, now),
            _when(record.created_at),
            _when(record.expires_at),
            _when(record.last_used_at),
        )
        for record in records
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if not records:
        _note(f"no tokens yet; make one with: {PROG} create --name NAME --scope 'service:*'")
    return EXIT_OK


async def _revoke(store: TokenStore, token_id: str) -> int:
    now = time.time()
    record = await store.revoke(token_id, now)
    if record is None:
        raise _Failed(f"no token {token_id} in the store")
    if record.revoked_at is not None and record.revoked_at < now:
        _note(f"{record.id} ({record.name!r}) was revoked already, at {_when(record.revoked_at)}")
    else:
        _note(
            f"revoked {record.id} ({record.name!r}); running gateways refuse it within "
            f"{DEFAULT_CACHE_TTL:g} s"
        )
    return EXIT_OK


async def _rotate(store: TokenStore, hasher: TokenHasher, token_id: str, grace: float) -> int:
    now = time.time()
    old = await store.get(token_id)
    if old is None:
        raise _Failed(f"no token {token_id} in the store")
    status = old.status(now)
    if status in (TokenStatus.REVOKED, TokenStatus.EXPIRED):
        raise _Failed(f"{token_id} is {status}: create a new token instead")
    if status is TokenStatus.ROTATING:
        # One previous secret is kept: the one being replaced now.
        _note(f"the secret {token_id} had before its last rotation stops working now")
    new = await rotate_token(store, hasher, token_id, valid_until=now + grace if grace else None)
    if new is None:
        raise _Failed(f"no token {token_id} in the store")
    print(new.token, flush=True)
    if grace:
        until = f"the old secret works until {_when(new.record.previous_valid_until)}"
    else:
        until = f"the old secret is refused within {DEFAULT_CACHE_TTL:g} s"
    _note(f"rotated {token_id} ({new.record.name!r}); {until}; the token above is shown only once")
    return EXIT_OK


def _read_config(args: argparse.Namespace) -> Config:
    path = args.config if args.config is not None else default_config_path()
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _Failed(str(exc), EXIT_USAGE) from None


def _hasher(config: Config) -> TokenHasher:
    try:
        return load_hasher(config.auth.secret)
    except SecretError as exc:
        raise _Failed(f"{config.source}: {exc}", EXIT_USAGE) from None


def _with_store(config: Config, work: Callable[[TokenStore], Awaitable[int]]) -> int:
    async def run() -> int:
        store = open_token_store(config.auth.store)
        try:
            return await work(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise _Failed(str(exc)) from None


def _public(record: TokenRecord, now: float) -> dict[str, object]:
    """What ``list --json`` shows of a record: everything but the hashes."""
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "status": str(record.status(now)),
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "last_used_at": _iso(record.last_used_at),
        "revoked_at": _iso(record.revoked_at),
        "previous_valid_until": _iso(record.previous_valid_until),
        "rate": record.rate,
        "burst": record.burst,
    }


def _status(record: TokenRecord, now: float) -> str:
    status = record.status(now)
    if status is TokenStatus.ROTATING:
        return f"rotating (old secret until {_when(record.previous_valid_until)})"
    return str(status)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(moment: float | None) -> str:
    return _iso(moment) or "-"


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="the config file (default: $ZEROGATE_CONFIG, else zerogate.yaml here)",
    )


# argparse types: each returns the value or says what was expected.


def _name(text: str) -> str:
    # Shown in list's table, one line per token: no control characters.
    if not text.strip() or len(text) > MAX_NAME or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"expected a name of 1 to {MAX_NAME} printable characters, got {text!r}"
        )
    return text


def _scope(text: str) -> str:
    if not is_scope(text):
        raise argparse.ArgumentTypeError(
            f"expected a service:method glob like 'calc:*', got {text!r}"
        )
    return text


def _duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90m, 12h, 30d or 2w, got {text!r}"
        )
    return float(int(match[1]) * _UNITS[match[2]])


def _grace(text: str) -> float:
    return 0.0 if text.strip() == "0" else _duration(text)


def _rate(text: str) -> float:
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected a rate like 10/s or 600/m, got {text!r}")
    return float(match[1]) / (60.0 if match[2] == "m" else 1.0)


def _burst(text: str) -> int:
    try:
        burst = int(text)
    except ValueError:
        burst = 0
    if burst < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return burst


if __name__ == "__main__":
    sys.exit(main())
