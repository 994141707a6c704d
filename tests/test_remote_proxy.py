"""The remote engine: one llmedge server forwarding to another on loopback, driven by `openai`.

The upstream is a real `llmedge serve` with an API key and a model the front does not have; the
fronts are `llmedge serve --backend remote` (everything forwarded) and `--remote` beside a local
model (only what the router sends away is forwarded). Down and silent upstreams run in-process.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from scripted_server import serving
from server_process import running_server

from llmedge import Engine, Settings, Store
from llmedge.hub import import_gguf
from llmedge.store import ModelRef
from server import remote_proxy
from server.remote_proxy import shaped_error, upstream_base

pytestmark = pytest.mark.e2e

KEY = "upstream-key"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[str]:
    """A real server with an API key, holding SmolLM2 also as `upstream-only`."""
    home = tmp_path_factory.mktemp("upstream")
    store = Store(Settings(home=home).store_dir)
    import_gguf(store, smollm2_gguf, ModelRef("upstream-only"), {"kind": "test"})
    with running_server(home, "--api-key", KEY) as url:
        yield url


@pytest.fixture(scope="module")
def everything_remote(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[str]:
    home = tmp_path_factory.mktemp("front")
    args = ("--backend", "remote", "--remote", upstream, "--remote-key", KEY)
    with running_server(home, *args) as url:
        yield url


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mixed")
    with running_server(home, "--remote", upstream, "--remote-key", KEY) as url:
        yield url


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def stream_text(url: str, model: str, key: str = "unused") -> tuple[str, list[str | None]]:
    stream = client(url, key).chat.completions.create(
        model=model,
        messages=ASK,
        stream=True,
        max_tokens=12,
        temperature=0,
        seed=1,
    )
    chunks = [c for c in stream if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    return text, [c.choices[0].finish_reason for c in chunks]


def body_of(error: openai.APIStatusError) -> dict[str, object]:
    """The OpenAI error object the client parsed from the answer."""
    assert isinstance(error.body, dict)
    return error.body


def generations(url: str) -> float:
    metrics = httpx.get(
        url.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {KEY}"}
    )
    match = re.search(r"^llmedge_generations_total (\S+)$", metrics.text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def test_a_stream_passes_through_unchanged(upstream: str, everything_remote: str) -> None:
    direct = stream_text(upstream, "smollm2-135m", KEY)
    forwarded = stream_text(everything_remote, "smollm2-135m")
    assert forwarded == direct and direct[0]
    raw = httpx.post(
        f"{everything_remote}/chat/completions",
        json={"model": "smollm2-135m", "messages": ASK, "stream": True, "max_tokens": 2},
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")
    models = client(everything_remote).models.list()
    assert {m.id for m in models.data} == {"smollm2-135m:q4_1", "upstream-only:q4_1"}


def test_upstream_errors_come_back_in_openai_shape(everything_remote: str) -> None:
    with pytest.raises(openai.BadRequestError) as too_many:
        client(everything_remote).chat.completions.create(
            model="smollm2-135m",
            messages=ASK,
            max_tokens=10**7,
        )
    assert body_of(too_many.value)["param"] == "max_tokens"
    assert "LLMEDGE_MAX_TOKENS_LIMIT" in too_many.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client(everything_remote).chat.completions.create(model="no-such-model", messages=ASK)
    assert body_of(missing.value)["code"] == "model_not_found"


def test_only_what_the_router_sends_away_is_forwarded(upstream: str, mixed: str) -> None:
    before = generations(upstream)
    local, _ = stream_text(mixed, "smollm2-135m")
    assert local and generations(upstream) == before
    remote, finishes = stream_text(mixed, "upstream-only")
    assert remote and finishes[-1] in ("stop", "length")
    assert generations(upstream) == before + 1
    listed = {m.id for m in client(mixed).models.list().data}
    assert listed == {"smollm2-135m:q4_1"}  # its own store; the upstream's list is not merged


def test_a_model_too_large_here_goes_to_the_remote(
    upstream: str, settings: Settings, store: Store, smollm2_gguf: Path
) -> None:
    import_gguf(store, smollm2_gguf, ModelRef("smollm2-135m"), {"kind": "test"})
    tight = settings.with_overrides(
        remote_url=upstream, remote_key=KEY, memory_budget_bytes="64MiB"
    )
    engine = Engine(tight, store)
    decision = engine.route("smollm2-135m")
    assert decision.backend == "remote" and "too large for this host" in decision.reasons[1]
    with serving(engine) as base:
        text, _ = stream_text(f"{base}/v1", "smollm2-135m")
    assert text
    assert engine.loaded() == []  # nothing was loaded here
    engine.close()


def test_a_wrong_remote_key_is_the_upstream_401(upstream: str, settings: Settings) -> None:
    engine = Engine(settings.with_overrides(remote_url=upstream), backend="remote")
    with serving(engine) as base, pytest.raises(openai.AuthenticationError) as refused:
        client(f"{base}/v1").chat.completions.create(model="smollm2-135m", messages=ASK)
    assert body_of(refused.value)["code"] == "invalid_api_key"
    engine.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_down_upstream_is_a_clear_502(settings: Settings) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    engine = Engine(settings.with_overrides(remote_url=down), backend="remote")
    with serving(engine) as base:
        answer = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "m", "messages": ASK}, timeout=30
        )
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert (
        error["code"] == "remote_unreachable" and f"{down}/v1 cannot be reached" in error["message"]
    )
    engine.close()


def test_a_silent_upstream_times_out(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_proxy, "READ_TIMEOUT_S", 1.0)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        engine = Engine(settings.with_overrides(remote_url=url), backend="remote")
        with serving(engine) as base:
            answer = httpx.post(
                f"{base}/v1/completions", json={"model": "m", "prompt": "hi"}, timeout=30
            )
        engine.close()
    assert answer.status_code == 504
    assert "did not answer in time" in answer.json()["error"]["message"]


def test_errors_not_in_openai_shape_are_wrapped() -> None:
    assert upstream_base("http://h:1/") == "http://h:1/v1" == upstream_base("http://h:1/v1")
    html = shaped_error(502, b"<html>Bad Gateway</html>", "http://h:1/v1")
    assert html.decode().startswith('{"error": {"message": "the remote engine at http://h:1/v1')
    vllm = shaped_error(400, b'{"object": "error", "message": "too long"}', "http://h:1/v1")
    assert b"answered 400: too long" in vllm
    openai_shaped = b'{"error": {"message": "no", "type": "x", "param": null, "code": null}}'
    assert shaped_error(400, openai_shaped, "http://h:1/v1") == openai_shaped
