"""The FastAPI application: OpenAI- and Ollama-compatible routes over one llmedge Engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from llmedge import Engine, __version__
from server.anthropic_routes import router as anthropic_router
from server.errors import install_error_handlers
from server.json_bodies import JsonBodies
from server.limits import install_limits
from server.metrics import CONTENT_TYPE
from server.ollama_routes import router as ollama_router
from server.openai_routes import router as openai_router
from server.remote_proxy import install_remote_proxy
from server.responses_routes import router as responses_router
from server.state import ServerState, server_state


def create_app(engine: Engine) -> FastAPI:
    """The server for `engine`; the engine's settings decide auth and limits."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="llmedge", version=__version__, lifespan=lifespan)
    state = ServerState(engine)
    app.state.llmedge = state
    install_error_handlers(app)
    install_remote_proxy(app, engine)  # before the limits: the API key applies to it too
    install_limits(app, engine.settings, state.metrics)
    app.add_middleware(JsonBodies)  # outermost: every layer below reads the corrected header
    app.include_router(openai_router)
    app.include_router(responses_router)
    app.include_router(anthropic_router)
    app.include_router(ollama_router)

    @app.api_route("/", methods=["GET", "HEAD"], tags=["server"], response_class=PlainTextResponse)
    async def root() -> str:
        """What Ollama clients probe to see that a server is up."""
        return "llmedge is running"

    @app.get("/health", tags=["server"])
    async def health(request: Request) -> Any:
        """200 when the server can answer; 503 while a model is loading."""
        state = server_state(request)
        loaded = [e.manifest.ref for e in state.engine.loaded()]
        if state.engine.loading():
            return JSONResponse({"status": "loading", "models_loaded": loaded}, status_code=503)
        return {"status": "ok", "models_loaded": loaded}

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        """Prometheus metrics."""
        state = server_state(request)
        text = state.metrics.render(state.engine.loaded(), state.engine.loading())
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    return app
