"""CurveZMQ on rpccore sockets: keys, socket options, a ZAP handler for client allow-lists,
and plain words for handshakes that fail.

    server = Server(obj, curve=CurveServerKeys(secret_key=SECRET))
    client = Client(endpoint, curve=CurveClientKeys(server_key=SERVER_PUBLIC))

Theory of operation.

* Keys are Z85 text, 40 characters (``curve_keypair()``, or ``zerogate keys``). Every key is
  checked when the key objects are built, so a typo fails there with a ``CurveKeyError``
  naming the key, never later as a handshake that silently fails. Secret keys never appear
  in a repr or a message.
* A socket gets its CURVE options before any bind or connect (libzmq reads them when a
  connection starts). A server is the CURVE server of its connections whether it binds or
  connects; the CURVE roles follow the RPC roles, not the direction of the TCP connection.
* CurveZMQ alone admits any client that knows the server's public key: the client proves
  nothing about itself. ``authorized_clients`` admits only the listed client public keys;
  libzmq asks the ZAP handler (RFC 27) of the socket's context, ``inproc://zeromq.zap.01``,
  about every handshake. There is one handler per libzmq context, shared by every server
  of the context: each server with an allow-list gets its own ZAP domain, and requests for
  any other domain (a CURVE server without an allow-list) are accepted, as libzmq does when
  no handler is bound. The handler is bound before the server's socket binds, because
  libzmq admits everybody while no handler is bound; it answers on the event loop of the
  first server started (``Host``), and closes with the last one. Another ZAP handler on
  the same context (zmq.auth's authenticators) cannot coexist with it: give those servers
  their own ``context=``.
* A failed handshake is invisible to the RPC protocol: the request never reaches the
  server, so the call ends as a timeout (``TimeoutExpired``) or a lost remote
  (``LostRemote``, when heartbeats give up first). A socket with keys watches its handshake
  events: a client then says why in those errors ("the CURVE handshake with the server
  failed: the server refused this client's public key..."), and both sides count and log
  failures in ``problems``. A client without keys calling a CURVE server (zerorpc 0.6.3
  included, which has no CURVE support) watches nothing and simply times out.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import struct
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import zmq
from zmq.utils import z85

from ._codec import Frames
from ._errors import LostRemote, RPCError, TimeoutExpired
from ._problems import ProblemLog
from ._sockets import EVENTS, NOBLOCK, POLLIN, recv_frames

if TYPE_CHECKING:
    from ._pump import Handle, Host

logger = logging.getLogger("rpccore")

KEY_LENGTH: Final = 40  # a 32-byte key in Z85 text
ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"  # fixed by RFC 27
_Z85_CHARS: Final = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
# A ZeroMQ certificate (ZPL, as zmq.auth and czmq write them): `public-key = "..."`.
_ZPL_KEY: Final = re.compile(r"(public|secret)-key\s*=\s*[\"']?([^\"'\s]*)[\"']?")

# The monitor events a socket with keys watches (libzmq >= 4.3).
_CONNECTED: Final = int(zmq.EVENT_CONNECTED)
_SUCCEEDED: Final = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_FAILED_NO_DETAIL: Final = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_FAILED_PROTOCOL: Final = int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_FAILED_AUTH: Final = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
HANDSHAKE_EVENTS: Final = (
    _CONNECTED | _SUCCEEDED | _FAILED_NO_DETAIL | _FAILED_PROTOCOL | _FAILED_AUTH
)
# libzmq never reconnects after a refusal or a mechanism mismatch: we do, this often, so a
# server fixed later (its allow-list, its keys) is reached without restarting the client.
RETRY_REFUSED: Final = 1.0
_MISMATCH: Final = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
_CRYPTOGRAPHIC: Final = int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
_BATCH: Final = 64  # ZAP requests answered per callback before letting others run

KeyKind = Literal["public", "secret"]


class CurveKeyError(ValueError):
    """A CurveZMQ key is malformed, missing, or does not match its other half. The message
    names the key (never its secret value)."""


def require_curve() -> None:
    """Raise RuntimeError unless libzmq was built with CURVE (libsodium or tweetnacl)."""
    if not zmq.has("curve"):
        raise RuntimeError(
            f"this libzmq ({zmq.zmq_version()}) was built without CURVE support "
            "(zmq.has('curve') is False): install a pyzmq wheel, which bundles it, or "
            "rebuild libzmq with libsodium"
        )


def check_key(key: str | bytes, what: str) -> str:
    """``key`` as Z85 text, checked; CurveKeyError names ``what`` (never the key)."""
    if isinstance(key, bytes):
        try:
            key = key.decode("ascii")
        except UnicodeDecodeError:
            raise CurveKeyError(f"{what}: not a Z85 key (not ASCII text)") from None
    if not isinstance(key, str):
        raise CurveKeyError(f"{what}: expected a Z85 key (text), got {type(key).__name__}")
    if len(key) != KEY_LENGTH:
        raise CurveKeyError(
            f"{what}: expected a Z85 key of {KEY_LENGTH} characters, got {len(key)}"
        )
    if not _Z85_CHARS.issuperset(key):
        raise CurveKeyError(f"{what}: not a Z85 key (a character outside the Z85 alphabet)")
    try:
        z85.decode(key)
    except struct.error:  # a 5-character group above 2**32
        raise CurveKeyError(f"{what}: not a Z85 key (a group out of range)") from None
    return key


def curve_keypair() -> tuple[str, str]:
    """A new key pair: (public key, secret key), both Z85 text."""
    require_curve()
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def public_key_of(secret_key: str | bytes, what: str = "secret_key") -> str:
    """The public half of a secret key."""
    require_curve()
    secret = check_key(secret_key, what)
    return zmq.curve_public(secret.encode("ascii")).decode("ascii")


def _own_pair(
    secret_key: str | bytes, public_key: str | bytes | None, owner: str
) -> tuple[str, str]:
    """(secret, public) of one side; the public key is derived, and checked when given."""
    secret = check_key(secret_key, f"{owner} secret_key")
    derived = public_key_of(secret, f"{owner} secret_key")
    if public_key is not None and check_key(public_key, f"{owner} public_key") != derived:
        raise CurveKeyError(f"{owner} public_key is not the public half of its secret_key")
    return secret, derived


class CurveServerKeys:
    """A server's CurveZMQ identity, and the clients it admits.

    ``secret_key``: the server's secret key (Z85). ``public_key``: its public half, the key
    clients are given; derived from the secret key when omitted, checked when given.
    ``authorized_clients``: None admits any client that knows the server's public key
    (CurveZMQ itself); a collection of client public keys admits only those (an empty one
    admits nobody). Raises CurveKeyError for a malformed key or a mismatched pair.
    """

    __slots__ = ("authorized_clients", "public_key", "secret_key")

    def __init__(
        self,
        *,
        secret_key: str | bytes,
        public_key: str | bytes | None = None,
        authorized_clients: Iterable[str | bytes] | None = None,
    ) -> None:
        require_curve()
        self.secret_key, self.public_key = _own_pair(secret_key, public_key, "server")
        self.authorized_clients: frozenset[str] | None = None
        if authorized_clients is not None:
            if isinstance(authorized_clients, str | bytes):
                raise CurveKeyError(
                    "authorized_clients: expected a collection of public keys, got one string"
                )
            self.authorized_clients = frozenset(
                check_key(key, f"authorized_clients[{index}]")
                for index, key in enumerate(authorized_clients)
            )

    def __repr__(self) -> str:
        allowed = self.authorized_clients
        admits = "any client" if allowed is None else f"{len(allowed)} authorized clients"
        return f"<CurveServerKeys public_key={self.public_key!r} admits {admits}>"


class CurveClientKeys:
    """A client's CurveZMQ keys: the server's public key, and the client's own pair.

    ``server_key``: the server's public key (Z85). ``secret_key``: the client's secret key;
    when omitted the client makes a new pair, which servers without ``authorized_clients``
    accept. ``public_key``: the client's public half, derived when omitted, checked when
    given (it needs ``secret_key``). Raises CurveKeyError for a malformed key or a
    mismatched pair.
    """

    __slots__ = ("public_key", "secret_key", "server_key")

    def __init__(
        self,
        *,
        server_key: str | bytes,
        secret_key: str | bytes | None = None,
        public_key: str | bytes | None = None,
    ) -> None:
        require_curve()
        self.server_key = check_key(server_key, "server_key")
        if secret_key is None:
            if public_key is not None:
                raise CurveKeyError("client public_key given without its secret_key")
            self.public_key, self.secret_key = curve_keypair()
        else:
            self.secret_key, self.public_key = _own_pair(secret_key, public_key, "client")

    def __repr__(self) -> str:
        return f"<CurveClientKeys server_key={self.server_key!r} public_key={self.public_key!r}>"


CurveKeys = CurveServerKeys | CurveClientKeys


# -- keys from files and environment variables ------------------------------------------


def load_key(source: str, *, kind: KeyKind, what: str) -> str:
    """One key from ``source``: ``env:NAME`` (the variable holds the key), ``file:PATH`` (a
    key file), or the key itself. A key file holds the key on a line of its own ('#'
    comments and blank lines are ignored), or is a ZeroMQ certificate (``zerogate keys``,
    zmq.auth and czmq write them), whose ``kind`` key is taken. CurveKeyError names
    ``what`` when the source or its key is wrong."""
    text, where = _read_source(source, what)
    keys = _keys_in(text, kind, where)
    if len(keys) != 1:
        raise CurveKeyError(f"{where}: expected one {kind} key, found {len(keys)}")
    return keys[0]


def load_keys(source: str, *, what: str) -> list[str]:
    """Public keys from ``source``, as ``load_key`` reads them, but any number of them, one
    per line (an allow-list file)."""
    text, where = _read_source(source, what)
    return _keys_in(text, "public", where)


def _read_source(source: str, what: str) -> tuple[str, str]:
    """(text, how messages name it) of ``source``; a literal key is its own text."""
    kind, _, rest = source.partition(":")
    if kind == "env" and rest:
        value = os.environ.get(rest)
        if not value:
            raise CurveKeyError(f"{what}: the environment variable {rest} is not set")
        return value, f"{what} (env:{rest})"
    if kind == "file" and rest:
        try:
            return Path(rest).read_text(encoding="utf-8"), f"{what} (file:{rest})"
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CurveKeyError(f"{what}: cannot read the key file {rest}: {reason}") from None
    return source, what


def _keys_in(text: str, kind: KeyKind, where: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    certificate = {
        match[1]: match[2] for line in lines if (match := _ZPL_KEY.fullmatch(line)) is not None
    }
    if certificate:
        if kind not in certificate:
            raise CurveKeyError(f"{where}: the certificate holds no {kind}-key")
        return [check_key(certificate[kind], where)]
    if len(lines) == 1:
        return [check_key(lines[0], where)]
    return [check_key(line, f"{where} line {index}") for index, line in enumerate(lines, 1)]


def certificate_text(public_key: str, secret_key: str | None = None) -> str:
    """A ZeroMQ certificate (ZPL), readable by ``load_key``, zmq.auth and czmq: the public
    one when ``secret_key`` is None, else the secret one (which holds both keys)."""
    if secret_key is None:
        head = (
            "#   CurveZMQ public certificate, made by `zerogate keys`: give it to peers.\n"
            "#   A server's goes in its clients' server_key; a client's in the server's\n"
            "#   authorized clients.\n"
        )
        keys = f'    public-key = "{public_key}"\n'
    else:
        head = (
            "#   CurveZMQ SECRET certificate, made by `zerogate keys`: keep it private.\n"
            "#   Reference it as file:PATH (secret_key, --curve-secret-key).\n"
        )
        keys = f'    public-key = "{public_key}"\n    secret-key = "{secret_key}"\n'
    return f"{head}\nmetadata\ncurve\n{keys}"


# -- what a pump's socket does with keys -------------------------------------------------


class CurveSocket:
    """The CURVE side of one pump's socket: its options (set here, before any bind or
    connect), its allow-list's ZAP domain, and its handshake events.

    ``failure`` (clients) is why the last handshake failed, None once one succeeds. An
    endpoint this socket connected to that refuses it is connected again every
    RETRY_REFUSED seconds, which libzmq does not do.
    """

    __slots__ = (
        "_closed",
        "_connected",
        "_grant",
        "_host",
        "_problems",
        "_retries",
        "_server",
        "_sock",
        "failure",
    )

    def __init__(self, sock: Any, keys: CurveKeys, problems: ProblemLog) -> None:
        if not isinstance(keys, CurveServerKeys | CurveClientKeys):
            raise TypeError(
                f"curve= takes CurveServerKeys or CurveClientKeys, got {type(keys).__name__}"
            )
        self._sock = sock
        self._problems = problems
        self._grant: ZapGrant | None = None
        self._host: Host | None = None
        self._connected: set[str] = set()  # endpoints we connected to (not accepted)
        self._retries: dict[str, Handle] = {}
        self._closed = False
        self.failure: str | None = None
        self._server = isinstance(keys, CurveServerKeys)
        if isinstance(keys, CurveServerKeys):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret_key.encode("ascii"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public_key.encode("ascii"))
            if keys.authorized_clients is not None:
                self._grant = _grant(sock.context, keys.authorized_clients, problems)
                sock.setsockopt(zmq.ZAP_DOMAIN, self._grant.domain)
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_key.encode("ascii"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public_key.encode("ascii"))
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret_key.encode("ascii"))

    def __repr__(self) -> str:
        role = "server" if self._server else "client"
        return f"<CurveSocket {role} allow_list={self._grant is not None} failure={self.failure!r}>"

    def start(self, host: Host) -> None:
        self._host = host
        if self._grant is not None:
            self._grant.handler.start(host)

    def close(self) -> None:
        self._closed = True
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()
        grant, self._grant = self._grant, None
        if grant is not None:
            _release(grant)

    def on_event(self, event: int, value: int, endpoint: str) -> None:
        """A handshake event of the socket's monitor."""
        if event == _CONNECTED:
            self._connected.add(endpoint)
            return
        if event == _SUCCEEDED:
            self.failure = None
            return
        kind, reason = handshake_failure(event, value, server=self._server)
        if event != _FAILED_NO_DETAIL and endpoint in self._connected:
            self._retry(endpoint)
        if event == _FAILED_AUTH and self._grant is not None:
            return  # our ZAP handler has reported the refused key, with the key
        if not self._server:
            self.failure = reason
        what = (
            "a client failed the CURVE handshake"
            if self._server
            else "the CURVE handshake with the server failed"
        )
        # The reasons are constants of handshake_failure: no braces to escape.
        self._problems.report(kind, f"{what}: {reason}")

    def explain(self, error: RPCError) -> RPCError:
        """``error`` (a call's failure), saying why when the handshake failed."""
        if self.failure is None or type(error) not in (TimeoutExpired, LostRemote):
            return error
        return type(error)(f"{error} (the CURVE handshake with the server failed: {self.failure})")

    def _retry(self, endpoint: str) -> None:
        if self._host is None or self._closed or endpoint in self._retries:
            return

        def reconnect() -> None:
            self._retries.pop(endpoint, None)
            if self._closed:
                return
            with contextlib.suppress(zmq.ZMQError):  # forget the dead session, if still known
                self._sock.disconnect(endpoint)
            self._sock.connect(endpoint)

        self._retries[endpoint] = self._host.call_later(RETRY_REFUSED, reconnect)


def handshake_failure(event: int, value: int, *, server: bool) -> tuple[str, str]:
    """(kind, reason) of a failed handshake, from a monitor event, in the words of its side;
    the kind counts it in ``problems``."""
    if event == _FAILED_AUTH:
        return "curve_refused", (
            f"the server refused this client's public key (ZAP status {value}): "
            "is it in the server's authorized clients?"
        )
    if event == _FAILED_PROTOCOL:
        if value == _MISMATCH:
            peer = "the client does not use CURVE (it has no keys)"
            return "curve_mismatch", peer if server else "the server does not use CURVE"
        if value == _CRYPTOGRAPHIC:
            return "curve_wrong_key", (
                "the client's hello could not be decrypted: it has the wrong server key"
                if server
                else "the server's answer could not be decrypted: is server_key its public key?"
            )
        return "curve_protocol", f"protocol error 0x{value:08x}"
    if server:
        return "curve_handshake", "the client closed the connection during the handshake"
    return "curve_handshake", (
        "the server closed the connection during the handshake: is server_key its public key?"
    )


# -- the ZAP handler of a context ---------------------------------------------------------


class ZapGrant:
    """One server's allow-list: its ZAP domain in its context's handler."""

    __slots__ = ("allowed", "domain", "handler", "problems")

    def __init__(
        self, handler: ZapHandler, domain: bytes, allowed: Iterable[str], problems: ProblemLog
    ) -> None:
        self.handler = handler
        self.domain = domain
        self.allowed = frozenset(z85.decode(key) for key in allowed)  # libzmq sends binary
        self.problems = problems

    def __repr__(self) -> str:
        return f"<ZapGrant {self.domain.decode()} allowed={len(self.allowed)}>"

    def refused(self, key: bytes, address: bytes) -> None:
        self.problems.report(
            "curve_refused",
            "a client's CURVE public key {} (from {}) is not in authorized_clients",
            z85.encode(key).decode("ascii"),
            address.decode("ascii", "replace"),
        )


def zap_reply(frames: Frames, grants: Mapping[bytes, ZapGrant]) -> Frames | None:
    """The answer to one ZAP request received on a ROUTER (RFC 27); None for something that
    is not a ZAP request (libzmq never sends one)."""
    if len(frames) < 8 or frames[1] != b"":
        return None
    peer, _, version, request_id, domain, address, _identity, mechanism, *credentials = frames

    def answer(status: bytes, text: bytes, user: bytes = b"") -> Frames:
        return [peer, b"", b"1.0", request_id, status, text, user, b""]

    if version != b"1.0":
        return answer(b"500", b"unsupported ZAP version")
    grant = grants.get(bytes(domain))
    if grant is None:
        return answer(b"200", b"OK")  # no allow-list of ours: as if no handler were bound
    if mechanism != b"CURVE" or len(credentials) != 1:
        return answer(b"400", b"CURVE required")
    key = bytes(credentials[0])
    if key in grant.allowed:
        return answer(b"200", b"OK", z85.encode(key))
    grant.refused(key, bytes(address))
    return answer(b"400", b"client key not authorized")


class ZapHandler:
    """The ZAP handler of one libzmq context: a ROUTER at ZAP_ENDPOINT answering for every
    server of the context (see the module docstring)."""

    def __init__(self, context: zmq.Context[Any]) -> None:
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise RuntimeError(
                f"cannot bind the ZAP endpoint {ZAP_ENDPOINT} ({exc}): another ZAP handler "
                "(zmq.auth's authenticator?) serves this ZeroMQ context; give the servers "
                "with authorized_clients their own context="
            ) from None
        self.address = context.underlying
        self.grants: dict[bytes, ZapGrant] = {}
        self._sock: Any = sock
        self._host: Host | None = None
        self._watch: Handle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<ZapHandler domains={len(self.grants)} started={self._host is not None}>"

    def start(self, host: Host) -> None:
        """Answer on ``host`` from now on (the first start wins; requests made before it
        wait in the socket, their handshakes with them)."""
        if self._host is None and not self._closed:
            self._host = host
            self._watch = host.watch(self._sock.getsockopt(zmq.FD), self._on_readable)
            host.call_soon(self._on_readable)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._watch is not None:
                self._watch.cancel()
            # Unbinding is immediate; a closed socket frees its inproc name only once
            # libzmq's reaper gets to it, and a new handler may need the name before that.
            with contextlib.suppress(zmq.ZMQError):
                self._sock.unbind(ZAP_ENDPOINT)
            self._sock.close(linger=0)

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(_BATCH):
            # Each send may consume the descriptor's edge: EVENTS is read again every time.
            if self._closed or not sock.getsockopt(EVENTS) & POLLIN:
                return
            reply = zap_reply(recv_frames(sock), self.grants)
            if reply is not None:
                try:
                    sock.send_multipart(reply, NOBLOCK)
                except zmq.ZMQError as exc:  # the session gave up waiting: nobody to answer
                    logger.debug("ZAP reply dropped: %s", exc)
        if self._host is not None:
            self._host.call_soon(self._on_readable)  # more waiting: let others run first


_handlers: dict[int, ZapHandler] = {}
_handlers_lock = threading.Lock()
_domains = itertools.count(1)


def _grant(context: zmq.Context[Any], allowed: Iterable[str], problems: ProblemLog) -> ZapGrant:
    with _handlers_lock:
        handler = _handlers.get(context.underlying)
        if handler is None:
            handler = _handlers[context.underlying] = ZapHandler(context)
        domain = f"rpccore.{os.getpid()}.{next(_domains)}".encode()
        grant = handler.grants[domain] = ZapGrant(handler, domain, allowed, problems)
        return grant


def _release(grant: ZapGrant) -> None:
    with _handlers_lock:
        handler = grant.handler
        handler.grants.pop(grant.domain, None)
        if not handler.grants:
            handler.close()
            if _handlers.get(handler.address) is handler:
                del _handlers[handler.address]


def zap_handlers() -> int:
    """How many contexts have a ZAP handler now (for tests: none once servers stop)."""
    return len(_handlers)


def monitor_event(frames: Frames) -> tuple[int, int, str]:
    """(event, value, endpoint) of a socket monitor message (libzmq's v1 format)."""
    event, value = struct.unpack("=HI", bytes(frames[0])[:6])
    endpoint = bytes(frames[1]).decode("utf-8", "replace") if len(frames) > 1 else ""
    return event, value, endpoint
