"""The server's guards against web pages and hostile bodies, over a scripted backend: the Host
header (DNS rebinding), the Origin of state changes, the API key's scheme, lone surrogates and
the message cap. The app, uvicorn and HTTP are real; only the model is scripted."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_backend import ScriptedBackend, ScriptedModel
from scripted_server import serving

from llmedge import Engine, Settings, Store, pull

MODEL = "smollm2-135m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def stored(store: Store, smollm2_gguf: Path) -> Store:
    pull(store, MODEL)
    return store


def _serve(stored: Store, **fields: Any) -> Any:
    settings = Settings(**fields)
    return serving(Engine(settings, stored, backend=ScriptedBackend(ScriptedModel(4096))))


@pytest.fixture
def url(stored: Store) -> Iterator[str]:
    with _serve(stored, max_messages=10) as base:
        yield base


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example"],
)
def test_a_rebound_host_name_is_refused(url: str, host: str) -> None:
    headers = {"host": host.format(port=_port(url))}
    name = host.split(":")[0]
    for method, path in (("GET", "/v1/models"), ("GET", "/health"), ("POST", "/api/pull")):
        response = httpx.request(method, f"{url}{path}", headers=headers, json={"model": "x"})
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        message = error if path.startswith("/api/") else error["message"]
        assert f"--allow-host {name}" in message


@pytest.mark.parametrize(
    "host",
    ["localhost:{port}", "127.0.0.1:{port}", "127.9.9.9", "[::1]:{port}", "192.168.7.7:{port}",
     "app.localhost:{port}", "LOCALHOST", socket.gethostname()],
)  # fmt: skip
def test_loopback_names_this_machine_and_addresses_are_answered(url: str, host: str) -> None:
    headers = {"host": host.format(port=_port(url))}
    assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 200


def test_allow_host_adds_names_and_star_allows_any(stored: Store) -> None:
    with _serve(stored, allow_hosts=("lan.box",)) as base:
        assert httpx.get(f"{base}/v1/models", headers={"host": "lan.box:8000"}).status_code == 200
        assert httpx.get(f"{base}/v1/models", headers={"host": "other.box"}).status_code == 403
    with _serve(stored, allow_hosts=("*",)) as base:
        assert httpx.get(f"{base}/v1/models", headers={"host": "other.box"}).status_code == 200


def test_state_changes_from_other_origins_are_refused(stored: Store) -> None:
    with _serve(stored, cors_origins=("http://app.test",)) as base:
        own = base  # the server's own origin, as a page it served would send
        for origin, status in (
            ("http://evil.example", 403),
            ("null", 403),
            ("http://app.test", 200),
            (own, 200),
        ):
            response = httpx.post(
                f"{base}/v1/chat/completions", json=CHAT, headers={"origin": origin}
            )
            assert response.status_code == status, (origin, response.text)
        refused = httpx.post(f"{base}/api/chat", json=CHAT, headers={"origin": "http://x.test"})
        assert refused.status_code == 403 and "LLMEDGE_CORS_ORIGINS" in refused.json()["error"]
        # The form a page posts without a preflight: its JSON would be read, so it must be refused.
        for path in ("/v1/chat/completions", "/api/chat"):
            form = {"origin": "http://evil.example", "content-type": "text/plain"}
            posted = httpx.post(f"{base}{path}", content=json.dumps(CHAT), headers=form)
            assert posted.status_code == 403, (path, posted.text)
        # Reading is not a state change: a GET from any page is answered (CORS keeps its body
        # from the page), and a client that is not a browser sends no Origin at all.
        assert httpx.get(f"{base}/v1/models", headers={"origin": "http://evil.example"}).is_success
        assert httpx.post(f"{base}/v1/chat/completions", json=CHAT).status_code == 200


def test_the_auth_scheme_is_case_insensitive(stored: Store) -> None:
    with _serve(stored, api_key="s3cret") as base:
        for value, status in (
            ("Bearer s3cret", 200),
            ("bearer s3cret", 200),
            ("BEARER   s3cret", 200),
            ("Basic s3cret", 401),
            ("Bearers3cret", 401),
            ("bearer s3cre", 401),
        ):
            response = httpx.get(f"{base}/v1/models", headers={"authorization": value})
            assert response.status_code == status, value


SURROGATE_BODIES = [
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]},
     "messages.0.content"),
    ("/v1/completions", {"model": MODEL, "prompt": "\udfff"}, "prompt"),
    ("/v1/responses", {"model": MODEL, "input": [{"role": "user", "content": "x\ud83d"}]},
     "input.0.content"),
    ("/v1/embeddings", {"model": MODEL, "input": ["ok", "\udc00"]}, "input.1"),
    ("/api/chat", {**CHAT, "messages": [{"role": "user", "content": "\ud800"}]},
     "messages.0.content"),
    ("/api/generate", {"model": MODEL, "prompt": "\ud800", "stream": False}, "prompt"),
    ("/api/embed", {"model": MODEL, "input": "\ud800"}, "input"),
    ("/api/embeddings", {"model": MODEL, "prompt": "\ud800"}, "prompt"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param"), SURROGATE_BODIES)
def test_a_lone_surrogate_is_a_400_naming_the_field(
    url: str, path: str, body: dict[str, Any], param: str
) -> None:
    raw = json.dumps(body)  # ensure_ascii: the surrogate travels as a \\u escape, as JSON allows
    response = httpx.post(f"{url}{path}", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str) and error.startswith(f"{param}:")
    else:
        assert error["param"] == param and error["code"] == "invalid_text"


def test_paired_surrogates_and_escaped_backslashes_pass(url: str) -> None:
    for text in ("an emoji \U0001f600", "a backslash then u: \\ud800"):
        body = {**CHAT, "messages": [{"role": "user", "content": text}]}
        response = httpx.post(
            f"{url}/v1/chat/completions",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "field", "param"),
    [("/v1/chat/completions", "messages", "messages"), ("/api/chat", "messages", "messages"),
     ("/v1/responses", "input", "input")],
)  # fmt: skip
def test_more_messages_than_the_cap_is_a_400_naming_it(
    url: str, path: str, field: str, param: str
) -> None:
    turns = [{"role": "user", "content": f"m{i}"} for i in range(11)]
    body: dict[str, Any] = {"model": MODEL, field: turns}
    if path == "/api/chat":
        body["stream"] = False
    response = httpx.post(f"{url}{path}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert "LLMEDGE_MAX_MESSAGES" in message
    if not isinstance(error, str):
        assert error["param"] == param and error["code"] == "too_many_messages"
    assert httpx.post(f"{url}{path}", json={**body, field: turns[:10]}).status_code == 200


def test_a_keep_alive_past_any_clock_means_forever_and_ps_still_answers(url: str) -> None:
    for keep in (1e20, "99999999999999h", 10**30):
        load = httpx.post(f"{url}/api/generate", json={"model": MODEL, "keep_alive": keep})
        assert load.status_code == 200, load.text
        running = httpx.get(f"{url}/api/ps")
        assert running.status_code == 200 and running.json()["models"]
    not_a_number = b'{"model": "smollm2-135m", "keep_alive": NaN}'
    refused = httpx.post(
        f"{url}/api/generate", content=not_a_number, headers={"content-type": "application/json"}
    )
    assert refused.status_code == 400 and "keep_alive" in refused.json()["error"]
