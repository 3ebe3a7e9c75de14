"""Service names on the asyncio driver: a Client created by name through a naming file
(or $ZEROGATE_NAMES), on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from aio_support import HB, run_async, serving

from rpccore._naming import ENV_VAR, NamingError
from rpccore.aio import Client


class Calc:
    async def add(self, a: int, b: int) -> int:
        return a + b


@pytest.fixture(autouse=True)
def no_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def naming_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "names.yml"
    path.write_text(text, encoding="utf-8")
    return path


@run_async
async def test_client_by_name(tmp_path: Path) -> None:
    async with serving(Calc()) as (_, endpoint):
        names = naming_file(tmp_path, f"other: tcp://127.0.0.1:1\ncalc: [{endpoint}]\n")
        client = Client("calc", names=names, heartbeat=HB, timeout=10)
        try:
            assert await client.add(1, 2) == 3
        finally:
            client.close()


@run_async
async def test_client_by_name_through_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(Calc()) as (_, endpoint):
        monkeypatch.setenv(ENV_VAR, str(naming_file(tmp_path, f"calc: {endpoint}\n")))
        client = Client("calc", heartbeat=HB, timeout=10)
        try:
            assert await client.call("add", 2, 3) == 5
        finally:
            client.close()


def test_naming_errors_open_no_socket(tmp_path: Path) -> None:
    # The conftest's autouse check fails the test if a socket was left open.
    names = naming_file(tmp_path, "calc: tcp://127.0.0.1:1\n")
    with pytest.raises(NamingError, match="no service named 'nope'"):
        Client("nope", names=names)
    with pytest.raises(NamingError, match="no naming file"):
        Client("calc")
    with pytest.raises(NamingError, match=r"names\.yml line 1: 'calc': 'x' is not a ZeroMQ"):
        Client("calc", names=naming_file(tmp_path, "calc: x\n"))
