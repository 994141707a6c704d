"""The FastAPI application: OpenAI-compatible routes over one llmedge Engine."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from llmedge import Engine, Settings, __version__
from server.errors import install_error_handlers
from server.openai_routes import router as openai_router
from server.schemas import error_body

# Routes reachable without the API key.
PUBLIC_PATHS = frozenset({"/health"})


def create_app(engine: Engine) -> FastAPI:
    """The server for `engine`; the engine's settings decide auth and limits."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="llmedge", version=__version__, lifespan=lifespan)
    app.state.engine = engine
    install_error_handlers(app)
    _install_auth(app, engine.settings)
    app.include_router(openai_router)

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {"status": "ok", "models_loaded": [e.manifest.ref for e in engine.loaded()]}

    return app


def _install_auth(app: FastAPI, settings: Settings) -> None:
    if settings.api_key is None:
        return
    expected = f"Bearer {settings.api_key.get_secret_value()}"

    @app.middleware("http")
    async def require_key(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("authorization", "")
        if request.url.path in PUBLIC_PATHS or secrets.compare_digest(given, expected):
            return await call_next(request)
        body = error_body(
            "invalid or missing API key", "authentication_error", None, "invalid_api_key"
        )
        return JSONResponse(body, status_code=401)
