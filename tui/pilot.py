"""Driving the chat app under Textual's Pilot: shared by the tests and the screenshot script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from textual.pilot import Pilot

from tui.app import ChatApp
from tui.widgets import AssistantMessage, Note

Scenario = Callable[[Pilot[None], ChatApp], Coroutine[Any, Any, None]]
SIZE = (100, 32)


def run_scenario(app: ChatApp, scenario: Scenario) -> ChatApp:
    """Run `scenario` against `app` under the Pilot, once its first model is ready."""

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until_ready(pilot, app)
            await scenario(pilot, app)

    asyncio.run(drive())
    return app


async def wait_until(
    pilot: Pilot[None], condition: Callable[[], bool], timeout_s: float = 60.0
) -> None:
    """Let the app run until `condition` holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the chat app did not get there within {timeout_s:.0f} s")
        await pilot.pause(0.05)


async def until_ready(pilot: Pilot[None], app: ChatApp, timeout_s: float = 120.0) -> None:
    """Wait until no model is loading (the app loads one as it starts)."""
    await wait_until(pilot, lambda: not app.loading and bool(app.status.backend), timeout_s)


async def submit(pilot: Pilot[None], app: ChatApp, text: str, typed: bool = False) -> None:
    """Put `text` in the message box (key by key when `typed`) and press Enter."""
    if typed:
        await pilot.press(*text)
    else:
        app.prompt.load_text(text)
    await pilot.press("enter")


async def ask(
    pilot: Pilot[None], app: ChatApp, text: str, typed: bool = False, timeout_s: float = 120.0
) -> str:
    """Send a message and wait for the whole answer; returns the answer's Markdown."""
    before = len(app.query(AssistantMessage))
    await submit(pilot, app, text, typed)
    await wait_until(pilot, lambda: not app.answering, timeout_s)
    views = app.query(AssistantMessage)
    if len(views) <= before:
        raise AssertionError(f"no answer came; the chat said: {last_note(app)}")
    return views.last().source


def last_note(app: ChatApp) -> str:
    notes = app.query(Note)
    return notes.last().source if notes else ""
