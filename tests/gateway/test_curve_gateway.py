"""CurveZMQ on the gateway's side: ``zerogate keys`` (its output parses, its files load, the
keys work) and a service's ``curve`` config in the pool (gateway/pool.py) calling a CURVE
backend, an rpccore.aio server in this process, over loopback TCP.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from async_support import run_async

from gateway import keys_command
from gateway.config import CurveConfig, EnvSecret, ServiceConfig, parse_config
from gateway.pool import PooledStream, ServicePool
from rpccore import CurveKeyError, CurveServerKeys, curve_keypair, load_key, public_key_of
from rpccore._curve import zap_handlers
from rpccore.aio import Server, stream

HB = 0.2
SLACK = 1.0
SERVER_PUBLIC, SERVER_SECRET = curve_keypair()
GATEWAY_PUBLIC, GATEWAY_SECRET = curve_keypair()


class Calc:
    def add(self, a: int, b: int) -> int:
        return a + b

    @stream
    def count(self, n: int) -> Any:
        return range(n)


# -- zerogate keys ---------------------------------------------------------------------------


def test_keys_prints_a_pair_as_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_command.main([]) == 0
    out = capsys.readouterr().out
    pair = yaml.safe_load(out)
    assert set(pair) == {"public_key", "secret_key"}
    assert public_key_of(pair["secret_key"]) == pair["public_key"]
    assert "keep it private" in out
    assert "file:PATH or env:NAME" in out


def test_keys_quotes_keys_whatever_their_characters() -> None:
    # '#', ':', '&', '*', '[' ... are all Z85: a plain YAML scalar would break on them.
    public, secret = "#&*[:" + "a" * 35, "!{@%>" + "b" * 35
    assert yaml.safe_load(keys_command.pair_text(public, secret)) == {
        "public_key": public,
        "secret_key": secret,
    }


def test_keys_out_writes_a_private_key_file_and_a_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "backend"
    assert keys_command.main(["--out", str(prefix)]) == 0
    out = capsys.readouterr().out
    secret_file, public_file = tmp_path / "backend.key", tmp_path / "backend.pub"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert not stat.S_IMODE(public_file.stat().st_mode) & 0o022  # nobody else may change it
    secret = load_key(f"file:{secret_file}", kind="secret", what="k")
    public = load_key(f"file:{public_file}", kind="public", what="k")
    assert public_key_of(secret) == public
    assert load_key(f"file:{secret_file}", kind="public", what="k") == public
    assert secret not in out  # printed only without --out
    assert yaml.safe_load(out) == {"public_key": public}
    assert f"file:{secret_file}" in out

    # Never over existing files, unless --force (which makes a new pair, still private).
    assert keys_command.main(["--out", str(prefix)]) == 2
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert load_key(f"file:{secret_file}", kind="secret", what="k") == secret
    secret_file.chmod(0o644)
    assert keys_command.main(["--out", str(prefix), "--force"]) == 0
    assert load_key(f"file:{secret_file}", kind="secret", what="k") != secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_keys_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.keys_command"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pair = yaml.safe_load(done.stdout)
    assert public_key_of(pair["secret_key"]) == pair["public_key"]


def test_the_printed_keys_work(monkeypatch: pytest.MonkeyPatch) -> None:
    server_pair = yaml.safe_load(keys_command.pair_text(*curve_keypair()))
    gateway_pair = yaml.safe_load(keys_command.pair_text(*curve_keypair()))
    monkeypatch.setenv("ZG_TEST_PRINTED_KEY", gateway_pair["secret_key"])
    curve = CurveConfig(
        server_key=server_pair["public_key"], secret_key=EnvSecret("ZG_TEST_PRINTED_KEY")
    )
    keys = CurveServerKeys(
        secret_key=server_pair["secret_key"], authorized_clients=[gateway_pair["public_key"]]
    )

    @run_async
    async def scenario() -> None:
        async with backend(keys) as endpoint, ServicePool(_service(endpoint, curve)) as pool:
            assert await pool.call("add", [20, 22]) == 42

    scenario()


# -- the pool with curve ----------------------------------------------------------------------


def _service(endpoint: str, curve: CurveConfig) -> ServiceConfig:
    return ServiceConfig(name="calc", endpoints=(endpoint,), heartbeat=HB, timeout=5.0, curve=curve)


@asynccontextmanager
async def backend(keys: CurveServerKeys) -> AsyncIterator[str]:
    """An rpccore.aio CURVE server of Calc on loopback; yields its endpoint."""
    server = Server(Calc(), heartbeat=HB, curve=keys)
    try:
        endpoint = server.bind("tcp://127.0.0.1:*")[0]
        server.start()
        yield endpoint
    finally:
        server.stop()
    assert zap_handlers() == 0


def _gateway_keys(monkeypatch: pytest.MonkeyPatch) -> CurveConfig:
    monkeypatch.setenv("ZG_TEST_GATEWAY_KEY", GATEWAY_SECRET)
    return CurveConfig(server_key=SERVER_PUBLIC, secret_key=EnvSecret("ZG_TEST_GATEWAY_KEY"))


async def _until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


def test_the_pool_calls_a_curvebackend(monkeypatch: pytest.MonkeyPatch) -> None:
    curve = _gateway_keys(monkeypatch)

    @run_async
    async def scenario() -> None:
        keys = CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=[GATEWAY_PUBLIC])
        async with backend(keys) as endpoint, ServicePool(_service(endpoint, curve)) as pool:
            assert await pool.call("add", [1, 2]) == 3
            items = await pool.call("count", [4])
            assert isinstance(items, PooledStream)
            async with items:
                assert [item async for item in items] == [0, 1, 2, 3]
            await asyncio.sleep(3 * HB)  # a few probes
            assert pool.ready

    scenario()


def test_a_pool_whose_key_is_not_authorized_marks_the_endpoint_down_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    curve = _gateway_keys(monkeypatch)

    @run_async
    async def scenario() -> None:
        keys = CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=[SERVER_PUBLIC])
        async with backend(keys) as endpoint, ServicePool(_service(endpoint, curve)) as pool:
            await _until(lambda: not pool.ready, 4 * HB + SLACK, "the endpoint going down")
            error = pool.snapshot()["endpoints"][0]["last_error"]
            assert "the CURVE handshake with the server failed" in error
            assert "refused this client's public key" in error

    scenario()


def test_a_pool_with_a_wrong_server_key_never_reaches_thebackend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZG_TEST_GATEWAY_KEY", GATEWAY_SECRET)
    wrong = CurveConfig(server_key=GATEWAY_PUBLIC, secret_key=EnvSecret("ZG_TEST_GATEWAY_KEY"))

    @run_async
    async def scenario() -> None:
        async with (
            backend(CurveServerKeys(secret_key=SERVER_SECRET)) as endpoint,
            ServicePool(_service(endpoint, wrong)) as pool,
        ):
            await _until(lambda: not pool.ready, 4 * HB + SLACK, "the endpoint going down")
            assert "is server_key its public key?" in pool.snapshot()["endpoints"][0]["last_error"]

    scenario()


def test_a_config_file_to_a_pool(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "backend.pub").write_text(f"{SERVER_PUBLIC}\n", encoding="utf-8")
    (tmp_path / "keys" / "gateway.key").write_text(f"{GATEWAY_SECRET}\n", encoding="utf-8")

    @run_async
    async def scenario() -> None:
        keys = CurveServerKeys(secret_key=SERVER_SECRET, authorized_clients=[GATEWAY_PUBLIC])
        async with backend(keys) as endpoint:
            config = parse_config(
                "services:\n"
                "  calc:\n"
                f"    endpoints: {endpoint}\n"
                "    heartbeat: 0.2\n"
                "    curve:\n"
                "      server_key: file:keys/backend.pub\n"
                "      secret_key: file:keys/gateway.key\n"
                f'      public_key: "{GATEWAY_PUBLIC}"\n',
                base_dir=tmp_path,
            )
            async with ServicePool(config.services["calc"]) as pool:
                assert await pool.call("add", [2, 3]) == 5

    scenario()


def test_a_key_that_cannot_be_read_fails_the_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZG_TEST_MISSING_KEY", raising=False)
    service = _service(
        "tcp://127.0.0.1:9",
        CurveConfig(server_key=SERVER_PUBLIC, secret_key=EnvSecret("ZG_TEST_MISSING_KEY")),
    )

    @run_async
    async def scenario() -> None:
        pool = ServicePool(service)
        with pytest.raises(CurveKeyError) as caught:
            await pool.open()
        assert str(caught.value) == (
            "services.calc.curve.secret_key: the environment variable ZG_TEST_MISSING_KEY "
            "is not set"
        )
        assert not pool.ready
        await pool.close()

    scenario()
