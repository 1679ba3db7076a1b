"""`GET /docs`: the OpenAPI document as one self-contained HTML page (no scripts, no CDN: readable offline)."""

from __future__ import annotations

import json
from typing import Any

from flask import render_template_string

METHOD_ORDER = ("get", "post", "put", "patch", "delete")

PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ info.title }} API {{ info.version }}</title>
<style>
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; }
nav { position: fixed; top: 0; bottom: 0; left: 0; width: 17rem; overflow-y: auto; background: #f4f5f7;
      padding: 1rem; box-sizing: border-box; font-size: 13px; }
nav a { color: #1d2330; text-decoration: none; display: block; padding: 1px 0; }
nav h3 { margin: 1rem 0 .25rem; font-size: 12px; text-transform: uppercase; color: #5b6475; }
main { margin-left: 17rem; padding: 1rem 2rem 4rem; max-width: 62rem; }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f4f5f7; padding: .75rem; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border-bottom: 1px solid #e1e4e8; text-align: left; padding: 4px 8px; vertical-align: top; }
.operation { border: 1px solid #e1e4e8; border-radius: 6px; padding: .25rem 1rem 1rem; margin: 1rem 0; }
.method { display: inline-block; min-width: 4rem; font-weight: 700; text-transform: uppercase; }
.get { color: #0b6bcb; } .post { color: #1a7f37; } .patch { color: #9a6700; } .delete { color: #cf222e; }
.lock { font-size: 12px; color: #5b6475; }
details summary { cursor: pointer; color: #5b6475; }
</style>
</head>
<body>
<nav>
<strong>{{ info.title }} API {{ info.version }}</strong>
<a href="#overview">Overview</a><a href="#authentication">Authentication</a><a href="#errors">Errors</a>
{% for group in groups %}
<h3>{{ group.name }}</h3>
{% for op in group.operations %}<a href="#{{ op.anchor }}"><span class="method {{ op.method }}">{{ op.method }}</span>
{{ op.path }}</a>{% endfor %}
{% endfor %}
<h3>Machine-readable</h3><a href="/openapi.json">/openapi.json</a>
</nav>
<main>
<h1 id="overview">{{ info.title }} API <small>{{ info.version }}</small></h1>
{% for paragraph in description %}<p>{{ paragraph }}</p>{% endfor %}
<p>The same description as OpenAPI {{ openapi }}: <a href="/openapi.json"><code>/openapi.json</code></a>.</p>

<h2 id="authentication">Authentication</h2>
{% for name, scheme in security_schemes.items() %}
<p><code>{{ name }}</code>: HTTP <code>{{ scheme.scheme }}</code>{% if scheme.bearerFormat %} (format
<code>{{ scheme.bearerFormat }}</code>){% endif %}. Send <code>Authorization: Bearer &lt;key&gt;</code> on every
operation marked <span class="lock">&#128274; bearer</span>. Missing, unknown or revoked keys get 401 with
<code>WWW-Authenticate: Bearer</code>.</p>
{% endfor %}

<h2 id="errors">Errors</h2>
<p>Every error is <code>application/problem+json</code> (RFC 9457):</p>
<pre>{{ problem_example }}</pre>
<table><tr><th>Status</th><th>When</th></tr>
{% for status, description in problem_statuses %}<tr><td>{{ status }}</td><td>{{ description }}</td></tr>{% endfor %}
</table>

{% for group in groups %}
<h2 id="tag-{{ group.anchor }}">{{ group.name }}</h2>
{% if group.description %}<p>{{ group.description }}</p>{% endif %}
{% for op in group.operations %}
<section class="operation" id="{{ op.anchor }}">
<h3><span class="method {{ op.method }}">{{ op.method }}</span> <code>{{ op.path }}</code>
{% if op.secured %}<span class="lock">&#128274; bearer</span>{% endif %}</h3>
<p><strong>{{ op.summary }}</strong></p>
{% if op.description %}<p>{{ op.description }}</p>{% endif %}
{% if op.parameters %}
<h4>Parameters</h4>
<table><tr><th>Name</th><th>In</th><th>Type</th><th>Required</th><th>Description</th></tr>
{% for p in op.parameters %}<tr><td><code>{{ p.name }}</code></td><td>{{ p.in }}</td><td>{{ p.type }}</td>
<td>{{ "yes" if p.required else "no" }}</td><td>{{ p.description }}</td></tr>{% endfor %}
</table>
{% endif %}
{% for body in op.request_bodies %}
<h4>Request body <code>{{ body.media_type }}</code></h4>
{% if body.fields %}
<table><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th></tr>
{% for f in body.fields %}<tr><td><code>{{ f.name }}</code></td><td>{{ f.type }}</td>
<td>{{ "yes" if f.required else "no" }}</td><td>{{ f.description }}</td></tr>{% endfor %}
</table>
{% endif %}
{% if body.example %}<p>Example:</p><pre>{{ body.example }}</pre>{% endif %}
{% endfor %}
<h4>Responses</h4>
<table><tr><th>Status</th><th>Content</th><th>Description</th></tr>
{% for r in op.responses %}<tr><td>{{ r.status }}</td><td>{{ r.media_types }}</td><td>{{ r.description }}
{% if r.example %}<details><summary>example</summary><pre>{{ r.example }}</pre></details>{% endif %}</td></tr>
{% endfor %}
</table>
</section>
{% endfor %}
{% endfor %}
</main>
</body>
</html>
"""


def _resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow local `$ref`s (`#/components/...`)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type_of(document: dict[str, Any], schema: Any) -> str:
    if isinstance(schema, dict) and "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    schema = _resolve(document, schema) or {}
    if "oneOf" in schema:
        return " or ".join(_type_of(document, option) for option in schema["oneOf"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        kind = f"array of {_type_of(document, schema.get('items', {}))}"
    if schema.get("format"):
        kind += f" ({schema['format']})"
    if schema.get("enum"):
        kind += ": " + ", ".join(str(value) for value in schema["enum"] if value is not None)
    return kind


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("exclusiveMinimum", ">"),
        ("default", "default"),
    ):
        if key in schema and not isinstance(schema[key], bool):
            parts.append(f"{label} {schema[key]}")
    if schema.get("exclusiveMinimum") is True and "minimum" in schema:
        parts = [part.replace("≥", ">") for part in parts]
    return "; ".join(parts)


def _fields(document: dict[str, Any], schema: Any) -> list[dict[str, Any]]:
    schema = _resolve(document, schema) or {}
    required = set(schema.get("required", []))
    rows = []
    for name, field in schema.get("properties", {}).items():
        resolved = _resolve(document, field) or {}
        description = " ".join(part for part in (resolved.get("description", ""), _constraints(resolved)) if part)
        rows.append(
            {"name": name, "type": _type_of(document, field), "required": name in required, "description": description}
        )
    return rows


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def _operation_view(document: dict[str, Any], path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    parameters = []
    for parameter in operation.get("parameters", []):
        parameter = _resolve(document, parameter)
        schema = parameter.get("schema", {})
        parameters.append(
            {
                "name": parameter["name"],
                "in": parameter["in"],
                "type": _type_of(document, schema),
                "required": parameter.get("required", False),
                "description": " ".join(
                    part
                    for part in (parameter.get("description", ""), _constraints(_resolve(document, schema)))
                    if part
                ),
            }
        )
    request_bodies = []
    for media_type, content in _resolve(document, operation.get("requestBody", {})).get("content", {}).items():
        example = content.get("example")
        request_bodies.append(
            {
                "media_type": media_type,
                "fields": _fields(document, content.get("schema", {})),
                "example": _pretty(example) if example is not None else None,
            }
        )
    responses = []
    for status, response in sorted(operation.get("responses", {}).items()):
        response = _resolve(document, response)
        content = response.get("content", {})
        example = next((body["example"] for body in content.values() if "example" in body), None)
        responses.append(
            {
                "status": status,
                "media_types": ", ".join(content) or "—",
                "description": response.get("description", ""),
                "example": _pretty(example) if example is not None else None,
            }
        )
    return {
        "method": method,
        "path": path,
        "anchor": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "").replace(".", "-"),
        "summary": operation.get("summary", ""),
        "description": operation.get("description", ""),
        "secured": bool(operation.get("security")),
        "parameters": parameters,
        "request_bodies": request_bodies,
        "responses": responses,
    }


def render_docs_page(document: dict[str, Any]) -> str:
    """The page for `document`: overview, authentication, errors, then operations grouped by tag."""
    tag_descriptions = {tag["name"]: tag.get("description", "") for tag in document.get("tags", [])}
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in tag_descriptions}
    for path, operations in document.get("paths", {}).items():
        for method in METHOD_ORDER:
            if method in operations:
                operation = operations[method]
                tag = (operation.get("tags") or ["Other"])[0]
                groups.setdefault(tag, []).append(_operation_view(document, path, method, operation))
    responses = document.get("components", {}).get("responses", {})
    problem_statuses = [
        (name.removeprefix("Problem"), response.get("description", ""))
        for name, response in sorted(responses.items())
        if name.startswith("Problem")
    ]
    problem_schema = document.get("components", {}).get("schemas", {}).get("Problem", {})
    info = document["info"]
    return render_template_string(
        PAGE_TEMPLATE,
        info=info,
        openapi=document.get("openapi", ""),
        description=[paragraph.replace("\n", " ") for paragraph in info.get("description", "").split("\n\n")],
        security_schemes=document.get("components", {}).get("securitySchemes", {}),
        problem_example=_pretty(problem_schema.get("example", {})),
        problem_statuses=problem_statuses,
        groups=[
            {
                "name": name,
                "anchor": name.lower().replace(" ", "-"),
                "description": tag_descriptions.get(name, ""),
                "operations": operations,
            }
            for name, operations in groups.items()
            if operations
        ],
    )
