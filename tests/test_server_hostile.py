"""No request or model file can crash the real server: `llmedge serve` as a process, the real
engine, a hostile model built from the tiny one. Each test ends by checking /health."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from gguf_mutants import rewrite_gguf
from server_process import server_process

from llmedge import Store, pull

pytestmark = pytest.mark.e2e

# A model whose chat template misbehaves on command (the first message says how).
HOSTILE_TEMPLATE = (
    "{% if messages[0].content == 'loop' %}"
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{% elif messages[0].content == 'big' %}{{ 'x' * 1000000000 }}"
    "{% elif messages[0].content == 'divide' %}{{ 1 // 0 }}"
    "{% else %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n{% endif %}"
)
BIG = 18_750  # the maxLength that used to overflow the grammar parser's stack (SIGSEGV)
TIMEOUT = 120  # generous: the CPU may be shared


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, smollm2_gguf: Path
) -> Iterator[tuple[Any, str]]:
    home = tmp_path_factory.mktemp("hostile-home")
    model = rewrite_gguf(
        tiny_gguf, home / "hostile.gguf", {"tokenizer.chat_template": HOSTILE_TEMPLATE}
    )
    pull(Store(home / "store"), str(model), name="hostile")
    env = {"LLMEDGE_MAX_MESSAGES": "200000", "LLMEDGE_MAX_TOKENS_LIMIT": "8"}
    with server_process(home, env=env) as (process, url):
        yield process, url.removesuffix("/v1")


@pytest.fixture
def base(served: tuple[Any, str]) -> Iterator[str]:
    yield served[1]
    assert httpx.get(f"{served[1]}/health", timeout=TIMEOUT).status_code == 200


def _chat(content: str, model: str = "smollm2-135m", **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return {"model": model, "messages": messages, "max_tokens": 4, **extra}


def _schema(max_length: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"s": {"type": "string", "maxLength": max_length}}}


def test_huge_schema_bounds_are_a_400_naming_the_keyword(base: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": _schema(BIG)}}
    for stream in (False, True):
        body = _chat("hi", response_format=fmt, stream=stream)
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=TIMEOUT)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "maxLength" in error["message"] and error["code"] == "schema_too_complex"
        assert error["param"] == "response_format.json_schema.schema"
    ollama = {"model": "smollm2-135m", "prompt": "hi", "format": _schema(BIG), "stream": False}
    response = httpx.post(f"{base}/api/generate", json=ollama, timeout=TIMEOUT)
    assert response.status_code == 400 and "maxLength" in response.json()["error"]
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": _schema(BIG), "strict": True},
    }
    body = _chat("hi", tools=[tool], tool_choice="required")
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert response.status_code == 400 and "maxLength" in response.json()["error"]["message"]
    fine = {"type": "json_schema", "json_schema": {"name": "x", "schema": _schema(2000)}}
    body = _chat("hi", response_format=fine)
    ok = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert ok.status_code == 200, ok.text


SURROGATE_BODIES = [
    ("/v1/chat/completions", _chat("a\ud800")),
    ("/v1/completions", {"model": "smollm2-135m", "prompt": "\udfff", "max_tokens": 2}),
    ("/v1/responses", {"model": "smollm2-135m", "input": "x\ud83d"}),
    ("/v1/embeddings", {"model": "smollm2-135m", "input": "\udc00"}),
    ("/api/chat", {**_chat("\ud800"), "stream": False}),
    ("/api/generate", {"model": "smollm2-135m", "prompt": "\ud800", "stream": False}),
    ("/api/embed", {"model": "smollm2-135m", "input": "\ud800"}),
]


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES)
def test_a_lone_surrogate_never_reaches_the_tokenizer(
    base: str, path: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body)  # the surrogate as the \\u escape JSON allows
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{base}{path}", content=raw, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 400, response.text


def test_a_hundred_thousand_messages_are_refused_and_many_are_tokenized_linearly(
    base: str,
) -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
        for i in range(100_000)
    ]  # about 3 MB
    body = {"model": "smollm2-135m", "messages": turns}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"
    # Every message adds two special tokens; llama.cpp alone splits those quadratically.
    specials = "<|im_end|>" * 30_000
    response = httpx.post(f"{base}/v1/chat/completions", json=_chat(specials), timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_hostile_chat_template_is_a_400_and_the_server_stays_up(
    served: tuple[Any, str], base: str
) -> None:
    process, _ = served
    load = httpx.post(
        f"{base}/api/generate", json={"model": "hostile", "prompt": ""}, timeout=TIMEOUT
    )
    assert load.status_code == 200, load.text
    for content, expected in (("divide", "ZeroDivisionError"), ("big", "memory")):
        response = httpx.post(
            f"{base}/v1/chat/completions", json=_chat(content, "hostile"), timeout=TIMEOUT
        )
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert "chat template" in message and expected in message
    health: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            health.append(httpx.get(f"{base}/health", timeout=TIMEOUT).status_code)
            stop.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        endless = httpx.post(
            f"{base}/v1/chat/completions", json=_chat("loop", "hostile"), timeout=TIMEOUT
        )
    finally:
        stop.set()
        watcher.join()
    assert endless.status_code == 400 and "ran for more than" in endless.text
    assert health and set(health) == {200}
    assert psutil.Process(process.pid).memory_info().rss < 1 << 30
    fine = httpx.post(
        f"{base}/v1/chat/completions", json=_chat("hello", "hostile"), timeout=TIMEOUT
    )
    assert fine.status_code == 200, fine.text


def test_a_blob_cut_short_while_loaded_cannot_kill_the_server(
    served: tuple[Any, str], base: str
) -> None:
    response = httpx.post(
        f"{base}/v1/chat/completions", json=_chat("hi", "hostile"), timeout=TIMEOUT
    )
    assert response.status_code == 200
    home = Path(psutil.Process(served[0].pid).environ()["LLMEDGE_HOME"])
    (manifest,) = (m for m in Store(home / "store").manifests() if m.name == "hostile")
    blob = Store(home / "store").blob_path(manifest.digest)
    os.truncate(blob, blob.stat().st_size // 3)  # weights read into memory: nothing to fault
    for _ in range(2):
        again = httpx.post(
            f"{base}/v1/chat/completions", json=_chat("hi", "hostile"), timeout=TIMEOUT
        )
        assert again.status_code == 200, again.text
