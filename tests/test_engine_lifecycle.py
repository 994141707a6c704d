"""Model lifecycle: loads on first use, keep-alive, least-recently-used eviction."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fake_backend import ScriptedBackend, ScriptedModel

from llmedge import (
    Engine,
    EngineBusyError,
    InsufficientMemoryError,
    SamplingParams,
    Settings,
    Store,
    pull,
)


class ModelPerLoad(ScriptedBackend):
    """A fresh scripted model for every load, so unloading one is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[ScriptedModel] = []

    def load(self, path: Path, options: object) -> ScriptedModel:  # type: ignore[override]
        self.loads.append(path)
        self.models.append(ScriptedModel(delay_s=0.05))
        return self.models[-1]


@pytest.fixture
def two_models(store: Store, tiny_gguf: Path, tmp_path: Path) -> tuple[str, str]:
    other = tmp_path / "other.gguf"
    shutil.copyfile(tiny_gguf, other)
    with other.open("ab") as handle:
        handle.write(b"\0")  # same weights, another blob: a second model for the store
    return pull(store, str(tiny_gguf), name="first").ref, pull(store, str(other), name="second").ref


def test_a_model_loads_on_first_use_and_stays(settings: Settings, store: Store, two_models) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings, store, backend=backend)
    assert engine.loaded() == []
    first = engine.load(two_models[0])
    assert engine.load(two_models[0]) is first and len(backend.loads) == 1
    engine.close()


def test_keep_alive_zero_unloads_after_the_answer(
    settings: Settings, store: Store, two_models
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings, store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    engine.load(two_models[0], keep_alive_s=0)
    assert "".join(c.text for c in engine.stream_sync(prompt)) == "ok"
    assert prompt.model.wait_freed(5)  # the reaper's work, done the moment it fell idle
    assert engine.loaded() == [] and backend.models[0].closed
    engine.close()


def test_the_least_recently_used_idle_model_makes_room(
    settings: Settings, store: Store, two_models
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(max_loaded_models=1), store, backend=backend)
    engine.load(two_models[0])
    second = engine.load(two_models[1])
    assert engine.loaded() == [second] and backend.models[0].closed


def test_a_busy_model_is_not_evicted_and_the_limit_holds(
    settings: Settings, store: Store, two_models
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(max_loaded_models=1), store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    backend.models[0].enqueue(*["x"] * 20)
    stream = iter(engine.start(prompt))
    prompt.release()
    assert next(stream).text == "x"
    # One model may be loaded and it is answering: the other is refused (retryable), not
    # loaded beside it beyond the limit, and the answer goes on.
    with pytest.raises(EngineBusyError) as caught:
        engine.load(two_models[1])
    assert caught.value.http_status == 503 and caught.value.retry_after_s > 0
    assert not backend.models[0].closed and len(engine.loaded()) == 1
    assert "".join(c.text for c in stream) == "x" * 19
    engine.load(two_models[1])  # idle now: the first one makes room
    assert backend.models[0].closed and len(engine.loaded()) == 1
    engine.close()


def test_a_model_too_big_for_the_budget_is_refused(
    settings: Settings, store: Store, two_models
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(memory_budget_bytes=8 << 20), store, backend=backend)
    with pytest.raises(InsufficientMemoryError) as caught:
        engine.load(two_models[0])
    assert caught.value.needed_bytes > caught.value.available_bytes == 8 << 20
    assert backend.loads == []
