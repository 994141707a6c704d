"""`llmedge chat` in-process, driven by Textual's Pilot on the real SmolLM2-135M model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual", reason="the tui extra is not installed")

from textual import events
from textual.pilot import Pilot

from llmedge import Engine, GenerationChunk, SamplingParams, Settings, Store, ensure_model, pull
from llmedge.cli import main
from tui.app import ChatApp
from tui.local import LocalClient
from tui.pilot import Scenario, ask, last_note, run_scenario, submit, until_ready, wait_until
from tui.widgets import AssistantMessage, ModelPicker, StatusBar, UserMessage

pytestmark = pytest.mark.e2e

LONG_STORY = "Tell me a very long story about a dragon who learns to bake bread."


@pytest.fixture
def model(store: Store, settings: Settings) -> str:
    return ensure_model(store, settings.default_model).ref


@pytest.fixture
def play(settings: Settings, store: Store, model: str) -> Callable[..., ChatApp]:
    """Run a scenario against a fresh chat app on the real model; returns the app afterwards."""

    def run(scenario: Scenario, max_tokens: int = 24) -> ChatApp:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        app = ChatApp(LocalClient(Engine(settings, store)), model, settings.home, params)
        return run_scenario(app, scenario)

    return run


def status_text(app: ChatApp) -> str:
    return str(app.query_one(StatusBar).render())


def test_typed_message_streams_a_markdown_answer_with_highlighted_code(
    play: Callable[..., ChatApp], model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []  # what the answer showed at each redraw while it streamed
    append = AssistantMessage.append

    def recording_append(self: AssistantMessage, text: str) -> object:
        result = append(self, text)
        seen.append(self.source)
        return result

    monkeypatch.setattr(AssistantMessage, "append", recording_append)

    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        await submit(pilot, app, "Write a python hello world", typed=True)
        await wait_until(pilot, lambda: bool(app.query(AssistantMessage)))
        view = app.query_one(AssistantMessage)
        await wait_until(pilot, lambda: not app.answering)
        answer = view.source
        assert answer == app.conversation.messages[-1].content
        assert "print(" in answer
        assert view.query("MarkdownFence"), "the code block is rendered as a code fence"
        assert str(app.query_one(UserMessage).content) == "Write a python hello world"
        status = status_text(app)
        assert model in status and "llama.cpp" in status and "ctx " in status
        assert app.status.tokens_per_s and app.status.tokens_per_s > 0
        assert app.status.ctx_used and app.status.ctx_used > 20
        assert app.status.memory_bytes and app.status.memory_bytes > 50 << 20

    app = play(scenario, max_tokens=60)
    final = app.conversation.messages[-1].content
    assert any(0 < len(text) < len(final) for text in seen), [len(t) for t in seen]


def test_escape_and_ctrl_c_stop_the_answer_without_leaving(
    play: Callable[..., ChatApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each answer is held after its 5th token until the stop key is pressed: on a busy host the
    # keys could otherwise land after the story ended, with nothing left to stop. A stop that
    # fails lets it go on to its 400 tokens, which the test sees.
    pressed = asyncio.Event()
    stream = LocalClient.stream

    async def held(self: LocalClient, *args: Any) -> AsyncIterator[GenerationChunk]:
        async for chunk in stream(self, *args):
            yield chunk
            if chunk.generated_tokens >= 5:
                await pressed.wait()

    monkeypatch.setattr(LocalClient, "stream", held)

    async def stop_with(pilot: Pilot[None], app: ChatApp, key: str) -> int:
        before = app.last
        pressed.clear()

        def streaming_a_while() -> bool:
            return (
                app.last is not before and app.last is not None and app.last.generated_tokens >= 5
            )

        await submit(pilot, app, LONG_STORY)
        await wait_until(pilot, streaming_a_while)
        await submit(pilot, app, "a second question")  # refused while answering
        assert app.prompt.text == "a second question"
        app.prompt.clear()
        await pilot.press(key)
        pressed.set()
        await wait_until(pilot, lambda: not app.answering)
        assert app.stop_requested and app.status.state == "stopped"
        generated = int(last_note(app).split()[2])
        assert 5 <= generated < 400
        return generated

    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        await stop_with(pilot, app, "escape")
        partial = app.conversation.messages[-1]
        assert partial.role == "assistant" and partial.content
        await stop_with(pilot, app, "ctrl+c")
        assert len(app.conversation.messages) == 4
        await pilot.press("ctrl+c")  # nothing to stop: the chat stays
        assert app.is_running
        await submit(pilot, app, "/clear")
        app.params = replace(app.params, max_tokens=4)
        assert await ask(pilot, app, "Say hi")

    play(scenario, max_tokens=400)


def test_multiline_input_and_paste(play: Callable[..., ChatApp]) -> None:
    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        await pilot.press("a", "shift+enter", "b", "ctrl+j", "c")
        assert app.prompt.text == "a\nb\nc"
        app.post_message(events.Paste("\npasted\nlines"))  # as the terminal sends it
        await pilot.pause()
        assert app.prompt.text == "a\nb\nc\npasted\nlines"
        assert not app.answering, "newlines, typed or pasted, do not send"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not app.answering)
        assert app.conversation.messages[0].content == "a\nb\nc\npasted\nlines"
        await pilot.press("up")  # recalls what was sent
        assert app.prompt.text == "a\nb\nc\npasted\nlines"

    play(scenario, max_tokens=4)


def test_slash_commands(play: Callable[..., ChatApp], tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"

    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        await submit(pilot, app, "/help")
        assert "/model [NAME]" in last_note(app) and "Ctrl+J" in last_note(app)
        await submit(pilot, app, "/set temperature=0 max_tokens=8 top_k=20")
        assert (app.params.max_tokens, app.params.top_k) == (8, 20)
        await submit(pilot, app, "/set temperature=5")
        assert "between 0.0 and 2.0" in last_note(app)
        await submit(pilot, app, "/system You are a pirate.")
        assert app.conversation.system == "You are a pirate."
        await ask(pilot, app, "Who are you?")
        assert app.last is not None and app.last.generated_tokens <= 8
        await submit(pilot, app, "/stats")
        stats = last_note(app)
        assert "tok/s" in stats and "max_tokens=8" in stats and "You are a pirate." in stats
        await submit(pilot, app, f"/save {saved}")
        assert saved.is_file() and str(saved) in last_note(app)
        await submit(pilot, app, "/clear")
        assert app.conversation.messages == [] and not app.query(UserMessage)
        await submit(pilot, app, f"/load {saved}")
        assert [m.role for m in app.conversation.messages] == ["user", "assistant"]
        assert len(app.query(UserMessage)) == 1
        await submit(pilot, app, "/nope")
        assert "unknown command /nope" in last_note(app)
        await submit(pilot, app, "/quit")
        await wait_until(pilot, lambda: not app.is_running)

    play(scenario)


def test_tab_completes_commands_and_model_names(play: Callable[..., ChatApp], model: str) -> None:
    async def scenario(pilot: Pilot[None], app: ChatApp) -> None:
        await pilot.press("/", "m", "o")
        assert app.menu.display and app.menu.choices[0].text == "/model "
        await pilot.press("tab")
        assert app.prompt.text == "/model "
        assert [c.text for c in app.menu.choices] == [f"/model {model}"]
        await pilot.press("tab")
        assert app.prompt.text == f"/model {model}"
        await pilot.press("enter")
        app.prompt.clear()
        await pilot.press("/", "h", "e", "enter")  # a command that needs nothing runs at once
        assert "/model [NAME]" in last_note(app)
        await pilot.press("/", "s", "escape")
        assert not app.menu.display and app.prompt.text == "/s"

    play(scenario)


def test_model_picker_switches_and_history_is_kept_per_model(
    play: Callable[..., ChatApp], store: Store, model: str, smollm2_gguf: Path
) -> None:
    other = pull(store, str(smollm2_gguf), name="tiny").ref

    async def first_run(pilot: Pilot[None], app: ChatApp) -> None:
        await ask(pilot, app, "Hello")
        await submit(pilot, app, "/model")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: app.info.ref == other and not app.loading)
        assert app.conversation.messages == [] and other in status_text(app)
        await ask(pilot, app, "What is 2+2?")
        await submit(pilot, app, f"/model {model}")
        await wait_until(pilot, lambda: app.info.ref == model and not app.loading)
        assert app.conversation.messages[0].content == "Hello"

    play(first_run, max_tokens=8)

    async def second_run(pilot: Pilot[None], app: ChatApp) -> None:
        assert [m.role for m in app.conversation.messages] == ["user", "assistant"]
        assert "2 earlier messages" in last_note(app)
        assert len(app.query(AssistantMessage)) == 1
        assert app.status.ctx_used and app.status.ctx_used > 10

    play(second_run, max_tokens=8)


def test_no_stored_model_says_how_to_pull_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "no-such-model"]) == 1
    error = capsys.readouterr().err
    assert "no model is stored yet; run `llmedge pull smollm2-135m`" in error


def test_a_message_too_long_for_the_context_is_given_back(
    settings: Settings, store: Store, model: str
) -> None:
    small = settings.with_overrides(ctx_tokens=64)
    app = ChatApp(LocalClient(Engine(small, store)), model, small.home, SamplingParams())
    long_message = "Please summarise this: " + "the cat sat on the mat " * 80

    async def drive() -> None:
        async with app.run_test(size=(100, 32)) as pilot:
            await until_ready(pilot, app)
            limit = app.status.ctx_limit  # 64 asked; the backend may round it up
            assert limit is not None and limit < 400
            await submit(pilot, app, long_message)
            await wait_until(pilot, lambda: not app.answering)
            assert f"the context holds {limit}" in last_note(app) and "--ctx" in last_note(app)
            assert app.prompt.text == long_message, "the message is back in the box"
            assert app.conversation.messages == [] and not app.query(UserMessage)

    asyncio.run(drive())
