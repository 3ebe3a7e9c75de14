"""AuthGate's fast path (a token verified moments ago is let through from caches) decides
exactly as the whole way does: the cases it cannot decide fall through to it. Plain ASGI
calls on an in-memory store; the end-to-end rules are in test_gate_e2e and test_attacks."""

from __future__ import annotations

from auth_support import run_async
from gate_asgi import GateSetup, bearer


@run_async
async def test_a_known_token_passes_again_with_its_metadata() -> None:
    setup = GateSetup()
    token, token_id = await setup.token()
    for header in (bearer(token), bearer(token), (b"x-api-key", token.encode())):
        assert await setup.status(header) == 200
    assert setup.passed == [{"zerogate_token_id": token_id, "zerogate_token_name": "ci"}] * 3
    assert setup.store.finds == 1  # the later ones came from the caches


@run_async
async def test_two_credentials_conflict_even_when_both_were_let_through_before() -> None:
    setup = GateSetup()
    first, _ = await setup.token("first")
    second, _ = await setup.token("second")
    assert await setup.status(bearer(first)) == 200
    assert await setup.status(bearer(second)) == 200
    assert await setup.status(bearer(first), (b"x-api-key", second.encode())) == 400
    assert await setup.status(bearer(first), bearer(second)) == 400
    assert await setup.status(bearer(first), (b"x-api-key", first.encode())) == 200  # the same
    assert len(setup.passed) == 3


@run_async
async def test_other_spellings_of_a_known_token_take_the_whole_way_and_pass() -> None:
    setup = GateSetup()
    token, _ = await setup.token()
    assert await setup.status(bearer(token)) == 200
    for value in (f"bearer {token}", f"Bearer   {token} ", f"BEARER {token}"):
        assert await setup.status((b"authorization", value.encode())) == 200
    assert await setup.status((b"authorization", f"Basic {token}".encode())) == 401
    assert len(setup.passed) == 4


@run_async
async def test_an_address_out_of_failures_is_refused_even_with_a_known_token() -> None:
    setup = GateSetup()
    token, _ = await setup.token()
    assert await setup.status(bearer(token), client="10.0.0.9") == 200
    assert await setup.status(bearer("zgw_" + "x" * 42), client="10.0.0.9") == 401  # a failure
    assert await setup.status(bearer(token), client="10.0.0.9") == 429  # its one try is spent
    assert await setup.status(bearer(token), client="10.0.0.8") == 200  # another address
    assert len(setup.passed) == 2
