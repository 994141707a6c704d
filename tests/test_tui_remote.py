"""`llmedge chat --url`: the same app against a real `llmedge serve` process on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("textual", reason="the tui extra is not installed")
pytest.importorskip("fastapi", reason="the server extra is not installed")

from textual.pilot import Pilot

from llmedge import ChatMessage, Engine, SamplingParams, Settings, Store, ensure_model
from llmedge.cli import main
from llmedge.errors import RemoteServerError
from tui.app import ChatApp
from tui.launch import build_app
from tui.pilot import Scenario, ask, last_note, run_scenario, submit, wait_until
from tui.widgets import StatusBar

pytestmark = pytest.mark.e2e

API_KEY = "chat-test-key"
QUESTION = "Write a python hello world"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`llmedge serve` on a free loopback port, with its own home and an API key."""
    home = tmp_path_factory.mktemp("server-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMEDGE_")}
    env.update(LLMEDGE_HOME=str(home), LLMEDGE_API_KEY=API_KEY, LLMEDGE_LOG_LEVEL="warning")
    process = subprocess.Popen(
        [sys.executable, "-m", "llmedge.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:  # keep draining, so that the server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("llmedge serving"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(60):
            pytest.fail("llmedge serve did not start:\n" + "".join(lines))
        yield next(line for line in lines if line.startswith("llmedge serving")).split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def play(url: str, scenario: Scenario, max_tokens: int = 24) -> ChatApp:
    app = build_app(Settings(), None, url, API_KEY)
    app.params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    return run_scenario(app, scenario)


def greedy_answer(question: str, max_tokens: int) -> str:
    """The answer the model gives in-process, for comparison."""
    settings = Settings()
    store = Store(settings.store_dir)
    engine = Engine(settings, store)
    try:
        model = ensure_model(store, settings.default_model).ref
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        prompt = engine.prepare_chat(model, [ChatMessage("user", question)], params)
        return "".join(chunk.text for chunk in engine.stream_sync(prompt))
    finally:
        engine.close()


def test_answers_stream_from_the_server(server_url: str, llmedge_home: Path) -> None:
    expected = greedy_answer(QUESTION, 24)
    assert "print(" in expected

    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        assert app.info.ref.startswith("smollm2-135m:")
        assert app.info.backend.startswith("server 127.0.0.1:")
        answer = await ask(pilot, app, QUESTION)
        assert answer == expected  # greedy, so the same as in-process: the settings got there
        last = app.last
        assert last is not None and last.finish_reason in ("stop", "length")
        assert last.prompt_tokens > 10 and last.tokens_per_s and last.tokens_per_s > 0
        assert app.status.ctx_used == last.prompt_tokens + last.generated_tokens
        status = str(app.query_one(StatusBar).render())
        assert app.info.ref in status and "tok/s" in status
        await pilot.press("/", "m", "o", "tab")
        assert [c.text for c in app.menu.choices] == [f"/model {app.info.ref}"]

    app = play(server_url, scenario)
    # The conversation is kept on this side, per model, like an in-process chat.
    kept = llmedge_home / "chats" / f"{app.info.ref.replace(':', '_')}.json"
    assert "print(" in kept.read_text()


def test_escape_stops_the_server_answer(server_url: str) -> None:
    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        await submit(pilot, app, "Tell me a very long story about a dragon who bakes bread.")
        await wait_until(pilot, lambda: app.last is not None and app.last.generated_tokens >= 5)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not app.answering)
        assert last_note(app).startswith("stopped after")
        assert app.conversation.messages[-1].role == "assistant"
        app.params = SamplingParams(temperature=0.0, max_tokens=4)
        assert await ask(pilot, app, "Say hi")  # the server is free again

    play(server_url, scenario, max_tokens=400)


def test_wrong_key_and_unreachable_server_say_what_to_do(
    server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RemoteServerError, match="refused the API key; pass --api-key KEY"):
        build_app(Settings(), None, server_url, "wrong")
    assert main(["chat", "--url", server_url, "--api-key", "wrong"]) == 1
    assert "refused the API key" in capsys.readouterr().err
    assert main(["chat", "--url", "http://127.0.0.1:9", "--api-key", API_KEY]) == 1
    assert "cannot reach http://127.0.0.1:9/v1" in capsys.readouterr().err
    assert main(["chat", "no-such-model", "--url", server_url, "--api-key", API_KEY]) == 1
    assert "the server has: smollm2-135m:" in capsys.readouterr().err
