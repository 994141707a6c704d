"""Leases and drains: each race that once lost work, put exactly where it struck (with gates,
never sleeps), and shown not to lose it any more."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest
from fake_backend import Gate, ScriptedBackend, ScriptedModel

from llmedge import (
    Engine,
    EngineBusyError,
    GenerationCancelledError,
    ModelUnloadingError,
    SamplingParams,
    Settings,
    Store,
    pull,
)
from llmedge.backends import LoadOptions
from llmedge.fit.guard import LoadPlan
from llmedge.store import ModelRef

FOREVER = 1e9  # a time by which every keep-alive has run out


class ModelPerLoad(ScriptedBackend):
    """A fresh scripted model for every load, so unloading one is visible."""

    def __init__(self, parallel: int = 1, load_gate: dict[str, Gate] | None = None) -> None:
        super().__init__()
        self.models: list[ScriptedModel] = []
        self.options: list[LoadOptions] = []
        self.parallel = parallel
        self.load_gate = load_gate or {}

    def load(self, path: Path, options: LoadOptions) -> ScriptedModel:  # type: ignore[override]
        self.loads.append(path)
        self.options.append(options)
        gate = self.load_gate.get(path.name)
        if gate is not None:
            gate.pass_through()
        self.models.append(ScriptedModel(parallel=self.parallel))
        return self.models[-1]


@pytest.fixture
def two_models(store: Store, tiny_gguf: Path, tmp_path: Path) -> tuple[str, str]:
    other = tmp_path / "other.gguf"
    shutil.copyfile(tiny_gguf, other)
    with other.open("ab") as handle:
        handle.write(b"\0")  # another blob: a second model
    return pull(store, str(tiny_gguf), name="first").ref, pull(store, str(other), name="second").ref


def _text(stream: object) -> str:
    return "".join(c.text for c in stream)  # type: ignore[attr-defined]


def _answer(engine: Engine, model: str, prompt: str) -> str:
    return _text(engine.stream_sync(engine.prepare_text(model, prompt, SamplingParams())))


def test_a_prepared_prompt_pins_its_model_against_the_reaper(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    # Once: a keep-alive of 0 unloaded the model between preparing a prompt and starting it,
    # and the request hung for ever.
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(keep_alive_s=0), store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    assert engine.unload_idle(FOREVER) == []  # leased: not idle
    stream = engine.start(prompt)
    prompt.release()
    assert engine.unload_idle(FOREVER) == []  # generating: not idle
    assert _text(stream) == "ok"
    engine.unload_idle(FOREVER)  # (or the reaper, woken as it fell idle, got there first)
    assert prompt.model.wait_freed(10) and backend.models[0].closed
    engine.close()


def test_a_prepared_prompt_pins_its_model_against_eviction(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(max_loaded_models=1), store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    with pytest.raises(EngineBusyError):
        engine.load(two_models[1])  # the only model is leased: nothing may be evicted
    assert _text(engine.stream_sync(prompt)) == "ok"
    engine.load(two_models[1])
    assert backend.models[0].closed
    engine.close()


def test_unload_drains_running_answers_and_refuses_new_work_with_a_retryable_503(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    # Once: unloading cancelled every running answer, and each read as a complete "stop".
    backend = ModelPerLoad()
    engine = Engine(settings, store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    gate = Gate()
    backend.models[0].enqueue("a", gate, "b", "c")
    stream = engine.start(prompt)
    prompt.release()
    gate.reached.wait(10)
    assert engine.unload(two_models[0])
    with pytest.raises(ModelUnloadingError) as caught:
        engine.prepare_text(two_models[0], "more", SamplingParams())
    assert caught.value.http_status == 503 and caught.value.retry_after_s > 0
    assert not backend.models[0].closed
    gate.go.set()
    chunks = list(stream)
    assert "".join(c.text for c in chunks) == "abc" and chunks[-1].finish_reason == "stop"
    assert engine.unload(two_models[0], wait=True) is False or backend.models[0].closed
    engine.close()


def test_a_keep_alive_of_zero_from_one_client_does_not_cut_another(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    backend = ModelPerLoad(parallel=2)
    engine = Engine(settings, store, backend=backend)
    running = engine.prepare_text(two_models[0], "long", SamplingParams())
    gate = Gate()
    backend.models[0].enqueue("x", gate, "y")
    stream = engine.start(running)
    running.release()
    gate.reached.wait(10)
    other = engine.prepare_text(
        engine.lease(two_models[0], keep_alive_s=0), "bye", SamplingParams()
    )
    assert _text(engine.stream_sync(other)) == "ok"
    assert engine.unload_idle(FOREVER) == []  # the first answer still runs
    gate.go.set()
    assert _text(stream) == "xy"
    engine.unload_idle()  # then it goes, as keep-alive 0 asked
    assert running.model.wait_freed(10)
    engine.close()


def test_a_stream_whose_event_loop_closed_cancels_instead_of_killing_the_worker(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    # Once: the worker's wake-up of a closed loop raised, the thread died with its job, and
    # the model stayed busy for ever.
    backend = ModelPerLoad()
    engine = Engine(settings, store, backend=backend)
    gate = Gate()
    model = engine.load(two_models[0]).model
    assert isinstance(model, ScriptedModel)
    model.enqueue(gate, "never read", "x")
    loop = asyncio.new_event_loop()
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    stream = engine.start(prompt, loop=loop)
    prompt.release()
    reader = stream.__aiter__()
    pending = loop.create_task(anext(reader))  # type: ignore[arg-type]
    loop.run_until_complete(asyncio.sleep(0.01))  # the reader now waits for a chunk
    assert not pending.done()
    loop.close()
    ended = threading.Event()
    stream.on_end(lambda _last: ended.set())
    gate.go.set()  # the worker writes a chunk and must wake a loop that is gone
    assert ended.wait(10) and stream.cancelled
    assert _answer(engine, two_models[0], "again") == "ok"
    engine.close()


def test_a_cold_load_of_one_model_never_blocks_another(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    # Once: one lock covered hashing and loading, so loading B stalled every request for A.
    gate = Gate()
    b_blob = store.blob_path(store.resolve(ModelRef.parse(two_models[1])).digest).name
    backend = ModelPerLoad(load_gate={b_blob: gate})
    engine = Engine(settings, store, backend=backend)
    engine.load(two_models[0])
    loads: list[BaseException | None] = []

    def load_b() -> None:
        try:
            engine.load(two_models[1])
            loads.append(None)
        except BaseException as exc:
            loads.append(exc)

    threads = [threading.Thread(target=load_b) for _ in range(2)]
    for thread in threads:
        thread.start()
    gate.reached.wait(10)
    assert engine.loading() == 1
    # B is half loaded; A answers meanwhile.
    assert _answer(engine, two_models[0], "hi") == "ok"
    gate.go.set()
    for thread in threads:
        thread.join(10)
    assert loads == [None, None] and len(backend.loads) == 2  # A once, B once for two callers
    engine.close()


def test_a_failed_load_fails_every_waiter_and_the_next_try_loads_again(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    class Flaky(ModelPerLoad):
        fail = True

        def load(self, path: Path, options: LoadOptions) -> ScriptedModel:  # type: ignore[override]
            if self.fail:
                self.fail = False
                raise RuntimeError("the disk went away")
            return super().load(path, options)

    engine = Engine(settings, store, backend=Flaky())
    with pytest.raises(RuntimeError, match="disk went away"):
        engine.load(two_models[0])
    assert engine.loading() == 0
    assert _answer(engine, two_models[0], "hi") == "ok"
    engine.close()


def test_an_embedding_holds_its_model_until_the_vectors_are_made(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    # Once: the reaper freed the model while an embedding ran on it (SIGSEGV).
    backend = ModelPerLoad()
    engine = Engine(settings, store, backend=backend)
    runner = engine.load(two_models[0])
    model = runner.model
    assert isinstance(model, ScriptedModel)
    model.embed_gate = Gate()
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(engine.embed(two_models[0], ["hi"])))
    worker.start()
    model.embed_gate.reached.wait(10)
    assert engine.unload_idle(FOREVER) == [] and engine.expire(two_models[0])
    model.embed_gate.go.set()
    worker.join(10)
    assert done == [([[2.0, 1.0]], 2)]
    engine.unload_idle(FOREVER)
    assert runner.wait_freed(10) and model.closed
    engine.close()


def test_cancelling_a_waiting_request_frees_its_place_at_once(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(max_queue=1), store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "p", SamplingParams())
    gate = Gate()
    backend.models[0].enqueue("a", gate, "b")
    running, waiting = engine.start(prompt), engine.start(prompt)
    with pytest.raises(EngineBusyError):
        engine.start(prompt)
    waiting.cancel()
    third = engine.start(prompt)  # the cancelled one's place, taken at once
    prompt.release()
    gate.go.set()
    assert _text(running) == "ab" and _text(third) == "ok"
    with pytest.raises(GenerationCancelledError):
        _text(waiting)
    engine.close()


def test_close_ends_running_answers_with_a_retryable_error(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings, store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "p", SamplingParams())
    gate = Gate()
    backend.models[0].enqueue("a", gate, "b")
    stream = engine.start(prompt)
    prompt.release()
    gate.reached.wait(10)
    closing = threading.Thread(target=engine.close)
    closing.start()
    with pytest.raises(ModelUnloadingError):
        _text(stream)
    gate.go.set()
    closing.join(10)
    assert backend.models[0].closed


def test_the_load_uses_the_gpu_layers_the_memory_check_approved(
    settings: Settings, store: Store, two_models: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once: the guard counted only the layers that fit in free VRAM against RAM, and the load
    # then offloaded every layer anyway.
    from llmedge.engine import table

    monkeypatch.setattr(table, "ensure_fits", lambda *args, **kwargs: LoadPlan(7, 3))
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(gpu_layers=-1), store, backend=backend)
    engine.load(two_models[0])
    assert (backend.options[0].gpu_layers, backend.options[0].parallel) == (7, 3)
    engine.close()


def test_the_reaper_unloads_an_expired_model_promptly(
    settings: Settings, store: Store, two_models: tuple[str, str]
) -> None:
    backend = ModelPerLoad()
    engine = Engine(settings.with_overrides(keep_alive_s=0), store, backend=backend)
    prompt = engine.prepare_text(two_models[0], "hi", SamplingParams())
    assert _text(engine.stream_sync(prompt)) == "ok"
    # The reaper thread's work, woken the moment the model fell idle: no one calls it here.
    assert prompt.model.wait_freed(10) and engine.loaded() == []
    engine.close()
