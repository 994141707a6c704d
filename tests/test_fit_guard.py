"""The load-time guard: `Engine.load`, `run` and `serve` refuse a model that will not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_backend import ScriptedBackend
from test_fit_cli import llmedge

from llmedge import Engine, InsufficientMemoryError, Settings, Store, pull


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
