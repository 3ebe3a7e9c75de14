"""High availability the way the ZeroRPC talk shows it: a real HAProxy in TCP mode in front
of two rpccore servers (child processes, tests/green/ha_server.py), everything on 127.0.0.1.

One green Client connects to HAProxy. A DEALER socket is one TCP connection, and HAProxy
in TCP mode pins a connection to one backend server for its whole life, so this client
talks to exactly one server at a time. We kill that server with SIGKILL while a long call
is in flight on it, and check what the talk promises:

(a) the in-flight call fails with LostRemote, never hangs: within 3 heartbeat periods of
    the kill (plus a little slack for scheduling);
(b) new calls from the same, already-connected Client succeed, answered by the other
    server, within 3 heartbeat periods of the kill.

What happens underneath:

* The kernel closes the dead server's sockets, so HAProxy's server-side connection gets a
  FIN/RST at once. In TCP mode HAProxy then closes the client side of that session too.
* The client's DEALER sees its TCP connection close and reconnects to the same endpoint
  (HAProxy's frontend) after ZMQ_RECONNECT_IVL (libzmq's default: 100 ms). The ZMTP
  handshake runs again over the new connection, end to end with whichever backend HAProxy
  picked; requests sent meanwhile wait in the DEALER's queue and go out on it.
* HAProxy routes the new connection to a live backend: the health checks
  (``check inter 200 fall 1``) have usually marked the dead server DOWN already, and if
  not, the refused connect is retried on another server (``option redispatch 1``).
* The in-flight call's channel does not exist on the other server, which drops its
  heartbeats as unroutable and sends none back: the client's heartbeat for that channel
  runs out (more than 2 periods without ``_zpc_hb``) and the call fails with LostRemote.
  Nothing is retried behind the caller's back: a call that may have run is not run twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket
import pytest
from loopback import free_port
from required import required

from rpccore import LostRemote, TimeoutExpired
from rpccore.green import Client

if TYPE_CHECKING:
    from conftest import GreenChildProcesses

HB = 0.5  # heartbeat period of the servers and of the client
CALL_TIMEOUT = 10.0
SLACK = 0.5  # scheduling slack on top of the LostRemote bound
POLL_TIMEOUT = 0.1  # timeout of each probing call after the kill
START_TIMEOUT = 10.0  # for a child to print its endpoint, or HAProxy to listen
TEST_BOUND = 30.0  # the whole test; it normally takes about 4 s
SERVER_LIFETIME = 120.0  # the servers exit by themselves after this, whatever happens
SERVER_SCRIPT = Path(__file__).with_name("ha_server.py")
# HAProxy lives in /usr/sbin on Debian, which is not on every user's PATH.
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"])


def require_tool(name: str) -> str:
    """The path of the command ``name``. Without it the test is skipped, except under
    CI=true, where a missing tool is a broken environment and the test fails."""
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        required(f"{name!r} is not installed (Debian: apt-get install {name}; .ci/run does it)")
    return path


@pytest.fixture
def bounded() -> Iterator[None]:
    with gevent.Timeout(TEST_BOUND):
        yield


def start_server(children: GreenChildProcesses, name: str) -> tuple[Any, str]:
    """Start ha_server.py; return the process and its ``host:port``."""
    argv = [sys.executable, str(SERVER_SCRIPT), name, str(HB), str(SERVER_LIFETIME)]
    proc = children.spawn(argv, name=name)
    endpoint = children.read_line(proc, START_TIMEOUT)
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    return proc, endpoint.removeprefix("tcp://")


def haproxy_config(port: int, backends: dict[str, str]) -> str:
    servers = "\n".join(
        # check: a TCP connect every 200 ms; one failure marks a server DOWN, one success UP.
        f"    server {name} {address} check inter 200 fall 1 rise 1"
        for name, address in backends.items()
    )
    return f"""\
global
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    # Connecting to a backend is quick on loopback; a dead one is refused at once.
    timeout connect 1s
    timeout check 1s
    # A ZeroRPC connection may sit idle between calls (heartbeats flow only while calls
    # are open), so the idle timeouts are long: HAProxy must never cut it by itself.
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    # A refused connect is retried on another server, not on the dead one again.
    retries 3
    option redispatch 1

frontend rpc
    bind 127.0.0.1:{port}
    default_backend servers

backend servers
    balance roundrobin
{servers}
"""


def wait_listening(port: int, proc: Any, children: GreenChildProcesses) -> None:
    """Poll-connect to 127.0.0.1:port until it accepts (bounded)."""
    deadline = monotonic() + START_TIMEOUT
    while monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"haproxy exited with {proc.returncode}:\n{children.stderr(proc)}")
        try:
            with gevent.socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            gevent.sleep(0.05)
    pytest.fail(f"haproxy did not listen on {port} within {START_TIMEOUT}s")


def start_haproxy(
    children: GreenChildProcesses, tmp_path: Path, backends: dict[str, str]
) -> tuple[Any, int]:
    """HAProxy in the foreground (-db), on a free loopback port; returns (process, port)."""
    haproxy = require_tool("haproxy")
    for attempt in range(3):  # the free port may be taken before HAProxy binds it
        port = free_port()
        config = tmp_path / f"haproxy-{attempt}.cfg"
        config.write_text(haproxy_config(port, backends))
        proc = children.spawn([haproxy, "-f", str(config), "-db"], name="haproxy")
        try:
            wait_listening(port, proc, children)
        except pytest.fail.Exception:
            if proc.poll() is None or attempt == 2:
                raise
            continue
        return proc, port
    raise AssertionError("unreachable")


def test_kill_one_server_behind_haproxy(
    green_child_processes: GreenChildProcesses, tmp_path: Path, bounded: None
) -> None:
    require_tool("haproxy")  # before starting anything
    children = green_child_processes
    servers = {name: start_server(children, name) for name in ("alpha", "beta")}
    haproxy, port = start_haproxy(
        children, tmp_path, {name: address for name, (_, address) in servers.items()}
    )

    def haproxy_log() -> str:
        return children.stderr(haproxy)

    client = Client(f"tcp://127.0.0.1:{port}", timeout=CALL_TIMEOUT, heartbeat=HB)
    try:
        # Which server does this client's one connection reach?
        victim = client.call("whoami")
        assert victim in servers, victim
        (survivor,) = set(servers) - {victim}
        victim_proc = servers[victim][0]

        # A long call, in flight on the victim; it stays alive through HAProxy by
        # heartbeats for longer than it takes to declare a silent peer lost.
        in_flight = client.call("slow", 30, async_=True)
        assert children.read_line(victim_proc, START_TIMEOUT) == f"slow {victim}"
        # The client declares the server lost at its first tick more than 2 periods after
        # the last heartbeat it received, which came at most 1 period before the kill: so
        # between 1 and 3 periods after the kill, depending on where the kill lands in
        # the cycle. Both ends tick every HB from the call's start, the server a moment
        # after the client; killing a fifth of a period after a tick (just after the
        # server's heartbeat for it arrived) is on the slow side, about 2 periods here.
        gevent.sleep(3 * HB + HB / 5)
        assert not in_flight.ready(), in_flight.exception

        failed_at: list[float] = []
        in_flight.rawlink(lambda _result: failed_at.append(monotonic()))

        killed_at = monotonic()
        os.kill(victim_proc.pid, signal.SIGKILL)

        # (b) New calls on the same Client: probe with short timeouts until one answers.
        # Probes that time out are expected while the DEALER reconnects.
        answered_at = None
        answers: list[str] = []
        probes = 0
        deadline = killed_at + 3 * HB + SLACK
        while monotonic() < deadline:
            probes += 1
            try:
                answers.append(client.call("whoami", timeout=POLL_TIMEOUT))
            except TimeoutExpired:
                continue
            answered_at = monotonic()
            break
        assert answered_at is not None, (
            f"no call answered within {deadline - killed_at:.2f}s of the kill "
            f"({probes} probes); haproxy log:\n{haproxy_log()}"
        )
        recovery = answered_at - killed_at
        assert answers == [survivor]

        # (a) The in-flight call fails with LostRemote, bounded in time.
        remaining = killed_at + 3 * HB + SLACK - monotonic()
        in_flight.wait(max(remaining, 0.0))
        assert in_flight.ready(), (
            f"the in-flight call was still pending {3 * HB + SLACK}s after the kill"
        )
        assert isinstance(in_flight.exception, LostRemote), repr(in_flight.exception)
        while not failed_at:  # rawlink callbacks run in the hub, just after the result
            gevent.sleep(0)
        lost_after = failed_at[0] - killed_at

        print(
            f"\nkilled {victim}: first new call answered by {survivor} after "
            f"{recovery * 1000:.0f} ms ({probes} probe(s)); in-flight call LostRemote "
            f"after {lost_after * 1000:.0f} ms"
        )
        assert recovery <= 3 * HB, f"recovered after {recovery:.3f}s"
        assert lost_after <= 3 * HB + SLACK, f"LostRemote after {lost_after:.3f}s"

        # The client stays on the survivor: every later call is answered, by it.
        assert [client.call("whoami", timeout=2 * HB) for _ in range(20)] == [survivor] * 20
        assert client.call("slow", 0.1) == survivor
    finally:
        client.close()
