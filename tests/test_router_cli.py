"""`llmedge route` as a subprocess, and the engine choosing its backend through the router."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmedge import Engine, Settings, Store
from llmedge.errors import BackendUnavailableError
from llmedge.hub import import_gguf
from llmedge.store import ModelRef


def route(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llmedge.cli", "route", *args]
    environment = {**os.environ, "LLMEDGE_HOME": str(home), **env}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def test_route_explains_its_choice(llmedge_home: Path) -> None:
    done = route(llmedge_home, "smollm2-135m")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "smollm2-135m -> llama.cpp (gguf: q4_1 (not pulled yet))"
    assert "  because: llama.cpp is the fastest engine on a CPU" in lines
    listed = {line.split()[0] for line in lines[lines.index("alternatives:") + 1 :]}
    assert {"llama.cpp", "mlx", "mlc", "remote"} <= listed
    assert "no remote engine configured" in done.stdout


def test_route_json_and_remote(llmedge_home: Path) -> None:
    done = route(llmedge_home, "smollm2-135m", "--json", "--remote", "http://127.0.0.1:9/v1")
    decision = json.loads(done.stdout)
    assert decision["backend"] == "llama.cpp"
    assert decision["artifact"]["format"] == "gguf"
    remote = decision["alternatives"][-1]
    assert remote == {
        "backend": "remote",
        "format": None,
        "verdict": "usable",
        "reason": "http://127.0.0.1:9/v1; used when no local backend can run the model",
    }


def test_route_refuses_with_numbers(llmedge_home: Path) -> None:
    done = route(llmedge_home, "smollm2-135m", LLMEDGE_MEMORY_BUDGET_BYTES="64MiB")
    assert done.returncode == 1
    assert done.stdout.startswith("smollm2-135m: refused")
    assert "but 0.06 GiB is available (LLMEDGE_MEMORY_BUDGET_BYTES)" in done.stdout
    assert "cannot run here" in done.stderr


def test_route_unknown_backend_lists_the_valid_ones(llmedge_home: Path) -> None:
    done = route(llmedge_home, "smollm2-135m", "--backend", "vllm")
    assert done.returncode == 1
    assert "unknown backend 'vllm'; valid backends: llama.cpp," in done.stderr
    assert "remote" in done.stderr


@pytest.fixture
def stored(store: Store, smollm2_gguf: Path) -> str:
    origin = {"kind": "file", "path": str(smollm2_gguf)}
    return import_gguf(store, smollm2_gguf, ModelRef("smollm2-135m"), origin).ref


def test_engine_routes_a_gguf_to_llama_cpp(settings: Settings, store: Store, stored: str) -> None:
    engine = Engine(settings, store)
    try:
        assert engine.backend_name is None
        decision = engine.route(stored)
        assert decision.backend == "llama.cpp" and decision.artifact is not None
        assert decision.artifact.ref == stored
        assert engine.load(stored).backend == "llama.cpp"
    finally:
        engine.close()


def test_engine_with_an_unknown_backend_fails_clearly(
    settings: Settings, store: Store, stored: str
) -> None:
    engine = Engine(settings, store, backend="vllm")
    try:
        with pytest.raises(BackendUnavailableError, match="valid backends"):
            engine.load(stored)
    finally:
        engine.close()
