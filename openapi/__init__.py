"""openapi: the gateway's OpenAPI 3.1 document, built from service introspection.

``build_document`` is a pure function of the services' descriptions and the config;
``DocumentCache`` keeps it rendered (JSON bytes and a strong ETag) until a description
changes; ``render_json`` and ``render_yaml`` write it for ``zerogate openapi``.
"""

from .cache import DocumentCache, Rendered
from .document import DEFAULT_TITLE, OPENAPI_VERSION, build_document, package_version
from .render import render_json, render_yaml

__all__ = [
    "DEFAULT_TITLE",
    "OPENAPI_VERSION",
    "DocumentCache",
    "Rendered",
    "build_document",
    "package_version",
    "render_json",
    "render_yaml",
]
