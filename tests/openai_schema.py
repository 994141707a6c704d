"""OpenAI's published schemas (tests/data/openai_schemas.json, vendored from the OpenAPI spec by
scripts/vendor_openai_schemas.py) as validators for what the server answers."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

_SPEC = Path(__file__).parent / "data" / "openai_schemas.json"


@cache
def _validator(name: str) -> Any:
    components = json.loads(_SPEC.read_text())["components"]
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": components}
    )


def schema_errors(name: str, instance: Any) -> list[str]:
    """What in `instance` breaks OpenAI's schema `name` (empty: it is valid)."""
    return [
        f"{'/'.join(map(str, error.instance_path))}: {error.message}"[:300]
        for error in _validator(name).iter_errors(instance)
    ]
