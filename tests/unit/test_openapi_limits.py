"""Every field a client sends has a size limit: a walk over the hub's OpenAPI document asserts
that each string in a request body has a maxLength (or is an enum), each array a maxItems and
each map a maxProperties, so that a new unbounded field fails here (docs/security.md, "Limits")."""

from __future__ import annotations

from typing import Any

from cpnet.api.app import create_app
from cpnet.config import HubSettings


def _unbounded(doc: dict[str, Any]) -> set[str]:
    schemas = doc["components"]["schemas"]
    found: set[str] = set()

    def walk(s: dict[str, Any], where: str, seen: frozenset[str]) -> None:
        if "$ref" in s:
            name = s["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(schemas[name], name, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in s.get(key, []):
                walk(sub, where, seen)
        kind = s.get("type")
        bounded = {"maxLength", "enum", "const"} & s.keys()
        if kind == "string" and not bounded and s.get("format") not in ("date-time", "binary"):
            found.add(where)
        if kind == "array":
            if "maxItems" not in s:
                found.add(f"{where}[]")
            walk(s.get("items", {}), f"{where}[]", seen)
        for name, sub in s.get("properties", {}).items():
            walk(sub, f"{where}.{name}", seen)
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in s:
                found.add(f"{where}{{}}")
            walk(extra, f"{where}{{}}", seen)
            names = s.get("propertyNames")
            if isinstance(names, dict):
                walk(names, f"{where}{{key}}", seen)

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for media in op.get("requestBody", {}).get("content", {}).values():
                walk(media.get("schema", {}), f"{method.upper()} {path}", frozenset())
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                text = param.get("in") == "query" and schema.get("type") == "string"
                if text and not ({"maxLength", "enum"} & schema.keys()):
                    found.add(f"{method.upper()} {path}?{param['name']}")
    return found


def test_every_request_field_has_a_size_limit() -> None:
    doc = create_app(HubSettings()).openapi()
    assert doc["paths"]  # the walk saw the routes
    unbounded = _unbounded(doc)
    assert not unbounded, "fields without maxLength/maxItems/maxProperties:\n" + "\n".join(
        sorted(unbounded)
    )


def test_the_walk_catches_an_unbounded_field() -> None:
    doc = {
        "components": {"schemas": {"M": {"properties": {"x": {"type": "string"}}}}},
        "paths": {
            "/p": {
                "post": {
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/c/M"}}}}
                }
            }
        },
    }
    assert _unbounded(doc) == {"M.x"}


def test_the_new_limits_refuse_naming_the_field() -> None:
    import pytest
    from pydantic import ValidationError

    from cpnet.tasks.model import MAX_TAGS, TaskSpec

    base = {"executors": [{"command": ["true"]}]}
    TaskSpec.model_validate({**base, "tags": {f"k{i}": "v" for i in range(MAX_TAGS)}})
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate({**base, "tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}})
    assert info.value.errors()[0]["loc"] == ("tags",)
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(
            {"executors": [{"command": ["true"], "env": {f"V{i}": "1" for i in range(257)}}]}
        )
    assert info.value.errors()[0]["loc"][-1] == "env"
