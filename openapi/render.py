"""The document as text: compact JSON for ``/openapi.json``, indented JSON or YAML for
``zerogate openapi``. Key order is kept as built, so the same document renders the same."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml


def render_json(document: Mapping[str, Any], *, indent: int | None = None) -> bytes:
    """UTF-8 JSON; compact unless ``indent`` is given (then it ends with a newline)."""
    if indent is None:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(document, ensure_ascii=False, indent=indent) + "\n"
    return text.encode("utf-8")


class _Dumper(yaml.SafeDumper):
    """SafeDumper without anchors: a schema used twice is written twice, as in the JSON."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_yaml(document: Mapping[str, Any]) -> str:
    # sort_keys=False keeps "openapi" first and each operation in the order it was built.
    text: str = yaml.dump(
        dict(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return text
