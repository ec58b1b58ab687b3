"""/docs: the API documented on one self-contained HTML page, written from the OpenAPI schema.

FastAPI's Swagger UI loads its JavaScript and CSS from a CDN, so without internet /docs is a
blank page. This page needs nothing but the server: every route, its fields with their types,
limits and defaults, and its answers, all read from the same schema as /openapi.json.
"""

from __future__ import annotations

from html import escape

LIMITS = [("minimum", ">= {}"), ("exclusiveMinimum", "> {}"), ("maximum", "<= {}"), ("exclusiveMaximum", "< {}"),
          ("minLength", "length >= {}"), ("maxLength", "length <= {}"), ("minItems", ">= {} items"),
          ("maxItems", "<= {} items"), ("pattern", "matches {}")]
STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#1f2430}
h1{color:#7a2e3a;font-family:Georgia,serif;font-weight:normal}h2{margin-top:2.2rem;font-size:1.1rem}
code,.path{font-family:ui-monospace,monospace}.method{display:inline-block;min-width:3.5rem;font-weight:700;
color:#fff;background:#7a2e3a;border-radius:4px;padding:0 .4rem;text-align:center}.get{background:#2f6f4f}
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border:1px solid #e3e0d8;padding:.3rem .5rem;
text-align:left;vertical-align:top;font-size:.92rem}th{background:#faf8f3}.muted{color:#6b7280}"""


def _resolve(schema: dict, spec: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        node = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node.get(part, {})
        schema = node
    return schema or {}


def _type(schema: dict, spec: dict) -> str:
    schema = _resolve(schema, spec)
    if "anyOf" in schema:
        return " or ".join(_type(s, spec) for s in schema["anyOf"])
    t = schema.get("type", "any")
    if t == "array":
        items = schema.get("items") or schema.get("prefixItems")
        if isinstance(items, list):
            return "[" + ", ".join(_type(s, spec) for s in items) + "]"
        return f"array of {_type(items or {}, spec)}"
    if schema.get("format") == "binary":
        return "file"
    return t


def _limits(schema: dict, spec: dict) -> str:
    schema = _resolve(schema, spec)
    found = [fmt.format(schema[k]) for k, fmt in LIMITS if k in schema]
    for sub in schema.get("anyOf", []):
        found += [fmt.format(v) for k, fmt in LIMITS if (v := _resolve(sub, spec).get(k)) is not None]
    return ", ".join(found)


def _fields(schema: dict, spec: dict) -> str:
    schema = _resolve(schema, spec)
    props = schema.get("properties", {})
    if not props:
        return f"<p><code>{escape(_type(schema, spec))}</code></p>"
    required = set(schema.get("required", []))
    rows = ["<tr><th>field</th><th>type</th><th>limits</th><th>default</th><th>description</th></tr>"]
    for name, sub in props.items():
        default = "required" if name in required else escape(repr(sub.get("default")) if "default" in sub else "")
        rows.append(f"<tr><td><code>{escape(name)}</code></td><td>{escape(_type(sub, spec))}</td>"
                    f"<td>{escape(_limits(sub, spec))}</td><td>{default}</td>"
                    f"<td>{escape(_resolve(sub, spec).get('description', '') or sub.get('description', ''))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def api_page(spec: dict) -> str:
    info = spec.get("info", {})
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(info.get('title', 'API'))}"
           f" API</title><style>{STYLE}</style></head><body>",
           f"<h1>{escape(info.get('title', 'API'))} <span class='muted'>{escape(str(info.get('version', '')))}</span></h1>",
           f"<p>{escape(info.get('description', ''))}</p>",
           "<p class='muted'>Written by the server from <a href='/openapi.json'>/openapi.json</a>; "
           "works without internet. Errors answer <code>{\"detail\": \"one line\"}</code>.</p>"]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            out.append(f"<h2><span class='method {escape(method)}'>{escape(method.upper())}</span> "
                       f"<span class='path'>{escape(path)}</span> {escape(op.get('summary', ''))}</h2>")
            if op.get("description"):
                out.append(f"<p>{escape(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>type</th></tr>" + "".join(
                    f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
                    f"<td>{escape(_type(p.get('schema', {}), spec))}</td></tr>" for p in params) + "</table>")
            for media, body in op.get("requestBody", {}).get("content", {}).items():
                out.append(f"<p>Body: <code>{escape(media)}</code></p>" + _fields(body.get("schema", {}), spec))
            codes = ", ".join(f"<code>{escape(code)}</code> {escape(r.get('description', ''))}"
                              for code, r in op.get("responses", {}).items())
            out.append(f"<p class='muted'>Answers: {codes}</p>")
    out.append("</body></html>")
    return "\n".join(out)
