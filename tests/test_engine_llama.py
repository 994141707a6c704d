"""The engine over real llama.cpp, on the tiny random model: batching, failures kept to their own
request, refusals before anything is streamed, cancellation that frees the slot."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmedge import (
    Engine,
    GenerationCancelledError,
    InvalidRequestError,
    SamplingParams,
    Settings,
    Store,
    pull,
)
from llmedge.backends.llama import scheduler as llama_scheduler
from llmedge.errors import DecodeError

GREEDY = SamplingParams(temperature=0, max_tokens=16)
PROMPTS = ["one two", "the sky is", "red green blue", "1 2 3 4", "hello there", "a b c"]


@pytest.fixture
def engine(settings: Settings, store: Store, tiny_gguf: Path) -> Engine:
    pull(store, str(tiny_gguf), name="tiny")
    return Engine(settings.with_overrides(parallel=4, ctx_tokens=512, threads=2), store)


def _answer(engine: Engine, prompt: str, params: SamplingParams = GREEDY) -> tuple[int, ...]:
    chunks = list(engine.stream_sync(engine.prepare_text("tiny", prompt, params)))
    assert chunks[-1].finish_reason in ("stop", "length")
    return tuple(t for c in chunks for t in c.token_ids)


def test_batched_greedy_answers_equal_the_answers_alone(engine: Engine) -> None:
    alone = [_answer(engine, p) for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: _answer(engine, p), PROMPTS))
    assert len(set(alone)) > 1 and together == alone
    engine.close()


def test_a_failure_in_one_slot_fails_that_request_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once: one exception while stepping the batch failed every active slot.
    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("a broken logprob")

    monkeypatch.setattr(llama_scheduler, "token_logprob", broken)
    expected = _answer(engine, "the sky is")
    gate = threading.Barrier(2)

    def healthy() -> tuple[int, ...]:
        prompt = engine.prepare_text("tiny", "the sky is", GREEDY)
        gate.wait()
        return tuple(t for c in engine.stream_sync(prompt) for t in c.token_ids)

    def failing() -> None:
        prompt = engine.prepare_text(
            "tiny", "one two", SamplingParams(max_tokens=16, logprobs=True)
        )
        gate.wait()
        list(engine.stream_sync(prompt))

    with ThreadPoolExecutor(2) as pool:
        good, bad = pool.submit(healthy), pool.submit(failing)
        with pytest.raises(DecodeError, match="a broken logprob"):
            bad.result(30)
        assert good.result(30) == expected
    engine.close()


def test_a_grammar_that_does_not_parse_is_refused_before_anything_streams(engine: Engine) -> None:
    prompt = engine.prepare_text("tiny", "hi", SamplingParams(grammar="root ::= ("))
    with pytest.raises(InvalidRequestError, match="grammar"):
        engine.start(prompt)
    prompt.release()
    assert _answer(engine, "hi")  # and the model goes on answering
    engine.close()


def test_cancelling_frees_the_slot_at_the_next_step(engine: Engine) -> None:
    runner = engine.load("tiny")
    prompt = engine.prepare_text("tiny", "go on", SamplingParams(temperature=1.0, max_tokens=400))
    stream = engine.start(prompt)
    prompt.release()
    reading = iter(stream)
    next(reading)
    stream.cancel()
    with pytest.raises(GenerationCancelledError):
        list(reading)
    assert runner.in_flight == 0  # its place in the line is free at once
    scheduler = runner.model._scheduler  # type: ignore[attr-defined]
    assert scheduler.wait_idle(5)  # and its slot after one more decode step at most
    engine.close()
