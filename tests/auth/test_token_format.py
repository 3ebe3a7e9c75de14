"""The token format: what generate() makes, and what check() says about everything else."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth import tokens
from auth.tokens import FormatProblem


def test_a_new_token_has_the_documented_shape() -> None:
    token = tokens.generate()
    assert re.fullmatch(r"zgw_[0-9A-Za-z]{42}", token)
    assert len(token) == tokens.TOKEN_LENGTH == 46
    assert tokens.check(token) is None
    assert tokens.is_token(token)
    assert tokens.TOKEN_PATTERN.fullmatch(token)


def test_the_randomness_is_above_160_bits_even_after_the_display_prefix() -> None:
    hidden = tokens.RANDOM_LENGTH - (tokens.DISPLAY_LENGTH - len(tokens.PREFIX))
    assert hidden * math.log2(62) > 160


def test_tokens_differ_and_use_the_whole_alphabet() -> None:
    made = [tokens.generate() for _ in range(500)]
    assert len(set(made)) == len(made)
    seen = set("".join(token[4:40] for token in made))
    assert seen == set(tokens.ALPHABET)


def test_the_checksum_is_a_fixed_width_crc32() -> None:
    assert tokens.checksum("") == "000000"
    assert len(tokens.checksum("x" * 36)) == tokens.CHECKSUM_LENGTH
    assert 62**tokens.CHECKSUM_LENGTH > 2**32


def test_the_display_prefix_is_the_first_random_characters() -> None:
    token = tokens.generate()
    assert tokens.display_prefix(token) == token[:12]
    assert tokens.display_prefix(token).startswith("zgw_")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", FormatProblem.WRONG_PREFIX),
        ("Bearer zgw_abc", FormatProblem.WRONG_PREFIX),
        ("ZGW_" + "a" * 42, FormatProblem.WRONG_PREFIX),
        ("ghp_" + "a" * 42, FormatProblem.WRONG_PREFIX),
        ("zgw_", FormatProblem.BAD_LENGTH),
        ("zgw_" + "a" * 41, FormatProblem.BAD_LENGTH),
        ("zgw_" + "a" * 43, FormatProblem.BAD_LENGTH),
        ("zgw_" + "a" * 41 + "-", FormatProblem.BAD_CHARACTER),
        ("zgw_" + "a" * 41 + "é", FormatProblem.BAD_CHARACTER),
        ("zgw_" + "a" * 41 + "\n", FormatProblem.BAD_CHARACTER),
        ("zgw_" + "a" * 42, FormatProblem.BAD_CHECKSUM),
    ],
)
def test_check_says_what_is_wrong(text: str, problem: FormatProblem) -> None:
    assert tokens.check(text) is problem
    assert not tokens.is_token(text)
    assert problem.message  # each reason has words for a human


def test_a_token_with_surrounding_blanks_is_not_a_token() -> None:
    token = tokens.generate()
    assert tokens.check(token + " ") is FormatProblem.BAD_LENGTH
    assert tokens.check(" " + token) is FormatProblem.WRONG_PREFIX


def test_a_scanner_finds_tokens_in_text() -> None:
    token = tokens.generate()
    found = tokens.TOKEN_PATTERN.findall(f"export TOKEN={token}\nother zgw_short\n")
    assert found == [token]


@given(
    position=st.integers(0, tokens.RANDOM_LENGTH + tokens.CHECKSUM_LENGTH - 1),
    shift=st.integers(1, len(tokens.ALPHABET) - 1),
)
def test_any_one_character_changed_is_caught_offline(position: int, shift: int) -> None:
    # The other character is the token's own moved along the alphabet by ``shift``: what
    # Hypothesis draws never depends on the (random) token, so it can replay a failure.
    token = tokens.generate()
    index = len(tokens.PREFIX) + position
    other = tokens.ALPHABET[(tokens.ALPHABET.index(token[index]) + shift) % len(tokens.ALPHABET)]
    typo = token[:index] + other + token[index + 1 :]
    assert tokens.check(typo) is FormatProblem.BAD_CHECKSUM


@given(position=st.integers(0, tokens.RANDOM_LENGTH + tokens.CHECKSUM_LENGTH - 2))
def test_two_neighbours_swapped_are_caught_offline(position: int) -> None:
    token = tokens.generate()
    index = len(tokens.PREFIX) + position
    if token[index] == token[index + 1]:
        return  # swapping equal characters changes nothing
    swapped = token[:index] + token[index + 1] + token[index] + token[index + 2 :]
    assert tokens.check(swapped) is FormatProblem.BAD_CHECKSUM


@given(st.text(max_size=60))
def test_check_never_fails_on_any_text(text: str) -> None:
    assert tokens.check(text) in (None, *FormatProblem)


def test_token_ids() -> None:
    token_id = tokens.new_token_id()
    assert re.fullmatch(r"tok_[0-9A-Za-z]{8}", token_id)
    assert tokens.is_token_id(token_id)
    assert not tokens.is_token_id("tok_short")


@pytest.mark.parametrize("scope", ["calc:*", "*:*", "calc:get_*", "users-v2:list_users", "a:[ab]?"])
def test_good_scopes(scope: str) -> None:
    assert tokens.is_scope(scope)


@pytest.mark.parametrize(
    "scope", ["", "calc", "calc:", ":add", "calc:add:x", "calc :add", "ca/lc:*"]
)
def test_bad_scopes(scope: str) -> None:
    assert not tokens.is_scope(scope)
