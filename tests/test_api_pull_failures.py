"""/api/pull never answers success for a pull that failed, however it failed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fake_backend import ScriptedBackend
from scripted_server import serving

from llmedge import Engine, Settings, Store
from llmedge.errors import HashMismatchError


@pytest.fixture
def base(settings: Settings, store: Store) -> Iterator[str]:
    engine = Engine(settings, store, backend=ScriptedBackend())
    with serving(engine) as url:
        yield url


@pytest.mark.parametrize(
    ("failure", "status", "said"),
    [
        (RuntimeError("socket gone"), 502, "the pull of smollm2-1.7b failed (RuntimeError"),
        (OSError(28, "No space left on device"), 502, "failed (OSError"),
        (HashMismatchError("o/r", "m.gguf", "a" * 64, "b" * 64), 502, "arrived damaged"),
    ],
)
def test_a_failed_pull_ends_in_an_error_never_success(
    base: str, monkeypatch: pytest.MonkeyPatch, failure: Exception, status: int, said: str
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr("server.ollama_models.pull_or_update", failing)
    streamed = httpx.post(f"{base}/api/pull", json={"model": "smollm2-1.7b"}, timeout=30)
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert said in lines[-1]["error"] and all(line.get("status") != "success" for line in lines)
    whole = httpx.post(f"{base}/api/pull", json={"model": "smollm2-1.7b", "stream": False})
    assert whole.status_code == status and said in whole.json()["error"]
