"""The OpenAPI spec is valid and says what the code enforces: numeric bounds as numbers, nullable fields, the
problems each operation can answer with, and the rules checked in code (tests/test_api_fuzz.py holds the API to
it)."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems")
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").get_json()


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _operations(spec: dict[str, Any]):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_the_spec_is_valid_openapi(spec):
    validate(spec)  # raises on the first error
    assert spec["openapi"] == "3.0.3"


def test_numeric_bounds_are_numbers(spec):
    bounds = [(key, node[key]) for node in _walk(spec) for key in BOUNDS if key in node and "type" in node]
    assert len(bounds) > 100
    assert [b for b in bounds if type(b[1]) not in (int, float)] == []
    settings = spec["components"]["schemas"]["ProjectCreate"]["properties"]
    assert (settings["min_gold_accuracy"]["minimum"], settings["min_gold_accuracy"]["maximum"]) == (0, 1)
    assert settings["action_confidence"]["maximum"] == 0.999  # a Decimal range: it was the string "0.999"


def test_fields_that_may_be_null_say_so(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["Project"]["properties"]["qualification_requirements"]["nullable"] is True
    assert schemas["Batch"]["properties"]["qualification_requirements"]["nullable"] is True
    assert schemas["WorkerQuality"]["properties"]["accuracy"]["nullable"] is True
    assert "nullable" not in schemas["WorkerQuality"]["properties"]["worker_id"]


def test_every_operation_documents_its_problems(spec):
    responses = spec["components"]["responses"]
    for name in ("BAD_REQUEST", "NOT_FOUND", "UNPROCESSABLE_ENTITY", "DEFAULT_ERROR"):
        assert responses[name]["content"] == {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}
    assert spec["components"]["schemas"]["Problem"]["required"] == ["status", "title"]
    for path, method, op in _operations(spec):
        label, documented = f"{method.upper()} {path}", op["responses"]
        errors = {code for code in documented if code[0] in "45"}
        assert documented["default"] == {"$ref": "#/components/responses/DEFAULT_ERROR"}, label
        assert all(documented[code]["$ref"].startswith("#/components/responses/") for code in errors), label
        if op.get("security") != []:
            assert "401" in errors, label
        if "{" in path:
            assert "404" in errors, label
        if "application/json" in op.get("requestBody", {}).get("content", {}):
            assert {"400", "413", "415", "422"} <= errors, label
    ops = {(m, p): op for p, m, op in _operations(spec)}
    assert {"409", "410"} <= set(ops["post", "/api/v1/assignments/{assignment_id}/submit"]["responses"])
    assert {"401", "429"} <= set(ops["post", "/api/v1/auth/token"]["responses"])
    assert "403" not in ops["get", "/api/v1/me"]["responses"]  # any account
    assert {"409", "411"} <= set(ops["post", "/api/v1/projects/{project_id}/batches"]["responses"])  # the key
    export = ops["get", "/api/v1/projects/{project_id}/answers/export"]["responses"]["200"]
    assert set(export["content"]) == {"text/csv", "application/x-ndjson"}  # downloads say what they stream
    flags = ops["get", "/api/v1/ops/flags"]
    assert "403" in flags["responses"] and flags["description"].endswith("For ops accounts.")


def test_rules_checked_in_code_are_in_the_spec(spec):
    schemas = spec["components"]["schemas"]
    register = schemas["Register"]["properties"]
    assert register["password"]["minLength"] == 10
    assert register["username"]["pattern"] == "^(?:[A-Za-z0-9][A-Za-z0-9_.-]{2,63})$"
    assert schemas["ProjectCreate"]["properties"]["currency"]["pattern"] == "^(?:[A-Z]{3})$"
    assert schemas["ProjectCreate"]["properties"]["gold_rate"]["anyOf"] == [
        {"enum": [0]}, {"minimum": 0.05, "maximum": 0.1}]
    assert schemas["BatchCreate"]["not"] == {"required": ["item_ids", "external_ids"]}
    assert schemas["PriorityEntry"]["oneOf"] == [{"required": ["item_id"]}, {"required": ["external_id"]}]
    rating = next(v for v in schemas["LabelSchema"]["oneOf"] if v["properties"]["type"]["enum"] == ["rating"])
    assert rating["required"] == ["type", "min", "max"]
    assert {"required": ["categories"]} in rating["not"]["anyOf"]
