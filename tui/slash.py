"""What each slash command does to the running chat."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from llmedge import GenerationChunk, InvalidRequestError, LlmedgeError, SamplingParams
from tui.client import ChatClient, ModelInfo
from tui.commands import COMMANDS, SlashCommand, apply_settings, describe_settings
from tui.session import Conversation, history_path, load_file, save_file
from tui.widgets import ModelPicker, Status


class ChatApp(Protocol):
    """What the slash commands use of the chat app (`tui.app.ChatApp` implements it)."""

    client: ChatClient
    home: Path
    params: SamplingParams
    info: ModelInfo
    conversation: Conversation
    last: GenerationChunk | None
    stop_requested: bool
    status: Status

    async def say(self, text: str, error: bool = False) -> None: ...

    def keep(self) -> None: ...

    def load_model(self, name: str) -> None: ...

    async def render_conversation(self) -> None: ...

    async def refresh_context(self) -> None: ...

    def exit(self) -> None: ...

    def push_screen(self, screen: Any, callback: Callable[[str | None], None]) -> Any: ...


KEYS = (
    ("Enter", "send"),
    ("Shift+Enter, Ctrl+J", "new line"),
    ("Esc, Ctrl+C", "stop the answer"),
    ("Tab", "take the highlighted completion"),
    ("Up, Down", "earlier messages you sent"),
    ("Ctrl+D, Ctrl+Q", "quit"),
)


def help_text() -> str:
    rows = [f"- `{f'{c.name} {c.args}'.rstrip()}` {c.help}" for c in COMMANDS]
    keys = " · ".join(f"**{key}** {what}" for key, what in KEYS)
    return "\n".join(["**Commands** (Tab completes them)", "", *rows, "", keys])


def _mib(size_bytes: int | None) -> str:
    return "-" if size_bytes is None else f"{size_bytes / 2**20:.0f} MiB"


def stats_text(app: ChatApp) -> str:
    last, info = app.last, app.info
    rows = [
        ("model", f"{info.ref} · {info.backend} · {info.quantization or '?'}"),
        ("context", f"{app.status.ctx_used or 0} of {info.ctx_tokens or '?'} tokens"),
        ("memory", _mib(app.client.memory_bytes())),
        ("sampling", describe_settings(app.params)),
        ("system", app.conversation.system or "-"),
        ("history", str(history_path(app.home, info.ref))),
    ]
    if last is not None:
        speed = f" at {last.tokens_per_s:.1f} tok/s" if last.tokens_per_s else ""
        prompt_speed = (
            f" at {last.prompt_tokens_per_s:.0f} tok/s" if last.prompt_tokens_per_s else ""
        )
        ttft = last.time_to_first_token_s
        rows[1:1] = [
            ("prompt", f"{last.prompt_tokens} tokens ({last.cached_tokens} cached){prompt_speed}"),
            ("answer", f"{last.generated_tokens} tokens{speed}"),
            ("first token", "-" if ttft is None else f"{ttft:.2f} s"),
            ("finish", last.finish_reason or ("stopped" if app.stop_requested else "-")),
        ]
        if last.peak_memory_bytes:
            rows.insert(6, ("peak memory", _mib(last.peak_memory_bytes)))
    else:
        rows.insert(1, ("last answer", "none yet"))
    return "\n".join(f"- **{name}** {value}" for name, value in rows)


async def run_command(app: ChatApp, command: SlashCommand) -> None:
    """Carry out `command`; a mistake is shown in the chat, never raised."""
    try:
        await _run(app, command.name, command.arg)
    except LlmedgeError as exc:
        await app.say(str(exc), error=True)


async def _run(app: ChatApp, name: str, arg: str) -> None:
    if name == "/help":
        await app.say(help_text())
    elif name == "/model":
        await _model(app, arg)
    elif name == "/system":
        app.conversation.system = arg or None
        app.keep()
        await app.say(f"system message: {arg}" if arg else "system message removed")
        await app.refresh_context()
    elif name == "/set":
        if arg:
            app.params = apply_settings(app.params, arg)
        await app.say(f"`{describe_settings(app.params)}`")
    elif name == "/clear":
        app.conversation.messages.clear()
        app.keep()
        await app.render_conversation()
        await app.say("conversation cleared")
        await app.refresh_context()
    elif name == "/save":
        path = save_file(Path(_needs(arg, "/save FILE")), app.conversation)
        await app.say(f"saved to `{path}`")
    elif name == "/load":
        await _load(app, Path(_needs(arg, "/load FILE")))
    elif name == "/stats":
        await app.say(stats_text(app))
    elif name == "/quit":
        app.exit()


def _needs(arg: str, usage: str) -> str:
    if not arg:
        raise InvalidRequestError(f"this command needs a file: {usage}")
    return arg


async def _model(app: ChatApp, name: str) -> None:
    if name:
        if name != app.info.ref:
            app.keep()
            app.load_model(name)
        return
    models = await app.client.models()
    if not models:
        await app.say("no model is stored; run `llmedge pull smollm2-135m`", error=True)
        return

    def picked(choice: str | None) -> None:
        if choice and choice != app.info.ref:
            app.keep()
            app.load_model(choice)

    app.push_screen(ModelPicker(models, app.info.ref), picked)


async def _load(app: ChatApp, path: Path) -> None:
    loaded = load_file(path)
    app.conversation = Conversation(app.info.ref, loaded.system, loaded.messages)
    app.keep()
    await app.render_conversation()
    note = f"loaded {len(loaded.messages)} messages from `{path}`"
    if loaded.model != app.info.ref:
        note += f" (a chat with {loaded.model}; it goes on with {app.info.ref})"
    await app.say(note)
    await app.refresh_context()
