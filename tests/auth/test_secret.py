"""Loading the server secret: from the environment or a file, refusing missing, empty and
short ones, never showing the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth.secret import MIN_SECRET_BYTES, SecretError, TokenHasher, load_hasher
from gateway.config import EnvSecret, FileSecret, parse_config

GOOD = "k" * 40


def test_from_the_environment() -> None:
    hasher = load_hasher(EnvSecret("ZG_SECRET"), environ={"ZG_SECRET": GOOD})
    assert hasher.hash("zgw_x") == TokenHasher(GOOD.encode()).hash("zgw_x")


def test_from_a_file_without_its_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(GOOD + "\n")
    assert load_hasher(FileSecret(path)).hash("t") == TokenHasher(GOOD.encode()).hash("t")


def test_a_relative_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(GOOD)
    text = "auth: {mode: token, secret: 'file:secret.txt'}"
    config = parse_config(text, "zerogate.yaml", tmp_path)
    assert load_hasher(config.auth.secret).hash("t") == TokenHasher(GOOD.encode()).hash("t")


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({}, "environment variable ZG_SECRET is not set"),
        ({"ZG_SECRET": ""}, "environment variable ZG_SECRET is empty"),
        ({"ZG_SECRET": "  \n"}, "environment variable ZG_SECRET is empty"),
        ({"ZG_SECRET": "short-but-not-empty"}, f"at least {MIN_SECRET_BYTES} random bytes"),
    ],
)
def test_refused_from_the_environment(environ: dict[str, str], words: str) -> None:
    with pytest.raises(SecretError, match=words) as caught:
        load_hasher(EnvSecret("ZG_SECRET"), environ=environ)
    assert "short-but-not-empty" not in str(caught.value)


def test_refused_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match=r"cannot read file .*nothing-here: no such file"):
        load_hasher(FileSecret(tmp_path / "nothing-here"))


def test_refused_when_the_file_is_short(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("hunter2\n")
    with pytest.raises(SecretError, match="has 7 bytes") as caught:
        load_hasher(FileSecret(path))
    assert "hunter2" not in str(caught.value)


def test_refused_when_there_is_no_secret_at_all() -> None:
    with pytest.raises(SecretError, match=r"auth\.secret is not set"):
        load_hasher(None)


def test_the_hasher_never_shows_its_key() -> None:
    hasher = TokenHasher(GOOD.encode())
    assert GOOD not in repr(hasher)
    assert not hasattr(hasher, "__dict__")


def test_the_hash_is_keyed() -> None:
    one, other = TokenHasher(b"a" * 32), TokenHasher(b"b" * 32)
    assert one.hash("zgw_same") != other.hash("zgw_same")
    assert len(one.hash("zgw_same")) == 64
