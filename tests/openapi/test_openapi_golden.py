"""Golden tests: the documents of fixed descriptions equal the checked-in files in
``golden/`` (regenerate with UPDATE_GOLDEN=1, see openapi_support), and are valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_support import (
    GOLDEN,
    check_golden,
    fallback_document,
    typed_document,
    valid,
)


def test_golden_typed_service() -> None:
    """Our server's introspection of Shop: TypedDict, dataclass, Enum, Literal, Optional,
    containers, bytes, streams, defaults and *args; safe methods and routes, auth off."""
    check_golden("typed", valid(typed_document()))


def test_golden_fallback_service() -> None:
    """A zerorpc 0.6.3 backend (no names, no types) and a service never described; auth on,
    with a public route."""
    check_golden("fallback", valid(fallback_document()))


@pytest.mark.parametrize("name", ["typed", "fallback"])
def test_golden_files_are_valid_documents(name: str) -> None:
    valid(json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8")))


def test_golden_check_fails_when_the_document_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    document = typed_document()
    document["info"]["title"] = "changed"
    with pytest.raises(AssertionError, match=r"UPDATE_GOLDEN=1 .*pytest tests/openapi"):
        check_golden("typed", document)


def test_golden_update_rewrites_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import openapi_support

    monkeypatch.setattr(openapi_support, "GOLDEN", tmp_path)
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    check_golden("new", {"openapi": "3.1.0"})
    assert json.loads((tmp_path / "new.json").read_text()) == {"openapi": "3.1.0"}
    monkeypatch.delenv("UPDATE_GOLDEN")
    check_golden("new", {"openapi": "3.1.0"})  # now it is the expected one
    with pytest.raises(AssertionError):
        check_golden("new", {"openapi": "3.1.1"})
