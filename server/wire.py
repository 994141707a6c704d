"""The base of every request body the server reads, and the field policy it carries.

Each documented field of a request is one of three kinds (docs/field-policy.md lists them all):
- honoured: a field of the model that changes what llmedge does;
- advisory: a field of the model with no local meaning (`advisory()`), accepted and echoed
  where the API echoes it;
- refused: named in the model's `refused` map with what to do instead, answered with a 400.

`null` always means unset: keys whose value is null are dropped before validation, so the
field takes its default (and a refused field sent as null is no error).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

ADVISORY = "advisory"
# The seeds the APIs send: signed or unsigned 64-bit integers.
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 64) - 1
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX)]


def advisory(description: str, default: Any = None) -> Any:
    """A field accepted for compatibility that changes nothing here."""
    return Field(default, description=description, json_schema_extra={"x-llmedge": ADVISORY})


def is_advisory(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get("x-llmedge") == ADVISORY


def field_error(field: str, reason: str) -> PydanticCustomError:
    """A validation error about `field` of the model being validated (the 400 names it)."""
    return PydanticCustomError("field_error", "{reason}", {"field": field, "reason": reason})


class WireModel(BaseModel):
    """A request body (or a part of one): unknown fields are refused, null means unset."""

    model_config = ConfigDict(extra="forbid")
    # Documented fields llmedge cannot honour, each with what to do instead.
    refused: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, instead in cls.refused.items():
            if data.get(name) is not None:
                raise field_error(name, instead)
        return {key: value for key, value in data.items() if value is not None}


class LenientModel(WireModel):
    """A part of a request whose unknown fields are ignored, as vLLM and Ollama do for
    messages (clients add their own bookkeeping to them)."""

    model_config = ConfigDict(extra="ignore")


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_type(http_status: int) -> str:
    """The `error.type` Anthropic's API gives an error of this status."""
    if http_status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[http_status]
    return "invalid_request_error" if 400 <= http_status < 500 else "api_error"


def shape_error(path: str, body: dict[str, Any], http_status: int) -> dict[str, Any]:
    """An OpenAI error body in the shape the API at `path` answers with: Ollama's
    `{"error": "..."}` under /api/, Anthropic's typed error under /v1/messages."""
    message = body["error"]["message"]
    if path.startswith("/api/"):
        return {"error": message}
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        error = {"type": anthropic_error_type(http_status), "message": message}
        return {"type": "error", "error": error}
    return body
