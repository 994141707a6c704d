"""How a request's generations end at the server's edge: a client gone before the first byte,
a refusal before the 200, an unload mid-answer as a retryable 503."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_backend import Gate, ScriptedBackend, ScriptedModel
from scripted_server import serving

from llmedge import Engine, Settings, Store, pull
from server import create_app
from server.state import ServerState

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def stored(store: Store, tiny_gguf: Path) -> Store:
    pull(store, str(tiny_gguf), name="tiny")
    return store


async def _call_and_leave(app: Any, path: str, body: dict[str, Any]) -> None:
    """One request whose client is gone the moment its body is sent: sending the answer's
    first byte fails, as it does on a closed connection."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages = [
        {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # nothing more ever comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the client closed the connection")

    with contextlib.suppress(OSError):
        await app(scope, receive, send)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_client_gone_before_the_first_byte_frees_its_generation(
    settings: Settings, stored: Store, path: str
) -> None:
    # Once: the stream's iterator never started, so nothing cancelled its generations; they ran
    # to max_tokens and /metrics counted them in flight for ever.
    model = ScriptedModel()
    gate = Gate()
    model.enqueue("a", gate, "b")
    engine = Engine(settings, stored, backend=ScriptedBackend(model))
    app = create_app(engine)
    state: ServerState = app.state.llmedge

    async def request_then_look() -> None:
        await _call_and_leave(app, path, {**CHAT, "stream": True})
        # Checked at once, while the event loop still runs (so no clean-up at its end helps).
        (runner,) = engine.loaded()
        assert runner.in_flight == 0 and state.metrics.in_flight == 0

    asyncio.run(request_then_look())
    gate.go.set()
    engine.close()


def test_a_grammar_the_engine_refuses_is_a_400_not_a_streamed_200(
    settings: Settings, stored: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once: the sampler (and its grammar) was built after the 200 and its headers were sent.
    from server import openai_routes

    monkeypatch.setattr(
        openai_routes, "format_grammar", lambda given: "root ::= (" if given else None
    )
    engine = Engine(settings.with_overrides(ctx_tokens=512, parallel=1), stored)
    with serving(engine) as url:
        body = {**CHAT, "stream": True, "response_format": {"type": "json_object"}}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 400
        assert "grammar" in response.json()["error"]["message"]
        ok = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 3}, timeout=30)
        assert ok.status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_a_shutdown_mid_answer_is_a_retryable_503(
    settings: Settings, stored: Store, path: str
) -> None:
    # Once: "model unloaded" was a 500, and a missing last event an assertion failure (500).
    model = ScriptedModel()
    gate = Gate()
    model.enqueue("a", gate, "b")
    engine = Engine(settings, stored, backend=ScriptedBackend(model))
    with serving(engine) as url:
        answer: dict[str, httpx.Response] = {}
        body = {**CHAT, "stream": False}
        asking = threading.Thread(
            target=lambda: answer.update(r=httpx.post(f"{url}{path}", json=body, timeout=30))
        )
        asking.start()
        gate.reached.wait(10)
        closing = threading.Thread(target=engine.close)
        closing.start()
        asking.join(30)
        gate.go.set()
        closing.join(30)
    response = answer["r"]
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert "unloaded" in message
