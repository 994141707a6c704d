"""The chat app: a conversation view, a message box, slash commands and a status bar."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import TextArea

from llmedge import ChatMessage, GenerationChunk, InvalidRequestError, LlmedgeError, SamplingParams
from tui.client import ChatClient, ModelInfo
from tui.commands import complete, message_text, parse_command
from tui.session import Conversation, load_history, save_history
from tui.slash import run_command
from tui.widgets import (
    AssistantMessage,
    CompletionMenu,
    Note,
    PromptInput,
    Status,
    StatusBar,
    UserMessage,
)

CSS = """
#chat { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
.user { margin: 1 0 0 0; padding: 0 1; border-left: wide $accent; background: $boost; }
.assistant { margin: 1 0 0 0; padding: 0 1; }
.assistant > MarkdownBlock:first-child { margin-top: 0; }
.assistant > MarkdownBlock:last-child, .note > MarkdownBlock:last-child { margin-bottom: 0; }
.note { margin: 1 0 0 0; padding: 0 1; color: $text-muted; border-left: wide $panel; }
.error { color: $text-error; border-left: wide $error; }
#completions { height: auto; max-height: 10; display: none; border: none; }
#prompt { height: auto; max-height: 12; border: round $accent; padding: 0 1; }
#status { height: 1; background: $panel; color: $text; }
ModelPicker { align: center middle; }
#picker-title { width: 60; padding: 0 1; background: $accent; }
#picker { width: 60; max-height: 20; border: round $accent; }
"""

REDRAW_EVERY_S = 0.1  # how often a streaming answer and its tokens/s readout are redrawn


class ChatApp(App[None]):
    """Chat with one model at a time through a `ChatClient`."""

    TITLE = "llmedge chat"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False  # slash commands are the command line here
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "escape", "stop the answer", priority=True),
        Binding("ctrl+c", "interrupt", "stop the answer", priority=True, show=False),
        Binding("ctrl+d", "quit_if_empty", "quit", priority=True, show=False),
        Binding("tab", "accept_completion", show=False, priority=True),
        Binding("up", "move_completion(-1)", show=False, priority=True),
        Binding("down", "move_completion(1)", show=False, priority=True),
        Binding("pageup", "scroll_chat(-1)", show=False, priority=True),
        Binding("pagedown", "scroll_chat(1)", show=False, priority=True),
    ]

    def __init__(
        self,
        client: ChatClient,
        model: str,
        home: Path,
        params: SamplingParams | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.home = home
        self.params = params or SamplingParams()
        self.info = ModelInfo(ref=model, backend="")
        self.conversation = Conversation(model)
        self.models: list[str] = []
        self.last: GenerationChunk | None = None
        self.loading = False  # while a model loads (and its history with it)
        self.answering = False  # from Enter until the answer is recorded
        self.streaming = False  # while the answer streams in (and can be stopped)
        self.stop_requested = False
        self.status = Status(model=model)

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="chat", can_focus=False)  # keys stay with the message box
        yield CompletionMenu()
        yield PromptInput()
        yield StatusBar()

    def on_mount(self) -> None:
        self.sub_title = self.client.where
        self.chat.anchor()
        self.prompt.focus()
        self.load_model(self.info.ref)

    async def on_unmount(self) -> None:
        await self.client.close()

    # --- parts ---------------------------------------------------------------------------

    @property
    def chat(self) -> VerticalScroll:
        return self.query_one("#chat", VerticalScroll)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def menu(self) -> CompletionMenu:
        return self.query_one(CompletionMenu)

    async def say(self, text: str, error: bool = False) -> None:
        """Show a note from llmedge (Markdown) in the conversation."""
        await self.show(Note(text, error=error))

    async def show(self, widget: Widget) -> None:
        await self.chat.mount(widget)
        self.chat.scroll_end(animate=False)

    def set_status(self, **changes: Any) -> None:
        self.status = replace(self.status, **changes)
        self.query_one(StatusBar).show(self.status)

    # --- models and history --------------------------------------------------------------

    def load_model(self, name: str) -> None:
        """Switch to `name` in the background; the message box stays usable meanwhile."""
        self.loading = True
        self.run_worker(self.switch_model(name), group="model", exclusive=True)

    async def switch_model(self, name: str) -> bool:
        """Make `name` the model in use and show the conversation kept with it."""
        self.loading = True
        try:
            return await self._switch_model(name)
        finally:
            self.loading = False

    async def _switch_model(self, name: str) -> bool:
        self.set_status(state=f"loading {name}…")
        try:
            info = await self.client.open(name)
            self.models = await self.client.models()
        except LlmedgeError as exc:
            self.set_status(state="")
            await self.say(f"cannot use {name}: {exc}", error=True)
            return False
        self.info = info
        self.conversation = load_history(self.home, info.ref)
        self.last = None
        await self.render_conversation()
        self.prompt.remember_all(m.content for m in self.conversation.messages if m.role == "user")
        if self.conversation.messages:
            count = len(self.conversation.messages)
            await self.say(f"{count} earlier messages with {info.ref} (`/clear` starts afresh)")
        else:
            await self.say(f"Chatting with **{info.ref}** · `/help` lists commands and keys")
        self.set_status(
            model=info.ref,
            backend=info.backend,
            quantization=info.quantization,
            ctx_limit=info.ctx_tokens,
            tokens_per_s=None,
            memory_bytes=self.client.memory_bytes(),
            state="",
        )
        await self.refresh_context()
        return True

    async def render_conversation(self) -> None:
        """Show the conversation's messages, in place of whatever the view held."""
        await self.chat.remove_children()
        views = [
            UserMessage(m.content) if m.role == "user" else AssistantMessage(m.content)
            for m in self.conversation.messages
        ]
        if views:
            await self.chat.mount_all(views)
        self.chat.scroll_end(animate=False)

    async def refresh_context(self) -> None:
        """Count the conversation's tokens again (after it changed other than by an answer)."""
        used = await self.client.count_tokens(self.info.ref, self.conversation.prompt())
        self.set_status(ctx_used=used)

    def keep(self) -> None:
        """Save the conversation, so that the next `llmedge chat` with this model resumes it."""
        try:
            save_history(self.home, self.conversation)
        except OSError as exc:
            self.notify(f"cannot keep the chat history: {exc}", severity="warning")

    # --- input ---------------------------------------------------------------------------

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area is self.prompt:
            self.menu.show(complete(self.prompt.text, self.models))

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        text = event.text
        if self.answering or self.loading:
            busy = (
                "the model is loading" if self.loading else "an answer is streaming; Esc stops it"
            )
            self.notify(busy, severity="warning")
            return
        choice = self.menu.chosen()
        if choice is not None and choice.text.strip() != text.strip():
            if choice.enter == "fill":
                self.action_accept_completion()
                return
            if choice.enter == "run":
                text = choice.text
        try:
            command = parse_command(text)
        except InvalidRequestError as exc:
            await self.say(str(exc), error=True)
            return
        self.prompt.remember(text)
        self.prompt.clear()
        if command is not None:
            await run_command(self, command)
        else:
            await self.ask(message_text(text))

    async def ask(self, text: str) -> None:
        self.conversation.messages.append(ChatMessage("user", text))
        question = UserMessage(text)
        self.answering, self.stop_requested = True, False  # set here, not when the worker starts
        await self.show(question)
        self.answer(question)

    # --- answering -----------------------------------------------------------------------

    @work(exclusive=True, group="answer")
    async def answer(self, question: UserMessage) -> None:
        """Stream the model's answer to the conversation into a new message."""
        view = AssistantMessage()
        parts: list[str] = []
        error: str | None = None
        self.streaming = True
        try:
            await self._stream_into(view, parts)
        except asyncio.CancelledError:
            if not self.stop_requested:
                self.streaming = self.answering = False
                raise  # the app is closing
        except LlmedgeError as exc:
            error = str(exc)
        except Exception as exc:  # an engine failure ends this answer, not the chat
            error = f"the answer failed ({type(exc).__name__}: {exc}); try again or /clear"
        self.streaming = False
        try:
            await self._finish(question, view, "".join(parts), error)
        finally:
            self.answering = False

    async def _stream_into(self, view: AssistantMessage, parts: list[str]) -> None:
        await self.show(view)
        self.set_status(state="answering… Esc stops")
        shown_at = 0.0
        messages = self.conversation.prompt()
        async for chunk in self.client.stream(self.info.ref, messages, self.params):
            self.last = chunk
            parts.append(chunk.text)
            # Redrawing for every token would take the CPU (and the GIL) from the model.
            if time.monotonic() - shown_at > REDRAW_EVERY_S:
                await view.append("".join(parts)[len(view.source) :])
                shown_at = time.monotonic()
                self.set_status(tokens_per_s=chunk.tokens_per_s)

    async def _finish(
        self, question: UserMessage, view: AssistantMessage, text: str, error: str | None
    ) -> None:
        if text:
            await view.append(text[len(view.source) :])
            self.conversation.messages.append(ChatMessage("assistant", text))
        else:
            # Nothing came back: forget the question, and give it back for another try.
            asked = self.conversation.messages.pop()
            if view.is_mounted:
                await view.remove()
            await question.remove()
            self.prompt.load_text(asked.content)
            self.prompt.move_cursor(self.prompt.document.end)
        if error is not None:
            await self.say(error, error=True)
        elif self.stop_requested:
            generated = self.last.generated_tokens if self.last and text else 0
            await self.say(f"stopped after {generated} tokens")
        self.keep()
        last = self.last
        used = self.status.ctx_used
        if last is not None and last.prompt_tokens and text:
            used = last.prompt_tokens + last.generated_tokens
        elif not text:
            used = await self.client.count_tokens(self.info.ref, self.conversation.prompt())
        self.set_status(
            ctx_used=used,
            tokens_per_s=last.tokens_per_s if last and text else self.status.tokens_per_s,
            memory_bytes=self.client.memory_bytes(),
            state="stopped" if self.stop_requested else "",
        )

    # --- keys ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "escape":
            return self.answering or bool(self.menu.display)
        if action in ("accept_completion", "move_completion"):
            return bool(self.menu.display) and self.focused is self.prompt
        if action == "quit_if_empty":
            return self.focused is self.prompt and not self.prompt.text
        return True

    def action_escape(self) -> None:
        if self.answering:
            self.action_stop()
        else:
            self.menu.show([])

    def action_stop(self) -> None:
        """Stop the answer being streamed; what came so far stays in the conversation."""
        if self.streaming:
            self.stop_requested = True
            self.workers.cancel_group(self, "answer")

    def action_interrupt(self) -> None:
        """Ctrl+C: stop the answer, else copy the selection, else empty the box; never quit."""
        if self.answering:
            self.action_stop()
        elif self.prompt.selected_text:
            self.prompt.action_copy()
        elif selected := self.screen.get_selected_text():
            self.copy_to_clipboard(selected)  # text selected with the mouse in the chat
            self.notify("copied")
        elif self.prompt.text:
            self.prompt.clear()
        else:
            self.notify("Ctrl+D, Ctrl+Q or /quit leaves")

    def action_quit_if_empty(self) -> None:
        self.exit()

    def action_accept_completion(self) -> None:
        choice = self.menu.chosen()
        if choice is not None:
            self.prompt.load_text(choice.text)
            self.prompt.move_cursor(self.prompt.document.end)

    def action_scroll_chat(self, pages: int) -> None:
        if pages < 0:
            self.chat.scroll_page_up()
        else:
            self.chat.scroll_page_down()

    def action_move_completion(self, step: int) -> None:
        if step < 0:
            self.menu.action_cursor_up()
        else:
            self.menu.action_cursor_down()
