"""The naming file (rpccore._naming): loading, validation with file and line in every
message, and resolving targets through a file or $ZEROGATE_NAMES."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rpccore._naming import ENV_VAR, NamingError, is_endpoint, load_names, resolve, resolve_all


@pytest.fixture(autouse=True)
def no_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def write(tmp_path: Path, text: str, name: str = "names.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


VALID = """
    # services
    calc: [tcp://127.0.0.1:4242, tcp://127.0.0.1:4243]
    users: tcp://localhost:5000
    local:
      - ipc:///tmp/zerogate-local.sock
      - inproc://local
    v6: "tcp://[::1]:4242"
"""


def test_load_valid_file(tmp_path: Path) -> None:
    names = load_names(write(tmp_path, VALID))
    assert names == {
        "calc": ["tcp://127.0.0.1:4242", "tcp://127.0.0.1:4243"],
        "users": ["tcp://localhost:5000"],
        "local": ["ipc:///tmp/zerogate-local.sock", "inproc://local"],
        "v6": ["tcp://[::1]:4242"],
    }
    assert list(names) == ["calc", "users", "local", "v6"]  # file order


def test_load_accepts_str_path_and_empty_file(tmp_path: Path) -> None:
    assert load_names(str(write(tmp_path, VALID)))["users"] == ["tcp://localhost:5000"]
    assert load_names(write(tmp_path, "", "empty.yml")) == {}
    assert load_names(write(tmp_path, "# nothing yet\n", "comment.yml")) == {}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("calc: [tcp://127.0.0.1:1\nusers: x\n", 2, "malformed YAML"),
        ("calc: tcp://127.0.0.1:1\n  bad: indent\n", 2, "malformed YAML"),
        ("calc: x\n---\nusers: y\n", 2, "malformed YAML"),
        ("# a list, not a mapping\n- tcp://127.0.0.1:1\n", 2, "the top level must map names"),
        ("just a string\n", 1, "the top level must map names"),
        ("calc: tcp://127.0.0.1:1\n42: tcp://127.0.0.1:2\n", 2, "a name must be a string"),
        ("calc: tcp://127.0.0.1:1\n[a, b]: tcp://127.0.0.1:2\n", 2, "a name must be a string"),
        ("'': tcp://127.0.0.1:1\n", 1, "a name must not be empty"),
        ("calc: tcp://127.0.0.1:1\n\ncalc: tcp://127.0.0.1:2\n", 3, "'calc': named twice"),
        ("calc:\n", 1, "'calc': an endpoint must be a string, not null"),
        ("calc: []\n", 1, "'calc': no endpoints"),
        ("calc: 4242\n", 1, "'calc': an endpoint must be a string, not int 4242"),
        ("calc:\n  - tcp://127.0.0.1:1\n  - {a: 1}\n", 3, "'calc': an endpoint must be"),
        ("calc: {host: x}\n", 1, "'calc': an endpoint must be a string, not a mapping"),
        ("calc:\n  - tcp://127.0.0.1:1\n  - tpc://x:1\n", 3, "'tpc://x:1' is not a ZeroMQ"),
        ("calc: 127.0.0.1:4242\n", 1, "is not a ZeroMQ endpoint"),
        ("calc: tcp://127.0.0.1\n", 1, "is not a ZeroMQ endpoint"),
        ("calc: tcp://127.0.0.1:70000\n", 1, "is not a ZeroMQ endpoint"),
        ("calc: tcp://127.0.0.1:0\n", 1, "is not a ZeroMQ endpoint"),
        ("calc: 'ipc://'\n", 1, "is not a ZeroMQ endpoint"),
    ],
)
def test_invalid_files_name_file_key_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(NamingError) as caught:
        load_names(path)
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_message_format_matches_the_documented_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path is named as given
    write(tmp_path, "users: tcp://127.0.0.1:1\n\ncalc: [tcp://127.0.0.1:1, nowhere]\n")
    with pytest.raises(NamingError, match=r"^names\.yml line 3: 'calc': 'nowhere' is not a"):
        load_names("names.yml")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(NamingError, match=r"nope\.yml: no such naming file"):
        load_names(tmp_path / "nope.yml")
    with pytest.raises(NamingError, match="cannot read the naming file"):
        load_names(tmp_path)  # a directory
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"calc: \xff\xfe\n")
    with pytest.raises(NamingError, match="cannot read the naming file"):
        load_names(binary)


def test_is_endpoint() -> None:
    for good in ("tcp://127.0.0.1:4242", "tcp://*:4242", "tcp://h:*", "tcp://[::1]:1"):
        assert is_endpoint(good), good
    for bad in ("tcp://h", "tcp://h:", "tcp://:1", "udp://h:1", "calc", "tcp://a b:1"):
        assert not is_endpoint(bad), bad


def test_resolve_endpoint_is_itself_without_any_file() -> None:
    assert resolve("tcp://127.0.0.1:4242") == ["tcp://127.0.0.1:4242"]
    assert resolve("ipc:///tmp/x", names="/does/not/exist.yml") == ["ipc:///tmp/x"]


def test_resolve_name_through_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert resolve("calc", path) == ["tcp://127.0.0.1:4242", "tcp://127.0.0.1:4243"]
    assert resolve("users", names=str(path)) == ["tcp://localhost:5000"]
    resolve("calc", path).append("x")  # a copy: the caller may change it
    assert resolve("calc", path) == ["tcp://127.0.0.1:4242", "tcp://127.0.0.1:4243"]


def test_resolve_name_through_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path, VALID)))
    assert resolve("users") == ["tcp://localhost:5000"]
    other = write(tmp_path, "users: tcp://127.0.0.1:9\n", "other.yml")
    assert resolve("users", other) == ["tcp://127.0.0.1:9"]  # an explicit file wins
    with pytest.raises(NamingError, match=r"\$ZEROGATE_NAMES\): no service named 'nope'"):
        resolve("nope")


def test_resolve_unknown_name_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(NamingError) as caught:
        resolve("calculator", path)
    assert str(caught.value) == (
        f"{path}: no service named 'calculator' (names: calc, local, users, v6)"
    )


def test_resolve_without_a_naming_file() -> None:
    with pytest.raises(NamingError, match=r"'calc' is not an endpoint .* \$ZEROGATE_NAMES"):
        resolve("calc")


def test_resolve_missing_or_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NamingError, match="no such naming file"):
        resolve("calc", tmp_path / "missing.yml")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.yml"))
    with pytest.raises(NamingError, match="no such naming file"):
        resolve("calc")
    with pytest.raises(NamingError, match="line 1"):
        resolve("calc", write(tmp_path, "calc: nowhere\n"))


def test_resolve_all(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert resolve_all("users", path) == ["tcp://localhost:5000"]
    assert resolve_all(["tcp://127.0.0.1:1", "users", "calc"], path) == [
        "tcp://127.0.0.1:1",
        "tcp://localhost:5000",
        "tcp://127.0.0.1:4242",
        "tcp://127.0.0.1:4243",
    ]
    assert resolve_all([], path) == []
