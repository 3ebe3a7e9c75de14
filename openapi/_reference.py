"""The ``/redoc`` page: the whole OpenAPI document as one HTML page, with no script at all.

Services (the document's tags) are sections; each operation shows its method and path, its
id, summary, description, parameters, request body and responses. A schema reads as a short
type (``array of Item``, ``integer | null``), object schemas as a table of their properties,
and the full JSON Schema sits in a ``<details>`` below. Named schemas are listed at the end
and every ``$ref`` to one links there.

Every string of the document is escaped before it reaches the page: descriptions come from
backend docstrings, which the gateway does not control. The only URLs written are in-page
anchors (``#op-...``), whose ids keep ``[A-Za-z0-9_.-]`` only, and the stylesheet's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from html import escape
from typing import Any, Final

HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
UNTAGGED: Final = "other"
_SCHEMA_REF: Final = "#/components/schemas/"
_UNSAFE_ID: Final = re.compile(r"[^A-Za-z0-9_.-]+")


def render_reference(document: Mapping[str, Any], *, stylesheet: str) -> str:
    """The reference page of ``document`` (a parsed OpenAPI 3.x document)."""
    return _Renderer(document).page(stylesheet)


def _text(value: Any) -> str:
    return escape(str(value), quote=True)


def _paragraphs(value: Any) -> str:
    """A description as paragraphs (split on blank lines); Markdown is shown as written."""
    if not isinstance(value, str) or not value.strip():
        return ""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", value.strip()) if b.strip()]
    return "".join(f'<p class="text">{_text(block)}</p>' for block in blocks)


def _json(value: Any) -> str:
    return _text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str))


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class _Ids:
    """Unique, safe element ids."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def make(self, kind: str, name: str) -> str:
        base = f"{kind}-{_UNSAFE_ID.sub('-', name).strip('-') or 'x'}"
        candidate, n = base, 1
        while candidate in self.taken:
            n += 1
            candidate = f"{base}-{n}"
        self.taken.add(candidate)
        return candidate


class _Renderer:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.components = _dict(document.get("components"))
        self.ids = _Ids()
        self.tag_ids: dict[str, str] = {}
        self.schema_ids = {
            name: self.ids.make("schema", str(name))
            for name in _dict(self.components.get("schemas"))
        }

    # -- the page -------------------------------------------------------------------------

    def page(self, stylesheet: str) -> str:
        info = _dict(self.document.get("info"))
        title = str(info.get("title") or "API reference")
        groups = self._groups()
        sections = [self._section(tag, ops) for tag, ops in groups.items()]
        version = (
            f' <span class="version">{_text(info["version"])}</span>' if "version" in info else ""
        )
        return "".join(
            [
                '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
                '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
                f"<title>{_text(title)} - reference</title>\n",
                f'<link rel="stylesheet" href="{_text(stylesheet)}">\n</head>\n<body>\n',
                self._nav(groups),
                f"<main>\n<header><h1>{_text(title)}{version}</h1>",
                _paragraphs(info.get("description")),
                '<p class="links"><a href="docs">Try it out</a> · ',
                '<a href="openapi.json">openapi.json</a></p></header>\n',
                self._security_schemes(),
                *sections,
                self._schemas(),
                "</main>\n</body>\n</html>\n",
            ]
        )

    def _groups(self) -> dict[str, list[tuple[str, str, Mapping[str, Any], str]]]:
        """tag -> [(method, path, operation, element id)], tags in the document's order."""
        groups: dict[str, list[tuple[str, str, Mapping[str, Any], str]]] = {
            str(tag.get("name")): [] for tag in self._tags()
        }
        for path, method, operation in self._operations():
            tags = operation.get("tags")
            tag = str(tags[0]) if isinstance(tags, list) and tags else UNTAGGED
            name = str(operation.get("operationId") or f"{method} {path}")
            groups.setdefault(tag, []).append((method, path, operation, self.ids.make("op", name)))
        return {tag: ops for tag, ops in groups.items() if ops}

    def _tags(self) -> Iterator[Mapping[str, Any]]:
        tags = self.document.get("tags")
        for tag in tags if isinstance(tags, list) else ():
            if isinstance(tag, Mapping) and "name" in tag:
                yield tag

    def _operations(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for path, raw in _dict(self.document.get("paths")).items():
            item = _dict(raw)
            shared = item.get("parameters")
            for method in HTTP_METHODS:
                operation = item.get(method)
                if isinstance(operation, Mapping):
                    if isinstance(shared, list):  # path-level parameters apply to each
                        own = operation.get("parameters")
                        operation = {**operation, "parameters": [*shared, *(own or [])]}
                    yield str(path), method, operation

    def _nav(self, groups: Mapping[str, list[tuple[str, str, Mapping[str, Any], str]]]) -> str:
        items = []
        for tag, ops in groups.items():
            links = "".join(
                f'<li><a href="#{op_id}"><span class="method {method}">{method.upper()}</span> '
                f"{_text(path)}</a></li>"
                for method, path, _, op_id in ops
            )
            items.append(
                f'<li><a href="#{self._tag_id(tag)}">{_text(tag)}</a><ul>{links}</ul></li>'
            )
        if self.schema_ids:
            items.append('<li><a href="#schemas">schemas</a></li>')
        return f"<nav><ul>{''.join(items)}</ul></nav>\n"

    def _tag_id(self, tag: str) -> str:
        if tag not in self.tag_ids:
            self.tag_ids[tag] = self.ids.make("tag", tag)
        return self.tag_ids[tag]

    def _section(self, tag: str, ops: list[tuple[str, str, Mapping[str, Any], str]]) -> str:
        about = next((t for t in self._tags() if str(t.get("name")) == tag), {})
        body = "".join(self._operation(method, path, op, op_id) for method, path, op, op_id in ops)
        return (
            f'<section class="service" id="{self._tag_id(tag)}"><h2>{_text(tag)}</h2>'
            f"{_paragraphs(about.get('description'))}{body}</section>\n"
        )

    # -- one operation --------------------------------------------------------------------

    def _operation(self, method: str, path: str, op: Mapping[str, Any], op_id: str) -> str:
        parts = [
            f'<article class="operation" id="{op_id}"><h3>',
            f'<span class="method {method}">{method.upper()}</span> <code>{_text(path)}</code>',
            "</h3>",
        ]
        if op.get("deprecated") is True:
            parts.append('<p class="deprecated">deprecated</p>')
        if "operationId" in op:
            parts.append(
                f'<p class="op-id">operation id <code>{_text(op["operationId"])}</code></p>'
            )
        if op.get("summary"):
            parts.append(f'<p class="summary">{_text(op["summary"])}</p>')
        parts.append(_paragraphs(op.get("description")))
        parts.append(self._security(op))
        parts.append(self._parameters(op.get("parameters")))
        parts.append(self._request_body(op.get("requestBody")))
        parts.append(self._responses(op.get("responses")))
        parts.append("</article>\n")
        return "".join(parts)

    def _resolve(self, value: Any) -> Mapping[str, Any]:
        """A local ``$ref`` to a component (a parameter, a body, a response) followed."""
        seen: set[str] = set()
        while isinstance(value, Mapping) and isinstance(value.get("$ref"), str):
            ref = value["$ref"]
            if not ref.startswith("#/") or ref in seen:
                break
            seen.add(ref)
            target: Any = self.document
            for key in ref[2:].split("/"):
                target = _dict(target).get(key.replace("~1", "/").replace("~0", "~"))
            value = target
        return _dict(value)

    def _security(self, op: Mapping[str, Any]) -> str:
        needs = op.get("security", self.document.get("security"))
        if not isinstance(needs, list) or not needs:
            return ""
        options = [" + ".join(_text(name) for name in _dict(req)) or "none" for req in needs]
        return f'<p class="security">credentials: {" or ".join(options)}</p>'

    def _parameters(self, parameters: Any) -> str:
        if not isinstance(parameters, list) or not parameters:
            return ""
        rows = []
        for raw in parameters:
            param = self._resolve(raw)
            required = "required" if param.get("required") else ""
            rows.append(
                f"<tr><td><code>{_text(param.get('name', ''))}</code></td>"
                f"<td>{_text(param.get('in', ''))}</td>"
                f"<td>{self.type_label(param.get('schema'))}</td><td>{required}</td>"
                f"<td>{_paragraphs(param.get('description'))}</td></tr>"
            )
        return (
            "<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th>"
            f"<th></th><th>description</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def _request_body(self, body: Any) -> str:
        body = self._resolve(body)
        if not body:
            return ""
        required = " (required)" if body.get("required") else ""
        return (
            f"<h4>Request body{required}</h4>{_paragraphs(body.get('description'))}"
            f"{self._content(body.get('content'))}"
        )

    def _responses(self, responses: Any) -> str:
        if not isinstance(responses, Mapping) or not responses:
            return ""
        rows = []
        for status, raw in responses.items():
            response = self._resolve(raw)
            rows.append(
                f'<div class="response"><h5><span class="status">{_text(status)}</span> '
                f"{_text(response.get('description', ''))}</h5>"
                f"{self._content(response.get('content'))}</div>"
            )
        return f"<h4>Responses</h4>{''.join(rows)}"

    def _content(self, content: Any) -> str:
        parts = []
        for media_type, media in _dict(content).items():
            schema = _dict(media).get("schema")
            parts.append(
                f'<div class="media"><p><code>{_text(media_type)}</code>: '
                f"{self.type_label(schema)}</p>{self.schema_detail(schema)}</div>"
            )
        return "".join(parts)

    # -- schemas --------------------------------------------------------------------------

    def type_label(self, schema: Any, depth: int = 0) -> str:
        """A schema as a short type, HTML-escaped, named schemas as links."""
        if schema is True or schema is None:
            return "any"
        if not isinstance(schema, Mapping):
            return "nothing" if schema is False else "?"
        if depth > 6:
            return "…"
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix(_SCHEMA_REF)
            if ref.startswith(_SCHEMA_REF) and name in self.schema_ids:
                return f'<a href="#{self.schema_ids[name]}">{_text(name)}</a>'
            return f"<code>{_text(ref)}</code>"
        if "const" in schema:
            return f"<code>{_text(json.dumps(schema['const']))}</code>"
        if isinstance(schema.get("enum"), list):
            return " | ".join(f"<code>{_text(json.dumps(v))}</code>" for v in schema["enum"])
        for key, joiner in (("anyOf", " | "), ("oneOf", " | "), ("allOf", " & ")):
            if isinstance(schema.get(key), list):
                return joiner.join(self.type_label(s, depth + 1) for s in schema[key])
        kinds = schema.get("type")
        if isinstance(kinds, list):
            return " | ".join(self._one_type(schema, str(k), depth) for k in kinds)
        if isinstance(kinds, str):
            return self._one_type(schema, kinds, depth)
        return "any"

    def _one_type(self, schema: Mapping[str, Any], kind: str, depth: int) -> str:
        if kind == "array":
            if isinstance(schema.get("prefixItems"), list):
                items = ", ".join(self.type_label(s, depth + 1) for s in schema["prefixItems"])
                return f"[{items}]"
            return f"array of {self.type_label(schema.get('items'), depth + 1)}"
        if kind == "object" and "properties" not in schema:
            extra = schema.get("additionalProperties")
            if isinstance(extra, Mapping):
                return f"object of {self.type_label(extra, depth + 1)}"
        fmt = schema.get("format")
        return _text(f"{kind} ({fmt})" if isinstance(fmt, str) else kind)

    def schema_detail(self, schema: Any) -> str:
        """An object's properties as a table, then the whole schema as JSON."""
        if not isinstance(schema, Mapping):
            return ""
        target = self._resolve(schema) if "$ref" in schema else schema
        parts = [self._properties(target)]
        parts.append(f"<details><summary>JSON Schema</summary><pre>{_json(schema)}</pre></details>")
        return "".join(parts)

    def _properties(self, schema: Mapping[str, Any]) -> str:
        properties = _dict(schema.get("properties"))
        if not properties:
            return ""
        required = schema.get("required")
        needed = set(required) if isinstance(required, list) else set()
        rows = []
        for name, prop in properties.items():
            prop_map = _dict(prop)
            default = (
                f"<code>{_text(json.dumps(prop_map['default'], default=str))}</code>"
                if "default" in prop_map
                else ""
            )
            rows.append(
                f"<tr><td><code>{_text(name)}</code></td><td>{self.type_label(prop)}</td>"
                f"<td>{'required' if name in needed else ''}</td><td>{default}</td>"
                f"<td>{_paragraphs(prop_map.get('description'))}</td></tr>"
            )
        return (
            "<table><thead><tr><th>property</th><th>type</th><th></th><th>default</th>"
            f"<th>description</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def _schemas(self) -> str:
        schemas = _dict(self.components.get("schemas"))
        if not schemas:
            return ""
        parts = ['<section class="schemas" id="schemas"><h2>Schemas</h2>']
        for name, schema in schemas.items():
            parts.append(
                f'<article class="schema" id="{self.schema_ids[name]}"><h3>{_text(name)}</h3>'
                f"<p>{self.type_label(schema)}</p>"
                f"{_paragraphs(_dict(schema).get('description'))}{self.schema_detail(schema)}"
                "</article>"
            )
        parts.append("</section>\n")
        return "".join(parts)

    def _security_schemes(self) -> str:
        schemes = _dict(self.components.get("securitySchemes"))
        if not schemes:
            return ""
        rows = []
        for name, raw in schemes.items():
            scheme = _dict(raw)
            how = " ".join(
                str(scheme[key]) for key in ("type", "scheme", "in", "name") if key in scheme
            )
            rows.append(
                f"<tr><td><code>{_text(name)}</code></td><td>{_text(how)}</td>"
                f"<td>{_paragraphs(scheme.get('description'))}</td></tr>"
            )
        return (
            '<section class="auth"><h2>Authentication</h2><table><thead><tr><th>scheme</th>'
            f"<th>how</th><th>description</th></tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table></section>\n"
        )
