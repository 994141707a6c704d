"""The server's edges: /health while loading, CORS allow-list, body size, API key, model names.

A scripted backend stands in for the model; the app, uvicorn and HTTP are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_backend import ScriptedBackend, ScriptedModel
from scripted_server import serving

from llmedge import Engine, Settings, Store, pull
from llmedge.backends import LoadOptions

MODEL = "smollm2-135m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


class SlowLoadingBackend(ScriptedBackend):
    """Loads take a while, as a real multi-gigabyte model does."""

    def __init__(self, model: ScriptedModel, load_s: float) -> None:
        super().__init__(model)
        self.load_s = load_s

    def load(self, path: Path, options: LoadOptions) -> ScriptedModel:
        time.sleep(self.load_s)
        return super().load(path, options)


@pytest.fixture
def stored(store: Store, smollm2_gguf: Path) -> Store:
    pull(store, MODEL)
    return store


def _serve(settings: Settings, store: Store, backend: ScriptedBackend | None = None) -> Any:
    engine = Engine(
        settings, store, backend=backend or ScriptedBackend(ScriptedModel(ctx_tokens=4096))
    )
    return serving(engine)


def test_health_is_503_while_a_model_loads_then_200(settings: Settings, stored: Store) -> None:
    backend = SlowLoadingBackend(ScriptedModel(ctx_tokens=4096), load_s=1.5)
    with _serve(settings, stored, backend) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "models_loaded": []}
        answer: dict[str, Any] = {}
        asking = threading.Thread(
            target=lambda: answer.update(
                httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30).json()
            )
        )
        asking.start()
        statuses = set()
        while asking.is_alive():
            response = httpx.get(f"{url}/health")
            statuses.add((response.status_code, response.json()["status"]))
            time.sleep(0.05)
        assert (503, "loading") in statuses
        assert answer["choices"][0]["message"]["content"] == "ok"
        assert httpx.get(f"{url}/health").json() == {
            "status": "ok",
            "models_loaded": ["smollm2-135m:q4_1"],
        }


@pytest.fixture
def guarded(llmedge_home: Path, stored: Store) -> Iterator[str]:
    settings = Settings(
        home=llmedge_home,
        api_key="s3cret",  # type: ignore[arg-type]
        cors_origins=("http://app.test",),
        max_request_bytes=4096,
    )
    with _serve(settings, stored) as url:
        yield url


KEY = {"authorization": "Bearer s3cret"}


def test_cors_answers_preflights_for_allowed_origins_only(guarded: str) -> None:
    def preflight(origin: str) -> httpx.Response:
        headers = {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        return httpx.options(f"{guarded}/v1/chat/completions", headers=headers)

    allowed = preflight("http://app.test")  # no key needed: browsers send none in a preflight
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.test"
    refused = preflight("http://evil.test")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    denied = httpx.get(f"{guarded}/v1/models", headers={"origin": "http://app.test"})
    assert denied.status_code == 401  # CORS headers even on errors, so the page can read them
    assert denied.headers["access-control-allow-origin"] == "http://app.test"


def test_every_route_but_health_wants_the_key(guarded: str) -> None:
    assert httpx.get(f"{guarded}/health").status_code == 200
    for path in ("/v1/models", "/metrics", "/api/tags", "/api/version"):
        response = httpx.get(f"{guarded}{path}")
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        if path.startswith("/api/"):
            assert isinstance(error, str) and "Bearer" in error  # Ollama clients read a string
        else:
            assert error["code"] == "invalid_api_key"
        assert httpx.get(f"{guarded}{path}", headers=KEY).status_code == 200


def test_a_body_over_the_limit_is_413_declared_or_streamed(guarded: str) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 10_000}]}
    declared = httpx.post(f"{guarded}/v1/chat/completions", json=big, headers=KEY)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: the limit is counted as it arrives
        yield b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    streamed = httpx.post(
        f"{guarded}/v1/chat/completions",
        content=chunks(),
        headers={**KEY, "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert httpx.post(f"{guarded}/v1/chat/completions", json=CHAT, headers=KEY).status_code == 200


def test_model_names_cannot_reach_outside_the_store(settings: Settings, stored: Store) -> None:
    names = [
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "smollm2-135m:../x",
        "C:\\x",
        "x" * 300,
    ]
    with _serve(settings, stored) as url:
        for name in names:
            for path, body in (
                ("/v1/chat/completions", {**CHAT, "model": name}),
                ("/v1/embeddings", {"model": name, "input": "x"}),
                ("/api/show", {"model": name}),
                ("/api/pull", {"model": name, "stream": False}),
            ):
                response = httpx.post(f"{url}{path}", json=body)
                assert response.status_code in (400, 404), (path, response.text)
            assert httpx.get(f"{url}/v1/models/{name}").status_code in (400, 404)
        for name in ("models/evil.gguf", "./copy.gguf", "~/x", "tmp/weights"):
            response = httpx.post(f"{url}/api/pull", json={"model": name, "stream": False})
            assert response.status_code == 400 and "not a model name" in response.json()["error"]
