"""The OpenAPI 3.1 description of the control API, generated from the route table and the
pydantic models that the server validates with (``lb/control/api.py``)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

import lb
from lb.control.api import ROUTES, NoBody, NoQuery, Route
from lb.control.models import ID_PATTERN, ErrorResponse

_PARAM = re.compile(r"\{(\w+)\}")

_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "pool": {
        "description": "pool name (from config.toml)",
        "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    },
    "backend": {
        "description": "backend id, or its address",
        "schema": {"type": "string", "pattern": ID_PATTERN},
    },
}


def _errors_of(r: Route, auth: bool) -> dict[int, str]:
    """The refusals every route of its kind can answer (the server's, not the operation's)."""
    bad = ["a query parameter is given more than once (`field`: the parameter)"]
    errors: dict[int, str] = {}
    if r.body is not None:
        bad.insert(0, "the body is not JSON, or an object in it repeats a key (`field`: the key)")
        errors[415] = (
            "the body is not sent as `Content-Type: application/json` (charset utf-8 if "
            "any); `field`: `Content-Type`"
        )
    errors[400] = "; or ".join(bad)
    if r.query is not NoQuery:
        errors[422] = "invalid query parameter"
    if auth and r.write:
        errors[401] = "missing or wrong bearer token"
        errors[403] = "writes are disabled (no token_file)"
    return errors


def build(routes: tuple[Route, ...] = ROUTES, *, auth: bool = False) -> dict[str, Any]:
    """``auth``: describe the bearer token that write calls need (the admin TCP listener)."""
    entries: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for r in routes:
        if r.body is not None and r.body is not NoBody:
            entries.append((r.body, "validation"))
        entries += [(m, "serialization") for m, _ in r.responses.values()]
    entries = list(dict.fromkeys(entries))
    refs, top = models_json_schema(entries, ref_template="#/components/schemas/{model}")
    error_ref = refs[(ErrorResponse, "serialization")]

    def content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, **_PATH_PARAMS[name]}
            for name in _PARAM.findall(r.path)
        ]
        if r.query is not NoQuery:
            qs = r.query.model_json_schema()
            required = set(qs.get("required", []))
            for name, prop in qs.get("properties", {}).items():
                schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
                params.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "description": prop.get("description", ""),
                        "schema": schema,
                    }
                )
        responses: dict[str, Any] = {
            str(status): {"description": desc, "content": content(refs[(model, "serialization")])}
            for status, (model, desc) in sorted(r.responses.items())
        }
        errors = {**_errors_of(r, auth), **r.errors}
        for status, desc in sorted(errors.items()):
            responses[str(status)] = {"description": desc, "content": content(error_ref)}
        responses["default"] = {
            "description": "any other refusal (unknown path or field, method not allowed, ...)",
            "content": content(error_ref),
        }
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": [r.tag],
            "parameters": params,
            "responses": responses,
        }
        if r.body is NoBody:
            op["requestBody"] = {
                "required": False,
                "description": "empty, or {}",
                "content": content({"type": "object", "additionalProperties": False}),
            }
        elif r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": content(refs[(r.body, "validation")]),
            }
        if auth and r.write:
            op["security"] = [{"bearer": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op

    paths["/v1/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This description",
            "tags": ["lb"],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document",
                    "content": content({"type": "object"}),
                }
            },
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "lb control API",
            "version": lb.__version__,
            "description": (
                "Runtime control of lb's pools and backends. Served on the unix socket "
                "`[lb] control_socket` (mode 0600) and, read-only unless a bearer token is "
                "given, on the optional admin listener `[admin] bind`. Errors are "
                '`{"error": {"status", "field", "message"}}`; a refused call changes nothing. '
                "Requests are strict: a body must be sent as `Content-Type: application/json` "
                "(415 otherwise), and a key repeated in a JSON object or a query parameter "
                "given twice is refused (400), never resolved by picking one."
            ),
        },
        "paths": paths,
        "components": {"schemas": top.get("$defs", {})},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "the token in [admin] token_file",
            }
        }
    return doc
