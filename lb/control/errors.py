"""Errors of the control API: every refusal is ``{"error": {status, field, message}}``."""

from __future__ import annotations

from pydantic import ValidationError

from lb.config import loc_to_path


class ApiError(Exception):
    """A refused call. ``field`` names what was wrong (a body field, "pool", "body", ...)."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


class ControlStartupError(Exception):
    """The control socket or the admin listener cannot be set up."""


def from_validation(exc: ValidationError, where: str, allowed: list[str]) -> ApiError:
    """The first problem of a pydantic error as a 422 that names the field."""
    err = exc.errors()[0]
    field = loc_to_path(tuple(err["loc"])) or where
    kind = err["type"]
    if kind == "extra_forbidden":
        known = ", ".join(allowed) or "none"
        return ApiError(422, field, f"unknown {_noun(where)} {field!r}; allowed: {known}")
    if kind == "missing":
        return ApiError(422, field, f"required {_noun(where)} is missing")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return ApiError(422, where, "expected a JSON object")
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, dict | list):
        return ApiError(422, field, msg)
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ApiError(422, field, f"{shown} is invalid: {msg}")


def _noun(where: str) -> str:
    return "query parameter" if where == "query" else "field"
