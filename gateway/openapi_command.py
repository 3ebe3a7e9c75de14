"""``zerogate openapi``: describe every configured service and print the OpenAPI document.

    zerogate openapi [-c FILE] [--yaml]

Each service is described the way the running gateway describes it (``Registry``: one
pooled rpccore.aio client per endpoint, ``_zerorpc_inspect`` or the zerorpc 0.6.3 fallback,
the exposure globs of the config), then ``openapi.build_document`` builds the document, and
it is printed as indented JSON, or YAML with ``--yaml``.

Exit status: 0; 1 when a service could not be described (the document is still printed,
with that service's tag saying it is unavailable, and stderr says which and why); 2 when
the config cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TextIO

from openapi import build_document, package_version, render_json, render_yaml

from .config import Config, ConfigError, default_config_path, load_config
from .registry import Description, Registry

EXIT_OK: Final = 0
EXIT_INCOMPLETE: Final = 1
EXIT_USAGE: Final = 2


async def describe_services(config: Config) -> tuple[dict[str, Description | None], dict[str, str]]:
    """Every service's description (None when it failed), and why each failure failed."""
    registry = Registry(config)
    try:
        await registry.open()  # describes each service once, concurrently
        described = {name: entry.description for name, entry in registry.services.items()}
        failures = {
            name: entry.last_error or "no description"
            for name, entry in registry.services.items()
            if entry.description is None
        }
    finally:
        await registry.close()
    return described, failures


def document_for(config: Config) -> tuple[dict[str, Any], dict[str, str]]:
    """(the document, {service: why it could not be described})."""
    described, failures = asyncio.run(describe_services(config))
    return build_document(described, config, version=package_version()), failures


def run(
    config_path: Path | None,
    *,
    as_yaml: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The command: print the document of the config at ``config_path`` (default:
    ``$ZEROGATE_CONFIG``, else ``zerogate.yaml``); the exit status."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config = load_config(config_path or default_config_path())
    except ConfigError as exc:
        print(f"zerogate openapi: {exc}", file=err)
        return EXIT_USAGE
    with _quiet_registry():
        document, failures = document_for(config)
    out.write(render_yaml(document) if as_yaml else render_json(document, indent=2).decode())
    out.flush()
    _report(failures, err)
    return EXIT_INCOMPLETE if failures else EXIT_OK


def main(args: argparse.Namespace) -> int:
    """The handler of ``zerogate openapi`` (``args.config``, ``args.yaml``)."""
    return run(args.config, as_yaml=args.yaml)


def _report(failures: Mapping[str, str], err: TextIO) -> None:
    for name, why in sorted(failures.items()):
        print(
            f"zerogate openapi: service {name} could not be described ({why}); "
            "the document lists it as unavailable",
            file=err,
        )


@contextmanager
def _quiet_registry() -> Iterator[None]:
    """The registry logs each failed description as a warning; this command reports them
    itself, once, so Python's last-resort handler must not print them too."""
    logger, handler = logging.getLogger("zerogate.registry"), logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
