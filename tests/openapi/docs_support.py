"""Support for the docs-page tests: a stand-in OpenAPI document, and the gateway's e2e helpers.

``STANDIN`` is a small OpenAPI 3.1 document (a ``calc`` service with ``POST /rpc/calc/add``,
a safe GET, named schemas and a shared response) for the page tests, which test the pages
apart from the builder; the browser test uses the builder's document of a real gateway.

The gateway tests' helpers (``tests/gateway/e2e_support.py``) are re-exported from here, so
the test modules need no ``sys.path`` handling of their own.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from e2e_support import Children, Gateway, service_config, start_backend

__all__ = [
    "STANDIN",
    "Children",
    "Gateway",
    "service_config",
    "source_of",
    "start_backend",
]

STANDIN: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {"title": "zerogate", "version": "0.1.0", "description": "Stand-in document."},
    "servers": [{"url": "/"}],
    "tags": [{"name": "calc", "description": "A calculator."}],
    "paths": {
        "/rpc/calc/add": {
            "post": {
                "tags": ["calc"],
                "operationId": "calc.add",
                "summary": "Add two integers.",
                "description": "Returns a + b.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/calc.add.args"},
                                    {
                                        "type": "array",
                                        "prefixItems": [{"type": "integer"}, {"type": "integer"}],
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The sum.",
                        "content": {"application/json": {"schema": {"type": "integer"}}},
                    },
                    "default": {"$ref": "#/components/responses/Problem"},
                },
            }
        },
        "/rpc/calc/get_item": {
            "get": {
                "tags": ["calc"],
                "operationId": "calc.get_item.get",
                "parameters": [
                    {
                        "name": "name",
                        "in": "query",
                        "required": True,
                        "schema": {"type": ["string", "null"]},
                        "description": "The item's name.",
                    }
                ],
                "responses": {"200": {"description": "The item."}},
            }
        },
    },
    "components": {
        "schemas": {
            "calc.add.args": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
                "required": ["a"],
            },
            "Problem": {"type": "object", "properties": {"title": {"type": "string"}}},
        },
        "responses": {
            "Problem": {
                "description": "A problem document.",
                "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        },
    },
}


def source_of(document: dict[str, Any]) -> tuple[bytes, str]:
    """What a document source returns: the JSON bytes and a strong ETag of them."""
    body = json.dumps(document).encode()
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'
