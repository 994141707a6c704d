"""The Ollama API's routes that make and remove names: /api/copy, /api/delete, /api/create.

A copy or a created model is a new manifest over the same blobs; a created one carries the
defaults (system prompt, parameters, Jinja chat template) that every request to it gets unless
it says otherwise. Nothing is downloaded or uploaded here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from llmedge import InvalidRequestError, Manifest, ModelRef
from llmedge.prompting import model_defaults, parse_modelfile
from server.ollama_schemas import CopyRequest, CreateRequest, DeleteRequest
from server.state import server_state

router = APIRouter()
NDJSON = "application/x-ndjson"


@router.post("/copy")
async def copy(body: CopyRequest, request: Request) -> dict[str, str]:
    store = server_state(request).engine.store
    source, target = ModelRef.parse(body.source), ModelRef.parse(body.destination)
    await run_in_threadpool(store.copy, source, target)
    return {"status": "success"}


@router.delete("/delete")
async def delete(body: DeleteRequest, request: Request) -> dict[str, str]:
    engine = server_state(request).engine
    ref = ModelRef.parse(body.target)

    def work() -> None:
        found = engine.store.resolve(ref)  # a 404 before anything is unloaded
        if any(e.manifest.digest == found.digest for e in engine.loaded()):
            engine.unload(found.ref)  # once the answers it is giving end
        engine.store.remove(ref)

    await run_in_threadpool(work)
    return {"status": "success"}


def _spec(body: CreateRequest) -> tuple[str, ModelRef, Any]:
    """What to create: from which model, under which name, with which defaults."""
    name = body.model or body.name
    if not name:
        raise InvalidRequestError("model: name the model to create", param="model")
    base, defaults = body.from_, None
    if body.modelfile:
        spec = parse_modelfile(body.modelfile)
        base, defaults = base or spec.base, spec.defaults
    if base is None:
        raise InvalidRequestError(
            "from: name the stored model to create it from (llmedge creates models from "
            "models in its store)",
            param="from",
        )
    given = model_defaults(body.system, body.template, body.parameters)
    return base, ModelRef.parse(name), defaults.merged(given) if defaults else given


@router.post("/create")
async def create(body: CreateRequest, request: Request) -> Any:
    store = server_state(request).engine.store
    base, target, defaults = _spec(body)
    made: Manifest = await run_in_threadpool(store.copy, ModelRef.parse(base), target, defaults)
    statuses = [
        *({"status": f"using existing layer {p.digest}"} for p in made.blobs),
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    if not body.stream:
        return JSONResponse({"status": "success"})

    async def lines() -> AsyncIterator[str]:
        for status in statuses:
            yield json.dumps(status) + "\n"

    return StreamingResponse(lines(), media_type=NDJSON)
