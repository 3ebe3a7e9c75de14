"""``zerogate token`` end to end: each command runs in its own process on a real config file
and store, and the tokens it prints are checked with a TokenVerifier on the same store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from auth_support import opened, run_async

from auth import tokens
from auth.secret import TokenHasher
from auth.store import RedisTokenStore, SqliteTokenStore, TokenStore
from auth.verify import Reason, TokenInfo, TokenRejected, TokenVerifier

SECRET = "cli-test-secret-" + "x" * 32
ENV_NAME = "ZG_TEST_SECRET"
TIMEOUT = 60.0


@dataclass
class Ran:
    status: int
    out: str
    err: str


@dataclass
class Setup:
    folder: Path
    config: Path
    store: Callable[[], TokenStore]

    def run(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
        """``zerogate token ARGS`` with ``-c`` this config unless ARGS give one."""
        if args and args[0] in ("create", "list", "revoke", "rotate") and "-c" not in args:
            args = (args[0], "-c", str(self.config), *args[1:])
        return token_command(*args, env=env, cwd=cwd or self.folder)

    def create(self, *args: str) -> str:
        ran = self.run("create", "--name", "ci", "--scope", "calc:*", *args)
        assert ran.status == 0, ran.err
        return ran.out.strip()


def token_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path, via_cli: bool = False
) -> Ran:
    base = {key: value for key, value in os.environ.items() if key != "ZEROGATE_CONFIG"}
    base[ENV_NAME] = SECRET
    argv = (
        [sys.executable, "-m", "gateway.cli", "token"]
        if via_cli
        else [sys.executable, "-m", "gateway.token_command"]
    )
    done = subprocess.run(
        [*argv, *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def write_config(folder: Path, store: str, *, mode: str = "token", secret: bool = True) -> Path:
    config = folder / "zerogate.yaml"
    lines = ["auth:", f"  mode: {mode}", f"  store: {store}"]
    if secret:
        lines.append(f"  secret: env:{ENV_NAME}")
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def sqlite_setup(tmp_path: Path) -> Setup:
    config = write_config(tmp_path, "sqlite:///tokens.db")
    return Setup(tmp_path, config, lambda: SqliteTokenStore(tmp_path / "tokens.db"))


@run_async
async def verify(setup: Setup, token: str, results: list[TokenInfo | Reason]) -> None:
    async with opened(setup.store) as store:
        verifier = TokenVerifier(store, TokenHasher(SECRET.encode()))
        try:
            results.append(await verifier.verify(token))
        except TokenRejected as exc:
            results.append(exc.reason)
        await verifier.aclose()


def check(setup: Setup, token: str) -> TokenInfo | Reason:
    results: list[TokenInfo | Reason] = []
    verify(setup, token, results)
    return results[0]


def test_create_prints_the_token_alone_and_it_works(sqlite_setup: Setup) -> None:
    ran = sqlite_setup.run(
        "create",
        "--name",
        "deploy bot",
        "--scope",
        "calc:*",
        "--scope",
        "users:get_*",
        "--expires",
        "30d",
        "--rate",
        "600/m",
        "--burst",
        "20",
    )
    assert ran.status == 0, ran.err
    token = ran.out.removesuffix("\n")
    assert "\n" not in token
    assert tokens.is_token(token)
    assert "shown only this once" in ran.err
    assert token not in ran.err
    info = check(sqlite_setup, token)
    assert isinstance(info, TokenInfo)
    assert (info.name, info.scopes, info.rate, info.burst) == (
        "deploy bot",
        ("calc:*", "users:get_*"),
        10.0,
        20,
    )
    assert info.expires_at is not None
    assert abs(info.expires_at - (time.time() + 30 * 86400)) < 60
    assert info.id in ran.err


def test_list_shows_each_token_but_never_a_secret(sqlite_setup: Setup) -> None:
    first = sqlite_setup.create()
    second = sqlite_setup.create("--expires", "12h")
    ran = sqlite_setup.run("list")
    assert ran.status == 0, ran.err
    hasher = TokenHasher(SECRET.encode())
    for token in (first, second):
        assert token not in ran.out
        assert token[: tokens.DISPLAY_LENGTH] in ran.out  # the display prefix
        assert token[tokens.DISPLAY_LENGTH :] not in ran.out
        assert hasher.hash(token) not in ran.out
    header, *rows = ran.out.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "PREFIX",
        "SCOPES",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "LAST",
        "USED",
    ]
    assert len(rows) == 2
    assert all("calc:*" in row and "active" in row for row in rows)
    listed = json.loads(sqlite_setup.run("list", "--json").out)
    assert [entry["prefix"] for entry in listed] == [first[:12], second[:12]]
    assert listed[0]["expires_at"] is None
    assert listed[1]["expires_at"].endswith("Z")
    assert "token_hash" not in listed[0]


def test_list_of_an_empty_store_says_how_to_start(sqlite_setup: Setup) -> None:
    ran = sqlite_setup.run("list")
    assert ran.status == 0
    assert "no tokens yet" in ran.err


def test_revoke_takes_the_id_and_refuses_the_token(sqlite_setup: Setup) -> None:
    token = sqlite_setup.create()
    info = check(sqlite_setup, token)
    assert isinstance(info, TokenInfo)
    ran = sqlite_setup.run("revoke", info.id)
    assert ran.status == 0, ran.err
    assert f"revoked {info.id}" in ran.err
    assert "within 5 s" in ran.err
    assert check(sqlite_setup, token) is Reason.REVOKED
    again = sqlite_setup.run("revoke", info.id)
    assert again.status == 0
    assert "revoked already" in again.err
    assert "revoked" in sqlite_setup.run("list").out
    missing = sqlite_setup.run("revoke", "tok_00000000")
    assert missing.status == 1
    assert "no token tok_00000000" in missing.err


def test_rotate_prints_a_new_token_and_the_old_one_works_for_the_grace(
    sqlite_setup: Setup,
) -> None:
    old = sqlite_setup.create()
    info = check(sqlite_setup, old)
    assert isinstance(info, TokenInfo)
    ran = sqlite_setup.run("rotate", info.id, "--grace", "2h")
    assert ran.status == 0, ran.err
    new = ran.out.strip()
    assert tokens.is_token(new)
    assert new != old
    assert "the old secret works until" in ran.err
    still = check(sqlite_setup, old)
    assert isinstance(still, TokenInfo)
    assert still.grace_until is not None
    assert abs(still.grace_until - (time.time() + 7200)) < 60
    renewed = check(sqlite_setup, new)
    assert isinstance(renewed, TokenInfo)
    assert (renewed.id, renewed.grace_until) == (info.id, None)
    assert "rotating" in sqlite_setup.run("list").out
    # Without a grace the secret it replaces stops at once.
    newest = sqlite_setup.run("rotate", info.id, "--grace", "0")
    assert newest.status == 0, newest.err
    assert check(sqlite_setup, new) is Reason.UNKNOWN
    assert isinstance(check(sqlite_setup, newest.out.strip()), TokenInfo)


def test_rotate_refuses_unknown_and_revoked_tokens(sqlite_setup: Setup) -> None:
    info = check(sqlite_setup, sqlite_setup.create())
    assert isinstance(info, TokenInfo)
    assert sqlite_setup.run("revoke", info.id).status == 0
    ran = sqlite_setup.run("rotate", info.id)
    assert (ran.status, ran.out) == (1, "")
    assert "revoked: create a new token instead" in ran.err
    assert sqlite_setup.run("rotate", "tok_00000000").status == 1


def test_a_missing_or_short_secret_is_a_usage_error_and_nothing_is_made(
    sqlite_setup: Setup,
) -> None:
    create = ("create", "--name", "x", "--scope", "calc:*")
    ran = sqlite_setup.run(*create, env={ENV_NAME: ""})
    assert (ran.status, ran.out) == (2, "")
    assert f"environment variable {ENV_NAME} is empty" in ran.err
    ran = sqlite_setup.run(*create, env={ENV_NAME: "hunter2"})
    assert (ran.status, ran.out) == (2, "")
    assert "at least 32 random bytes" in ran.err
    assert "hunter2" not in ran.err
    assert not (sqlite_setup.folder / "tokens.db").exists()


def test_without_any_secret_configured_create_stops_but_list_and_revoke_work(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "sqlite:///tokens.db", mode="none", secret=False)
    setup = Setup(tmp_path, config, lambda: SqliteTokenStore(tmp_path / "tokens.db"))
    ran = setup.run("create", "--name", "x", "--scope", "calc:*")
    assert ran.status == 2
    assert "auth.secret is not set" in ran.err
    listed = setup.run("list")
    assert listed.status == 0
    assert "auth.mode is none" in listed.err  # a warning: the gateway asks for no token
    assert setup.run("revoke", "tok_00000000").status == 1


def test_auth_mode_none_still_manages_the_store_with_a_warning(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///tokens.db", mode="none")
    setup = Setup(tmp_path, config, lambda: SqliteTokenStore(tmp_path / "tokens.db"))
    ran = setup.run("create", "--name", "x", "--scope", "calc:*")
    assert ran.status == 0
    assert "warning: auth.mode is none" in ran.err
    assert isinstance(check(setup, ran.out.strip()), TokenInfo)


def test_the_config_is_found_like_serve_finds_it(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    config = write_config(folder, "sqlite:///tokens.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # $ZEROGATE_CONFIG, and the store's relative path is relative to the config file.
    ran = token_command(
        "create",
        "--name",
        "x",
        "--scope",
        "calc:*",
        cwd=elsewhere,
        env={"ZEROGATE_CONFIG": str(config)},
    )
    assert ran.status == 0, ran.err
    assert (folder / "tokens.db").exists()
    # zerogate.yaml in the working directory.
    assert token_command("list", cwd=folder).status == 0
    missing = token_command("list", cwd=elsewhere)
    assert missing.status == 2
    assert "zerogate.yaml: no such config file" in missing.err


def test_a_wrong_config_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "zerogate.yaml").write_text("auth:\n  mode: token\n  stor: x\n")
    ran = token_command("list", cwd=tmp_path)
    assert ran.status == 2
    assert "line 3" in ran.err
    assert "auth.stor" in ran.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["create", "--scope", "calc:*"], "--name"),
        (["create", "--name", "a\nb", "--scope", "calc:*"], "printable"),
        (["create", "--name", " ", "--scope", "calc:*"], "printable"),
        (["create", "--name", "x"], "--scope"),
        (["create", "--name", "x", "--scope", "calc"], "service:method"),
        (["create", "--name", "x", "--scope", "a:b", "--expires", "3x"], "like 90m, 12h, 30d"),
        (["create", "--name", "x", "--scope", "a:b", "--expires", "0d"], "like 90m, 12h, 30d"),
        (["create", "--name", "x", "--scope", "a:b", "--rate", "fast"], "like 10/s"),
        (["create", "--name", "x", "--scope", "a:b", "--burst", "0"], "integer >= 1"),
        (["rotate", "tok_00000000", "--grace", "soon"], "like 90m, 12h, 30d"),
        (["revoke"], "id"),
        ([], "ACTION"),
    ],
)
def test_bad_arguments_are_usage_errors(sqlite_setup: Setup, args: list[str], words: str) -> None:
    ran = sqlite_setup.run(*args)
    assert ran.status == 2
    assert words in ran.err
    assert not (sqlite_setup.folder / "tokens.db").exists()


def test_an_unreachable_store_is_one_line_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path, f"redis://127.0.0.1:{port}/0")
    ran = token_command("list", "-c", str(config), cwd=tmp_path)
    assert ran.status == 1
    assert f"127.0.0.1:{port}" in ran.err
    assert "Traceback" not in ran.err


def test_the_redis_store_end_to_end(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, redis_url)
    setup = Setup(tmp_path, config, lambda: RedisTokenStore(redis_url))
    token = setup.create()
    info = check(setup, token)
    assert isinstance(info, TokenInfo)
    assert info.id in setup.run("list").out
    rotated = setup.run("rotate", info.id)
    assert rotated.status == 0, rotated.err
    assert isinstance(check(setup, token), TokenInfo)  # in its grace
    assert setup.run("revoke", info.id).status == 0
    assert check(setup, rotated.out.strip()) is Reason.REVOKED
    assert check(setup, token) is Reason.REVOKED


def test_zerogate_token_is_a_command_of_the_zerogate_cli(sqlite_setup: Setup) -> None:
    ran = token_command(
        "create",
        "-c",
        str(sqlite_setup.config),
        "--name",
        "x",
        "--scope",
        "calc:*",
        cwd=sqlite_setup.folder,
        via_cli=True,
    )
    assert ran.status == 0, ran.err
    assert tokens.is_token(ran.out.strip())
    helped = token_command("--help", cwd=sqlite_setup.folder, via_cli=True)
    assert helped.status == 0
    assert "create" in helped.out
    assert "rotate" in helped.out
