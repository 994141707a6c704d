"""Extract the response and stream-event schemas from OpenAI's published OpenAPI spec into
tests/data/openai_schemas.json, which the conformance tests validate the server's answers against.

Usage: python scripts/vendor_openai_schemas.py PATH/TO/openapi.json
The spec (MIT licence) is at github.com/openai/openai-openapi; descriptions and examples are
dropped to keep the file small, every $ref the roots reach is kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "Response",
    "ResponseStreamEvent",
)
DROPPED = {"description", "example", "examples", "title", "x-oaiMeta", "x-oaiTypeLabel"}
TARGET = Path(__file__).resolve().parent.parent / "tests" / "data" / "openai_schemas.json"


def _slim(node: Any, in_properties: bool = False) -> Any:
    """The schema without prose (property names, which may be "description", are kept), and
    OpenAPI 3.0's `nullable` spelled as JSON Schema does, so a validator reads it."""
    if isinstance(node, dict):
        slim = {
            key: _slim(value, key == "properties" and not in_properties)
            for key, value in node.items()
            if in_properties or key not in DROPPED
        }
        if not in_properties and slim.pop("nullable", False) is True:
            return {"anyOf": [slim, {"type": "null"}]}
        return slim
    if isinstance(node, list):
        return [_slim(item) for item in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    schemas = spec["components"]["schemas"]
    kept: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in kept:
            kept[name] = _slim(schemas[name])
            todo.extend(_refs(schemas[name]))
    document = {
        "source": f"openai-openapi {spec['info']['version']} (MIT licence)",
        "components": {"schemas": dict(sorted(kept.items()))},
    }
    TARGET.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{len(kept)} schemas, {TARGET.stat().st_size} bytes -> {TARGET}")


if __name__ == "__main__":
    main(sys.argv[1])
