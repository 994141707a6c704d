"""The Ollama API's model routes: /api/version, /api/tags, /api/ps, /api/show, /api/pull;
/api/copy, /api/delete and /api/create are in `ollama_create`."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from llmedge import (
    DownloadError,
    InvalidRequestError,
    LlmedgeError,
    Manifest,
    ModelRef,
    __version__,
    pull_or_update,
)
from server.ollama_create import router as create_router
from server.ollama_schemas import ModelRequest, PullRequest
from server.state import server_state

log = logging.getLogger("llmedge.server")

if TYPE_CHECKING:
    from llmedge import Engine

router = APIRouter()
router.include_router(create_router)
NDJSON = "application/x-ndjson"
# Pull targets a remote client may name: model cards and Hugging Face repos, never local paths.
_REMOTE_PREFIXES = ("hf.co/", "huggingface.co/")


def parameter_size(parameters: int) -> str:
    """Ollama's short form of a parameter count: 135M, 1.2B."""
    if parameters >= 1e9:
        return f"{parameters / 1e9:.1f}B"
    return f"{parameters / 1e6:.0f}M"


def details(manifest: Manifest) -> dict[str, Any]:
    facts = manifest.facts
    family = facts.architecture if facts else "unknown"
    return {
        "parent_model": "",
        "format": manifest.format,
        "family": family,
        "families": [family],
        "parameter_size": parameter_size(facts.parameters) if facts else "",
        "quantization_level": facts.quantization.upper() if facts else "",
    }


def model_entry(manifest: Manifest) -> dict[str, Any]:
    return {
        "name": manifest.ref,
        "model": manifest.ref,
        "modified_at": manifest.created_at,
        "size": manifest.size_bytes,
        "digest": manifest.sha256,
        "details": details(manifest),
    }


@router.api_route("/version", methods=["GET", "HEAD"])
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.api_route("/tags", methods=["GET", "HEAD"])
async def tags(request: Request) -> dict[str, Any]:
    manifests = await run_in_threadpool(server_state(request).engine.store.manifests)
    return {"models": [model_entry(m) for m in manifests]}


FOREVER = datetime(2318, 1, 1, tzinfo=UTC)


@router.get("/ps")
async def running(request: Request) -> dict[str, Any]:
    models = []
    for entry in server_state(request).engine.loaded():
        left_s = entry.expires_in_s()
        # Ollama's far-future date for a model kept until evicted.
        expires = datetime.now(UTC) + timedelta(seconds=left_s) if left_s is not None else FOREVER
        models.append(
            {
                **model_entry(entry.manifest),
                "size_vram": 0,
                "context_length": entry.model.ctx_tokens,
                "parallel": entry.model.parallel,
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
            }
        )
    return {"models": models}


def _model_info(manifest: Manifest) -> dict[str, Any]:
    facts = manifest.facts
    if facts is None:
        return {}
    arch = facts.architecture
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.name": facts.name,
        "general.parameter_count": facts.parameters,
        f"{arch}.context_length": facts.ctx_train_tokens,
        f"{arch}.block_count": facts.n_layers,
        f"{arch}.embedding_length": facts.n_embd,
        f"{arch}.attention.head_count": facts.n_heads,
        f"{arch}.attention.head_count_kv": facts.n_kv_heads,
        f"{arch}.vocab_size": facts.vocab_size,
    }
    return {key: value for key, value in info.items() if value is not None}


def runtime_info(engine: Engine, manifest: Manifest) -> dict[str, Any]:
    """How the server runs this model: its KV cache types and flash attention (the settings
    every load takes), and whether it is loaded now."""
    kv_k, kv_v = engine.settings.kv_types
    loaded = any(entry.manifest.digest == manifest.digest for entry in engine.loaded())
    return {
        "llmedge.kv_cache_type_k": kv_k,
        "llmedge.kv_cache_type_v": kv_v,
        "llmedge.flash_attention": engine.settings.flash_attn,
        "llmedge.loaded": loaded,
    }


@router.post("/show")
async def show(body: ModelRequest, request: Request) -> dict[str, Any]:
    engine = server_state(request).engine
    manifest = await run_in_threadpool(engine.resolve, body.model)
    template = manifest.facts.chat_template if manifest.facts else None
    defaults = manifest.defaults
    return {
        "modelfile": modelfile(manifest),
        "parameters": parameter_lines(manifest),
        "system": defaults.system or "" if defaults else "",
        "template": template or "",
        "details": details(manifest),
        "model_info": {**_model_info(manifest), **runtime_info(engine, manifest)},
        # Every chat model gets tools: llmedge describes them itself when the template cannot.
        "capabilities": ["completion", "tools"],
        "modified_at": manifest.created_at,
    }


def parameter_lines(manifest: Manifest) -> str:
    """A created model's parameters as Ollama shows them: one `name value` a line."""
    if manifest.defaults is None:
        return ""
    lines = []
    for name, value in manifest.defaults.parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name} {json.dumps(item) if isinstance(item, str) else item}")
    return "\n".join(lines)


def modelfile(manifest: Manifest) -> str:
    """The Modelfile that makes this model again (FROM the model it was made from, if any)."""
    base = manifest.source.get("from") if manifest.source.get("kind") == "create" else None
    lines = ["# served by llmedge", f"FROM {base or manifest.ref}"]
    defaults = manifest.defaults
    if defaults is not None and defaults.template:
        lines.append(f'TEMPLATE """{defaults.template}"""')
    if defaults is not None and defaults.system:
        lines.append(f'SYSTEM """{defaults.system}"""')
    lines += [f"PARAMETER {line}" for line in parameter_lines(manifest).splitlines()]
    return "\n".join(lines) + "\n"


def pull_target(name: str) -> str:
    """A pull target from a remote client: a model name, never a path on the server's disk."""
    text = name.strip()
    lowered = text.lower()
    remote = lowered.startswith(_REMOTE_PREFIXES)
    if lowered.endswith(".gguf") or (not remote and "/" in text) or text.startswith(("~", ".")):
        raise InvalidRequestError(
            f"{name!r} is not a model name; pull a model card name (e.g. smollm2-135m) "
            "or hf.co/OWNER/REPO[:QUANT]",
            param="model",
        )
    if not remote:
        ModelRef.parse(text)
    return text


class _Progress:
    """A pull reporter that turns progress into Ollama's status objects, from the pull's thread."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any] | None]
    ) -> None:
        self._loop, self._queue = loop, queue
        self._label, self._total, self._done, self._sent_at = "", 0, 0, 0.0

    def close(self) -> None:
        """No more progress: the reader may stop."""
        self._put(None)

    def _put(self, item: dict[str, Any] | None) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def begin(self, label: str, total: int | None, done: int = 0, unit: str = "bytes") -> None:
        self._label, self._total, self._done = label, total or 0, done
        self._status()

    def advance(self, n: int) -> None:
        self._done += n
        if time.monotonic() - self._sent_at > 0.25:
            self._status()

    def end(self) -> None:
        self._status()

    def note(self, text: str) -> None:
        self._put({"status": text})

    def _status(self) -> None:
        self._sent_at = time.monotonic()
        status = {"status": f"pulling {self._label}", "digest": self._label}
        self._put({**status, "total": self._total, "completed": self._done})


@router.post("/pull")
async def pull_model(body: PullRequest, request: Request) -> Any:
    state = server_state(request)
    target = pull_target(body.model)
    if body.insecure:
        raise InvalidRequestError(
            "insecure: llmedge pulls over HTTPS only; omit it", param="insecure"
        )
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    reporter = _Progress(loop, queue)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            reporter.note("pulling manifest")
            outcome["manifest"] = pull_or_update(state.engine.store, target, reporter=reporter)
        except LlmedgeError as exc:
            outcome["error"] = exc
        except Exception as exc:  # never a "success" for a pull that failed
            log.exception("pull of %s failed", target)
            outcome["error"] = DownloadError(
                f"the pull of {target} failed ({type(exc).__name__}: {exc}); nothing changed "
                "in the store; the server's log has the details"
            )
        finally:
            reporter.close()

    threading.Thread(target=work, name="llmedge-pull", daemon=True).start()

    async def lines() -> AsyncIterator[str]:
        while (item := await queue.get()) is not None:
            yield json.dumps(item) + "\n"
        if "error" in outcome:
            yield json.dumps({"error": str(outcome["error"])}) + "\n"
        else:
            yield json.dumps({"status": "success"}) + "\n"

    if body.stream:
        return StreamingResponse(lines(), media_type=NDJSON)
    async for _ in lines():
        pass
    if "error" in outcome:
        raise outcome["error"]
    return JSONResponse({"status": "success"})
