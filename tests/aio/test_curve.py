"""CurveZMQ in rpccore: keys and their checks, key files, the ZAP answers and handshake reasons
as tables, then the asyncio driver over loopback TCP: calls and streams with keys, clients
that cannot call (no keys, a wrong server key, a key not authorized) while good clients keep
calling, allow-lists per server on a shared context, a refused client that gets in once the
server admits it, one-way sockets, and the ZAP handler's lifecycle.

The gevent twin is tests/green/test_curve_green.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
import zmq.auth
from aio_support import HB, LOOPBACK, SLACK, collect, connected, eventually, run_async, serving

from rpccore import (
    CurveClientKeys,
    CurveKeyError,
    CurveServerKeys,
    LostRemote,
    TimeoutExpired,
    curve_keypair,
    load_key,
    load_keys,
    public_key_of,
)
from rpccore._curve import (
    RETRY_REFUSED,
    ZapGrant,
    certificate_text,
    check_key,
    handshake_failure,
    zap_handlers,
    zap_reply,
)
from rpccore._problems import ProblemLog
from rpccore.aio import Client, Publisher, Puller, Pusher, Server, Subscriber, stream

SERVER_PUBLIC, SERVER_SECRET = curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = curve_keypair()
OTHER_PUBLIC, OTHER_SECRET = curve_keypair()
BAD_CALL_TIMEOUT = 0.5  # a client that cannot handshake times out this soon...
QUIET = 30.0  # ...because its heartbeat is far slower (LostRemote would come first)


class Calc:
    def add(self, a: int, b: int) -> int:
        return a + b

    @stream
    def count(self, n: int) -> Any:
        return range(n)


def server_keys(authorized: list[str] | None = None) -> CurveServerKeys:
    return CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=authorized)


def client_keys(secret: str | None = CLIENT_SECRET, server: str = SERVER_PUBLIC) -> CurveClientKeys:
    return CurveClientKeys(server_key=server, secret_key=secret)


@pytest.fixture(autouse=True)
def no_zap_handler_left() -> Any:
    yield
    assert zap_handlers() == 0, "a ZAP handler outlived its servers"


# -- keys ----------------------------------------------------------------------------------


def test_a_key_pair_is_z85_text_and_the_public_half_is_derived() -> None:
    public, secret = curve_keypair()
    assert len(public) == len(secret) == 40
    assert public_key_of(secret) == public
    assert CurveServerKeys(secret_key=secret).public_key == public
    assert CurveServerKeys(secret_key=secret.encode(), public_key=public).public_key == public
    keys = CurveClientKeys(server_key=SERVER_PUBLIC, secret_key=secret)
    assert (keys.public_key, keys.secret_key) == (public, secret)


def test_a_client_without_a_secret_key_makes_a_new_pair() -> None:
    first, second = (
        CurveClientKeys(server_key=SERVER_PUBLIC),
        CurveClientKeys(server_key=SERVER_PUBLIC),
    )
    assert first.public_key != second.public_key
    assert public_key_of(first.secret_key) == first.public_key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("abc", "what: expected a Z85 key of 40 characters, got 3"),
        ("~" * 40, "what: not a Z85 key (a character outside the Z85 alphabet)"),
        (" " + SERVER_PUBLIC[1:], "what: not a Z85 key (a character outside the Z85 alphabet)"),
        ("#" * 40, "what: not a Z85 key (a group out of range)"),
        ("é" * 40, "what: not a Z85 key (a character outside the Z85 alphabet)"),
        (b"\xff" * 40, "what: not a Z85 key (not ASCII text)"),
        (42, "what: expected a Z85 key (text), got int"),
    ],
)
def test_malformed_keys_are_refused_naming_the_key(key: Any, message: str) -> None:
    with pytest.raises(CurveKeyError) as caught:
        check_key(key, "what")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: CurveServerKeys(secret_key=SERVER_SECRET, public_key=CLIENT_PUBLIC),
            "server public_key is not the public half of its secret_key",
        ),
        (
            lambda: CurveServerKeys(secret_key=SERVER_SECRET[:-1]),
            "server secret_key: expected a Z85 key of 40 characters, got 39",
        ),
        (
            lambda: CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=CLIENT_PUBLIC),
            "authorized_clients: expected a collection of public keys, got one string",
        ),
        (
            lambda: CurveServerKeys(
                secret_key=SERVER_SECRET, authorized_clients=[CLIENT_PUBLIC, "x"]
            ),
            "authorized_clients[1]: expected a Z85 key of 40 characters, got 1",
        ),
        (
            lambda: CurveClientKeys(server_key="nope"),
            "server_key: expected a Z85 key of 40 characters, got 4",
        ),
        (
            lambda: CurveClientKeys(server_key=SERVER_PUBLIC, public_key=CLIENT_PUBLIC),
            "client public_key given without its secret_key",
        ),
        (
            lambda: CurveClientKeys(
                server_key=SERVER_PUBLIC, secret_key=CLIENT_SECRET, public_key=OTHER_PUBLIC
            ),
            "client public_key is not the public half of its secret_key",
        ),
    ],
)
def test_key_objects_check_their_keys(build: Any, message: str) -> None:
    with pytest.raises(CurveKeyError) as caught:
        build()
    assert str(caught.value) == message


def test_reprs_never_show_a_secret_key() -> None:
    server = CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=[CLIENT_PUBLIC])
    client = client_keys()
    assert SERVER_PUBLIC in repr(server)
    assert "1 authorized clients" in repr(server)
    assert "any client" in repr(CurveServerKeys(secret_key=SERVER_SECRET))
    assert CLIENT_PUBLIC in repr(client)
    assert SERVER_SECRET not in repr(server)
    assert CLIENT_SECRET not in repr(client)


def test_without_curve_in_libzmq_keys_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zmq, "has", lambda feature: feature != "curve")
    with pytest.raises(RuntimeError, match=r"built without CURVE support"):
        CurveServerKeys(secret_key=SERVER_SECRET)
    with pytest.raises(RuntimeError, match=r"built without CURVE support"):
        curve_keypair()


# -- key files and references --------------------------------------------------------------


def test_load_key_from_text_env_files_and_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_key(SERVER_PUBLIC, kind="public", what="k") == SERVER_PUBLIC
    monkeypatch.setenv("ZG_TEST_KEY", f" {CLIENT_SECRET}\n")
    assert load_key("env:ZG_TEST_KEY", kind="secret", what="k") == CLIENT_SECRET
    plain = tmp_path / "plain.key"
    plain.write_text(f"# a comment\n\n  {CLIENT_SECRET}  \n", encoding="utf-8")
    assert load_key(f"file:{plain}", kind="secret", what="k") == CLIENT_SECRET
    secret_cert, public_cert = tmp_path / "pair.key", tmp_path / "pair.pub"
    secret_cert.write_text(certificate_text(CLIENT_PUBLIC, CLIENT_SECRET), encoding="utf-8")
    public_cert.write_text(certificate_text(CLIENT_PUBLIC), encoding="utf-8")
    # A secret certificate gives either half; a public one only its own.
    assert load_key(f"file:{secret_cert}", kind="secret", what="k") == CLIENT_SECRET
    assert load_key(f"file:{secret_cert}", kind="public", what="k") == CLIENT_PUBLIC
    assert load_key(f"file:{public_cert}", kind="public", what="k") == CLIENT_PUBLIC
    with pytest.raises(CurveKeyError, match=r"the certificate holds no secret-key"):
        load_key(f"file:{public_cert}", kind="secret", what="k")
    # zmq.auth (and czmq) read the same certificates.
    assert zmq.auth.load_certificate(secret_cert) == (
        CLIENT_PUBLIC.encode(),
        CLIENT_SECRET.encode(),
    )
    assert zmq.auth.load_certificate(public_cert) == (CLIENT_PUBLIC.encode(), None)


def test_load_keys_reads_an_allow_list(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.write_text(f"# clients\n{CLIENT_PUBLIC}\n\n{OTHER_PUBLIC}\n", encoding="utf-8")
    assert load_keys(f"file:{allowed}", what="allow") == [CLIENT_PUBLIC, OTHER_PUBLIC]
    assert load_keys(CLIENT_PUBLIC, what="allow") == [CLIENT_PUBLIC]
    allowed.write_text(f"{CLIENT_PUBLIC}\nnot a key\n", encoding="utf-8")
    with pytest.raises(CurveKeyError) as caught:
        load_keys(f"file:{allowed}", what="allow")
    assert str(caught.value) == (
        f"allow (file:{allowed}) line 2: expected a Z85 key of 40 characters, got 9"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("env:ZG_UNSET_TEST_KEY", "k: the environment variable ZG_UNSET_TEST_KEY is not set"),
        (
            "file:/nonexistent/x.key",
            "k: cannot read the key file /nonexistent/x.key: No such file or directory",
        ),
        ("short", "k: expected a Z85 key of 40 characters, got 5"),
    ],
)
def test_load_key_problems(source: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZG_UNSET_TEST_KEY", raising=False)
    with pytest.raises(CurveKeyError) as caught:
        load_key(source, kind="secret", what="k")
    assert str(caught.value) == message


def test_a_file_with_two_keys_is_not_one_key(tmp_path: Path) -> None:
    path = tmp_path / "two"
    path.write_text(f"{CLIENT_SECRET}\n{OTHER_SECRET}\n", encoding="utf-8")
    with pytest.raises(CurveKeyError, match=r"expected one secret key, found 2"):
        load_key(f"file:{path}", kind="secret", what="k")


# -- ZAP answers and handshake reasons, as tables -------------------------------------------


def _zap_request(
    domain: bytes, key: bytes, *, version: bytes = b"1.0", mechanism: bytes = b"CURVE"
) -> list[bytes]:
    return [b"peer", b"", version, b"7", domain, b"10.0.0.9", b"", mechanism, key]


RAW_CLIENT = zmq.utils.z85.decode(CLIENT_PUBLIC)
RAW_OTHER = zmq.utils.z85.decode(OTHER_PUBLIC)


@pytest.mark.parametrize(
    ("request_frames", "status", "user"),
    [
        (_zap_request(b"ours", RAW_CLIENT), b"200", CLIENT_PUBLIC.encode()),
        (_zap_request(b"ours", RAW_OTHER), b"400", b""),
        (_zap_request(b"", RAW_OTHER), b"200", b""),  # a server without an allow-list
        (_zap_request(b"someone-else", RAW_OTHER), b"200", b""),
        (_zap_request(b"ours", RAW_CLIENT, version=b"2.0"), b"500", b""),
        (_zap_request(b"ours", b"", mechanism=b"NULL"), b"400", b""),
    ],
)
def test_zap_answers(request_frames: list[bytes], status: bytes, user: bytes) -> None:
    problems = ProblemLog("server")
    grant = ZapGrant(None, b"ours", [CLIENT_PUBLIC], problems)
    reply = zap_reply(request_frames, {b"ours": grant})
    assert reply is not None
    assert reply[:5] == [b"peer", b"", b"1.0", b"7", status]
    assert reply[6:] == [user, b""]
    refused = status == b"400" and request_frames[7] == b"CURVE"
    assert problems.counts == ({"curve_refused": 1} if refused else {})


def test_zap_ignores_what_is_not_a_request() -> None:
    assert zap_reply([b"peer", b"", b"1.0"], {}) is None
    assert zap_reply([b"peer", b"x", *_zap_request(b"", RAW_CLIENT)[2:]], {}) is None


@pytest.mark.parametrize(
    ("event", "value", "server", "kind", "words"),
    [
        (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, False, "curve_refused", "refused this client"),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
            True,
            "curve_mismatch",
            "the client does not use CURVE",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
            False,
            "curve_mismatch",
            "the server does not use CURVE",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC,
            True,
            "curve_wrong_key",
            "it has the wrong server key",
        ),
        (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 0x10000000, False, "curve_protocol", "0x10000000"),
        (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, False, "curve_handshake", "is server_key"),
        (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, True, "curve_handshake", "the client closed"),
    ],
)
def test_handshake_failures_in_words(
    event: int, value: int, server: bool, kind: str, words: str
) -> None:
    got_kind, reason = handshake_failure(event, value, server=server)
    assert got_kind == kind
    assert words in reason


# -- the asyncio driver ---------------------------------------------------------------------


@run_async
async def test_calls_and_streams_with_keys() -> None:
    async with serving(Calc(), curve=server_keys()) as (_, endpoint):
        async with connected(endpoint, curve=client_keys()) as client:
            assert await client.add(1, 2) == 3
            assert await collect(client.stream("count", 5)) == [0, 1, 2, 3, 4]
            assert client.curve_failure is None
        async with connected(endpoint, curve=CurveClientKeys(server_key=SERVER_PUBLIC)) as fresh:
            assert await fresh.add(2, 2) == 4  # no allow-list: any key pair will do


@run_async
async def test_an_allow_list_admits_listed_clients_only() -> None:
    async with serving(Calc(), curve=server_keys([CLIENT_PUBLIC])) as (server, endpoint):
        async with connected(endpoint, curve=client_keys()) as good:
            assert await good.add(1, 2) == 3
            async with connected(
                endpoint, curve=client_keys(OTHER_SECRET), timeout=BAD_CALL_TIMEOUT, heartbeat=QUIET
            ) as other:
                with pytest.raises(TimeoutExpired) as caught:
                    await other.add(1, 2)
                assert "the server refused this client's public key" in str(caught.value)
                assert "authorized clients" in (other.curve_failure or "")
            assert await good.add(3, 4) == 7  # the server is none the worse
            assert await collect(good.stream("count", 3)) == [0, 1, 2]
        assert server.problems["curve_refused"] >= 1


@pytest.mark.parametrize(
    ("keys", "explained", "server_kind"),
    [
        (None, None, "curve_mismatch"),
        (
            CurveClientKeys(server_key=OTHER_PUBLIC, secret_key=CLIENT_SECRET),
            "is server_key its public key?",
            "curve_wrong_key",
        ),
    ],
    ids=["no keys", "wrong server key"],
)
@run_async
async def test_a_client_without_the_right_keys_cannot_call(
    keys: CurveClientKeys | None, explained: str | None, server_kind: str
) -> None:
    async with serving(Calc(), curve=server_keys()) as (server, endpoint):
        async with connected(endpoint, curve=client_keys()) as good:
            assert await good.add(1, 1) == 2
            async with connected(
                endpoint, curve=keys, timeout=BAD_CALL_TIMEOUT, heartbeat=QUIET
            ) as bad:
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(TimeoutExpired) as caught:
                    await bad.add(1, 2)
                assert loop.time() - started < BAD_CALL_TIMEOUT + SLACK
                if explained is None:
                    assert "CURVE" not in str(caught.value)  # it has no keys: nothing watched
                else:
                    assert "the CURVE handshake with the server failed: " in str(caught.value)
                    assert explained in str(caught.value)
            assert await good.add(2, 3) == 5
        await eventually(lambda: server.problems.get(server_kind, 0) >= 1, 2.0, server_kind)


@run_async
async def test_a_lost_remote_says_why_too() -> None:
    async with (
        serving(Calc(), curve=server_keys([])) as (_, endpoint),
        connected(endpoint, curve=client_keys(), timeout=10.0) as client,
    ):
        with pytest.raises(LostRemote) as caught:
            await client.add(1, 2)  # heartbeat HB: lost long before the timeout
        assert "the server refused this client's public key" in str(caught.value)


@run_async
async def test_a_plain_client_on_a_plain_server_is_untouched() -> None:
    async with serving(Calc()) as (_, endpoint), connected(endpoint) as client:
        assert await client.add(1, 2) == 3
        assert client.curve_failure is None
        # No cost without keys: nothing watched.
        assert client._curve is None
        assert client._monitor is None


@run_async
async def test_a_curve_client_on_a_plain_server_says_so() -> None:
    async with (
        serving(Calc()) as (_, endpoint),
        connected(
            endpoint, curve=client_keys(), timeout=BAD_CALL_TIMEOUT, heartbeat=QUIET
        ) as client,
    ):
        with pytest.raises(TimeoutExpired, match=r"the server does not use CURVE"):
            await client.add(1, 2)


@run_async
async def test_servers_sharing_a_context_keep_their_own_allow_lists() -> None:
    async with (
        serving(Calc(), curve=server_keys([CLIENT_PUBLIC])) as (_, first),
        serving(Calc(), curve=server_keys([OTHER_PUBLIC])) as (_, second),
        serving(Calc(), curve=server_keys()) as (_, open_to_all),
    ):
        assert zap_handlers() == 1  # one handler for the context, a domain per server
        for endpoint, secret, admitted in [
            (first, CLIENT_SECRET, True),
            (first, OTHER_SECRET, False),
            (second, OTHER_SECRET, True),
            (second, CLIENT_SECRET, False),
            (open_to_all, CLIENT_SECRET, True),
            (open_to_all, OTHER_SECRET, True),
        ]:
            async with connected(
                endpoint, curve=client_keys(secret), timeout=BAD_CALL_TIMEOUT, heartbeat=QUIET
            ) as client:
                if admitted:
                    assert await client.add(1, 2) == 3
                else:
                    with pytest.raises(TimeoutExpired):
                        await client.add(1, 2)
    assert zap_handlers() == 0


@run_async
async def test_a_refused_client_gets_in_once_the_server_admits_it() -> None:
    # libzmq never retries a refused connection by itself: the client reconnects.
    async with serving(Calc(), curve=server_keys([])) as (server, endpoint):
        client = Client(endpoint, curve=client_keys(), timeout=BAD_CALL_TIMEOUT, heartbeat=QUIET)
        admitting = Server(Calc(), heartbeat=HB, curve=server_keys([CLIENT_PUBLIC]))
        try:
            with pytest.raises(TimeoutExpired):
                await client.add(1, 2)
            server.stop()
            await rebind(admitting, endpoint)
            admitting.start()
            deadline = asyncio.get_running_loop().time() + RETRY_REFUSED + 5 * SLACK
            while True:
                try:
                    assert await client.add(1, 2) == 3
                    break
                except TimeoutExpired:
                    assert asyncio.get_running_loop().time() < deadline, "never got in"
            assert client.curve_failure is None
        finally:
            client.close()
            admitting.stop()


async def rebind(server: Server, endpoint: str) -> None:
    """Bind ``endpoint`` as soon as the server that had it has let go (libzmq closes a
    listener in its I/O thread, a moment after the socket closes)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        try:
            server.bind(endpoint)
            return
        except zmq.ZMQError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


@run_async
async def test_a_client_may_bind_and_the_server_connect() -> None:
    client = Client(None, curve=client_keys(), heartbeat=HB, timeout=10.0)
    server = Server(Calc(), heartbeat=HB, curve=server_keys([CLIENT_PUBLIC]))
    try:
        endpoint = client.bind(LOOPBACK)[0]
        server.connect(endpoint)
        server.start()
        assert await client.add(2, 5) == 7
    finally:
        client.close()
        server.stop()


@run_async
async def test_one_way_events_with_keys() -> None:
    received: list[Any] = []

    class Sink:
        def tick(self, value: Any) -> None:
            received.append(value)

    async with Puller(Sink(), curve=server_keys([CLIENT_PUBLIC])) as puller:
        endpoint = puller.bind(LOOPBACK)[0]
        async with Pusher(curve=client_keys()) as pusher:
            pusher.connect(endpoint)
            pusher.tick(1)
            pusher.tick(2)
            await eventually(lambda: received == [1, 2], 5.0, "pushed events")
        async with Pusher(curve=client_keys(OTHER_SECRET)) as outsider:
            outsider.connect(endpoint)
            outsider.tick(3)
            await asyncio.sleep(0.3)
            assert outsider.queued == 1  # never admitted: the event waits
        assert received == [1, 2]
    async with Publisher(curve=server_keys()) as publisher:
        endpoint = publisher.bind(LOOPBACK)[0]
        async with Subscriber(Sink(), curve=client_keys()) as subscriber:
            subscriber.connect(endpoint)

            def publish_and_check() -> bool:
                publisher.tick("published")  # PUB drops until the subscription arrives
                return "published" in received

            await eventually(publish_and_check, 5.0, "a published event", interval=0.05)


def test_keys_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(TypeError, match=r"Client\(curve=\) takes CurveClientKeys"):
        Client(None, curve=server_keys())
    with pytest.raises(TypeError, match=r"Server\(curve=\) takes CurveServerKeys"):
        Server(Calc(), curve=client_keys())
    with pytest.raises(TypeError, match=r"Puller\(curve=\) takes"):
        Puller(Calc(), curve={"server_key": SERVER_PUBLIC})


def test_another_zap_handler_on_the_context_is_a_clear_error() -> None:
    context = zmq.Context()
    try:
        other = context.socket(zmq.REP)
        other.bind("inproc://zeromq.zap.01")
        with pytest.raises(RuntimeError, match=r"another ZAP handler"):
            Server(Calc(), context=context, curve=server_keys([CLIENT_PUBLIC]))
        other.unbind("inproc://zeromq.zap.01")  # immediate, unlike close()
        other.close(linger=0)
        assert zap_handlers() == 0
        server = Server(Calc(), context=context, curve=server_keys([CLIENT_PUBLIC]))
        assert zap_handlers() == 1
        server.stop()
        server.stop()  # twice is harmless
        assert zap_handlers() == 0
        # The endpoint is free again at once: a server made right away gets its handler.
        again = Server(Calc(), context=context, curve=server_keys([CLIENT_PUBLIC]))
        again.stop()
    finally:
        context.term()
