"""The engine over a scripted backend: queueing, cancellation, context checks, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_backend import ScriptedBackend, ScriptedModel

from llmedge import (
    ChatMessage,
    ContextLengthExceededError,
    CorruptModelError,
    Engine,
    EngineBusyError,
    ModelNotFoundError,
    SamplingParams,
    Settings,
    Store,
    pull,
)


@pytest.fixture
def stored(store: Store, tiny_gguf: Path) -> str:
    return pull(store, str(tiny_gguf), name="tiny").ref


def _engine(settings: Settings, store: Store, model: ScriptedModel) -> Engine:
    return Engine(settings, store, backend=ScriptedBackend(model))


def test_stream_yields_the_pieces_then_a_finish(
    settings: Settings, store: Store, stored: str
) -> None:
    model = ScriptedModel()
    model.enqueue("Hel", "lo")
    engine = _engine(settings, store, model)
    prompt = engine.prepare_chat(stored, [ChatMessage("user", "hi")], SamplingParams())
    chunks = list(engine.stream_sync(prompt))
    assert "".join(c.text for c in chunks) == "Hello"
    assert chunks[-1].finish_reason == "stop"
    assert model.prompts[0] == tuple(ord(c) for c in "user:hi\nassistant:")
    engine.close()
    assert model.closed


def test_max_tokens_is_capped_by_the_room_left_in_the_context(
    settings: Settings, store: Store, stored: str
) -> None:
    engine = _engine(settings, store, ScriptedModel(ctx_tokens=64))
    prompt = engine.prepare_text(stored, "x" * 60, SamplingParams(max_tokens=1000))
    assert prompt.params.max_tokens == 4


def test_a_prompt_filling_the_context_is_refused_with_the_numbers(
    settings: Settings, store: Store, stored: str
) -> None:
    engine = _engine(settings, store, ScriptedModel(ctx_tokens=64))
    with pytest.raises(ContextLengthExceededError) as caught:
        engine.prepare_text(stored, "x" * 64, SamplingParams())
    assert (caught.value.prompt_tokens, caught.value.ctx_tokens) == (64, 64)
    assert caught.value.code == "context_length_exceeded"


def test_closing_the_stream_cancels_the_generation(
    settings: Settings, store: Store, stored: str
) -> None:
    model = ScriptedModel(delay_s=0.01)
    model.enqueue(*["x"] * 500)
    model.enqueue("after")
    engine = _engine(settings, store, model)

    async def read_two_then_stop() -> str:
        prompt = engine.prepare_chat(stored, [ChatMessage("user", "go")], SamplingParams())
        stream = engine.stream(prompt)
        got = [await anext(stream), await anext(stream)]
        await stream.aclose()
        nxt = engine.prepare_chat(stored, [ChatMessage("user", "again")], SamplingParams())
        return (
            "".join(c.text for c in got) + "|" + "".join([c.text async for c in engine.stream(nxt)])
        )

    # The second request is answered at once: the first one stopped instead of running 5 s.
    assert asyncio.run(asyncio.wait_for(read_two_then_stop(), timeout=3)) == "xx|after"


def test_a_full_queue_answers_busy_at_once(settings: Settings, store: Store, stored: str) -> None:
    engine = _engine(settings.with_overrides(max_queue=3), store, ScriptedModel(delay_s=0.2))
    prompt = engine.prepare_text(stored, "p", SamplingParams())
    started = [engine.start(prompt) for _ in range(4)]  # one decoding, three waiting
    with pytest.raises(EngineBusyError) as caught:
        engine.start(prompt)
    assert caught.value.http_status == 503 and caught.value.retry_after_s > 0
    for stream in started:
        stream.cancel()  # callers that left free their places at once
    assert "".join(c.text for c in engine.stream_sync(prompt)) == "ok"


def test_an_unknown_model_is_not_found(settings: Settings, store: Store) -> None:
    engine = _engine(settings, store, ScriptedModel())
    with pytest.raises(ModelNotFoundError, match="llmedge pull"):
        engine.load("no-such-model")


def test_a_damaged_blob_is_reported_and_never_loaded(
    settings: Settings, store: Store, stored: str
) -> None:
    backend = ScriptedBackend()
    engine = Engine(settings, store, backend=backend)
    manifest = engine.resolve(stored)
    blob = store.blob_path(manifest.digest)
    with blob.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptModelError, match="sha256"):
        engine.load(stored)
    with blob.open("r+b") as handle:
        handle.truncate(blob.stat().st_size // 2)
    with pytest.raises(CorruptModelError, match="truncated"):
        engine.load(stored)
    assert backend.loads == []
