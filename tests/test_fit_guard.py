"""The load-time guard: `Engine.load`, `run` and `serve` refuse a model that will not fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fake_backend import ScriptedBackend, ScriptedModel
from test_fit_advisor import kv
from test_fit_cli import llmedge

from llmedge import (
    Engine,
    InsufficientMemoryError,
    InvalidRequestError,
    ModelRef,
    Settings,
    Store,
    pull,
)
from llmedge.backends import LoadOptions
from llmedge.fit import FitOptions, estimate_memory, guard, shape_of_file
from llmedge.fit.memory import kv_type_problem


@pytest.fixture
def stored(store: Store) -> str:
    return pull(store, "smollm2-135m").ref


def test_engine_refuses_before_the_backend_loads(store: Store, stored: str) -> None:
    backend = ScriptedBackend()
    engine = Engine(Settings(memory_budget_bytes="64MiB"), store, backend=backend)
    with pytest.raises(InsufficientMemoryError) as caught:
        engine.load(stored)
    assert caught.value.available_bytes == 64 << 20
    assert caught.value.needed_bytes > 96_576_768  # more than the weights alone
    assert "weights alone" in str(caught.value) and "llmedge fit" in str(caught.value)
    assert backend.loads == [] and engine.loaded() == []


def test_a_long_context_is_refused_with_a_shorter_one_suggested(store: Store, stored: str) -> None:
    settings = Settings(memory_budget_bytes="200MiB", ctx_tokens=8192, parallel=4)
    with pytest.raises(InsufficientMemoryError, match=r"--ctx \d+ fits"):
        Engine(settings, store, backend=ScriptedBackend()).load(stored)


def test_engine_loads_when_the_model_fits(store: Store, stored: str) -> None:
    backend = ScriptedBackend()
    engine = Engine(Settings(memory_budget_bytes="4GiB"), store, backend=backend)
    engine.load(stored)
    assert len(backend.loads) == 1
    engine.close()


def test_run_and_serve_refuse_an_oversize_model_with_the_numbers(llmedge_home: Path) -> None:
    for args in (("run", "-m", "smollm2-135m", "hello"), ("serve", "--port", "0")):
        done = llmedge(llmedge_home, *args, LLMEDGE_MEMORY_BUDGET_BYTES="64MiB")
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "needs" in done.stderr and "only 0.06 GiB is available" in done.stderr


class RecordingBackend(ScriptedBackend):
    """Keeps the options each load was given."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[LoadOptions] = []

    def load(self, path: Path, options: LoadOptions) -> ScriptedModel:
        self.options.append(options)
        return super().load(path, options)


def test_the_cache_types_and_flash_attention_reach_the_backend_and_the_check(
    store: Store, stored: str
) -> None:
    backend = RecordingBackend()
    settings = Settings(kv_type="q8_0,f16", flash_attn="on", ctx_tokens=2048, parallel=1)
    Engine(settings, store, backend=backend).load(stored)
    (options,) = backend.options
    assert (options.kv_type_k, options.kv_type_v, options.flash_attn) == ("q8_0", "f16", "on")
    # The memory check counts the same cache: a budget the f16 cache overflows takes q8_0.
    smollm2 = shape_of_file(store.blob_path(store.resolve(ModelRef.parse(stored)).digest))
    f16 = estimate_memory(smollm2, FitOptions(ctx_tokens=8192)).ram_bytes
    q8 = estimate_memory(smollm2, FitOptions(ctx_tokens=8192, **kv("q8_0"))).ram_bytes
    budget = (f16 + q8) // 2
    with pytest.raises(InsufficientMemoryError, match="--kv-type q8_0"):
        Engine(Settings(memory_budget_bytes=budget, ctx_tokens=8192, parallel=1), store,
               backend=RecordingBackend()).load(stored)  # fmt: skip
    fitting = Settings(memory_budget_bytes=budget, ctx_tokens=8192, parallel=1, kv_type="q8_0")
    Engine(fitting, store, backend=RecordingBackend()).load(stored)


def test_a_cache_type_a_model_cannot_hold_is_refused_before_loading(
    store: Store, stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shape_of_file(store.blob_path(store.resolve(ModelRef.parse(stored)).digest))
    assert kv_type_problem(real, FitOptions(**kv("q4_0"))) is None  # 64-value heads: 2 blocks
    odd = replace(real, head_dim_k=80, head_dim_v=80)  # as some models have
    problem = kv_type_problem(odd, FitOptions(kv_type_k="q8_0"))
    assert problem and "80-value K heads" in problem and "--kv-type f16" in problem
    assert kv_type_problem(odd, FitOptions()) is None
    monkeypatch.setattr(guard, "shape_of_file", lambda path, name="": odd)
    backend = RecordingBackend()
    with pytest.raises(InvalidRequestError, match="80-value K heads"):
        Engine(Settings(kv_type="q8_0"), store, backend=backend).load(stored)
    assert backend.options == []


def test_auto_parallel_takes_as_many_slots_as_half_the_spare_memory_holds(
    store: Store, stored: str
) -> None:
    smollm2 = shape_of_file(store.blob_path(store.resolve(ModelRef.parse(stored)).digest))
    options = FitOptions(ctx_tokens=4096)

    def ram(parallel: int) -> int:
        return estimate_memory(smollm2, replace(options, parallel=parallel)).ram_bytes

    backend = RecordingBackend()

    def slots(budget: int, parallel: int | str = "auto") -> int:
        settings = Settings(memory_budget_bytes=budget, ctx_tokens=4096, parallel=parallel)
        engine = Engine(settings, store, backend=backend)
        engine.load(stored)
        engine.close()
        return backend.options[-1].parallel

    assert Settings().parallel == "auto"
    assert slots(64 << 30) == 8  # the most, however much more there is
    # Four slots' extra memory is exactly half of what one slot leaves: four, not eight.
    exactly_four = ram(1) + 2 * (ram(4) - ram(1))
    assert slots(exactly_four) == 4 and slots(exactly_four - 1) == 2
    assert slots(ram(1)) == 1  # no room beside one: one, and the model still loads
    # A number is kept as it is, and refused with numbers when it does not fit.
    assert slots(64 << 30, parallel=3) == 3
    with pytest.raises(InsufficientMemoryError):
        slots(ram(2), parallel=3)


def test_auto_parallel_on_a_gpu_offloads_what_fits_with_the_slots_it_chose(
    store: Store, stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The slots are chosen first, as if everything stayed in RAM; the layers offloaded are then
    # those that fit in free VRAM beside that many slots' caches, never a plan for fewer slots.
    from llmedge.fit.memory import gpu_layers_that_fit
    from llmedge.hardware import probe_host
    from llmedge.hardware.probe import GpuFacts

    smollm2 = shape_of_file(store.blob_path(store.resolve(ModelRef.parse(stored)).digest))
    eight = FitOptions(ctx_tokens=4096, parallel=8)
    vram = estimate_memory(smollm2, eight, smollm2.n_layers + 1).vram_bytes // 2
    host = replace(probe_host(), gpus=(GpuFacts("nvidia", "test GPU", vram * 2, vram),))
    monkeypatch.setattr(guard, "probe_host", lambda: host)
    plan = guard.ensure_fits(
        store.blob_path(store.resolve(ModelRef.parse(stored)).digest),
        FitOptions(ctx_tokens=4096),
        64 << 30,
        parallel_max=8,
    )
    assert plan.parallel == 8
    assert 0 < plan.gpu_layers == gpu_layers_that_fit(smollm2, eight, vram) <= smollm2.n_layers
