"""The Dockerfile, as far as this machine can check it without a Docker engine: what it
declares (a slim Python base, a non-root user, ``zerogate serve`` as the command, a
HEALTHCHECK on /healthz), and its install step replayed: exactly the files it COPYs, installed
the way its RUN line does (a non-editable ``pip install`` of the repository) into a fresh
virtualenv, then ``zerogate serve`` from that install answering the HEALTHCHECK's own command,
and serving the docs pages' files (package data an install can lose).

The replay takes the dependencies from this environment (a ``.pth`` line) rather than
downloading them again; pip still fetches the build backend, as the image build would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
STARTUP = 30.0  # seconds for the installed gateway to answer


def instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [line[len(name) :].strip() for line in lines if line.startswith(name + " ")]


def test_a_slim_python_base() -> None:
    [base] = instructions("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base)


def test_it_runs_as_a_user_that_is_not_root() -> None:
    users = instructions("USER")
    assert users
    assert users[-1] not in ("root", "0")


def test_the_command_is_zerogate_serve_and_the_healthcheck_asks_healthz() -> None:
    assert instructions("ENTRYPOINT") == ['["zerogate"]']
    [command] = instructions("CMD")
    assert command.startswith('["serve"')
    [check] = instructions("HEALTHCHECK")
    assert "/healthz" in check
    [port] = instructions("EXPOSE")
    assert f'"--port", "{port}"' in command


def test_every_package_is_copied() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    copied = {line.split()[0] for line in instructions("COPY")}
    assert {name.split(".")[0] for name in packages} <= copied


def _healthcheck_argv() -> list[str]:
    [check] = instructions("HEALTHCHECK")
    exec_form = check[check.index("CMD") + len("CMD") :].strip()
    argv: list[str] = [part.strip().strip('"') for part in exec_form.strip("[]").split('", "')]
    return argv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the Dockerfile's install: its COPYs into a folder, then its RUN."""
    tmp = tmp_path_factory.mktemp("image")
    source = tmp / "zerogate"
    source.mkdir()
    for line in instructions("COPY"):
        *sources, target = shlex.split(line)
        for name in sources:
            path = ROOT / name
            destination = source / Path(target).name if not target.endswith("/") else source
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, destination / name if destination.is_dir() else destination)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The dependencies: this environment's, as a plain path (its .pth files, such as the
    # editable install of the repository itself, are not processed from a .pth line).
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "deps-from-test-env.pth").write_text(ours + "\n")
    [run] = [line for line in instructions("RUN") if "pip install" in line]
    assert run.startswith("pip install /tmp/zerogate")
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv


@pytest.fixture
def serving(installed: Path, tmp_path: Path) -> Iterator[int]:
    """``zerogate serve`` of the installed copy, run from an empty folder (as in the image)."""
    port = free_port()
    config = tmp_path / "zerogate.yaml"
    config.write_text("services:\n  calc:\n    endpoints: [tcp://127.0.0.1:1]\n    timeout: 1\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["ZEROGATE_CONFIG"] = str(config)
    argv = [str(installed / "bin" / "zerogate"), "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        else:
            pytest.fail("the installed gateway did not answer")
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_the_installed_copy_serves_and_passes_the_healthcheck(
    installed: Path, serving: int
) -> None:
    found = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=installed,
    ).stdout
    assert Path(found).is_relative_to(installed)  # the copy, not this checkout
    argv = _healthcheck_argv()
    assert argv[0] == "python"
    check = argv[-1].replace(":8080/", f":{serving}/")
    proc = subprocess.run(
        [str(installed / "bin" / "python"), "-c", check],
        check=False,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{serving}/docs", timeout=5) as page:
        html = page.read().decode()
    assets = re.findall(r'(?:src|href)="([^"]*docs/assets/[^"]+)"', html)
    assert assets
    for asset in assets:
        url = urllib.parse.urljoin(f"http://127.0.0.1:{serving}/docs", asset)
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200
            assert answer.read()
