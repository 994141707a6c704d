"""A conversation, and where it is kept: per-model history under `home`, and /save, /load files.

Layout under `Settings.home`::

    chats/<model>.json      the conversation with each model, restored when the chat restarts

A chat file is JSON: {"version": 1, "model": ..., "system": ..., "messages": [{role, content}]}.
`/save NAME.md` writes a Markdown transcript instead, for reading (it cannot be loaded back).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmedge import ChatMessage, InvalidRequestError
from llmedge.files import write_text_atomic

FORMAT_VERSION = 1
_ROLES: dict[object, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
}


@dataclass
class Conversation:
    """The messages so far with one model, and the system message that leads them."""

    model: str
    system: str | None = None
    messages: list[ChatMessage] = field(default_factory=list)

    def prompt(self) -> list[ChatMessage]:
        """What the model is sent: the system message (when set), then the turns."""
        lead = [ChatMessage("system", self.system)] if self.system else []
        return [*lead, *self.messages]

    def to_json(self) -> str:
        data = {
            "version": FORMAT_VERSION,
            "model": self.model,
            "system": self.system,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
        }
        return json.dumps(data, ensure_ascii=False, indent=1)

    def to_markdown(self) -> str:
        lines = [f"# Chat with {self.model}", ""]
        if self.system:
            lines += [f"**system:** {self.system}", ""]
        for message in self.messages:
            lines += [f"**{message.role}:**", "", message.content, ""]
        return "\n".join(lines)

    @classmethod
    def from_json(cls, text: str, source: str) -> Conversation:
        """A conversation read back from `to_json`; `source` names the file in errors."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} chat file")
            messages = [_message(item) for item in data["messages"]]
            system = data.get("system")
            if system is not None and not isinstance(system, str):
                raise ValueError("'system' is not text")
            return cls(str(data["model"]), system, messages)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequestError(
                f"{source} is not a chat saved by /save ({exc}); pick a .json file it wrote"
            ) from exc


def _message(item: Any) -> ChatMessage:
    role, content = _ROLES.get(item["role"]), item["content"]
    if role is None or not isinstance(content, str):
        raise ValueError(f"bad message {str(item)[:80]}")
    return ChatMessage(role, content)


def history_path(home: Path, model: str) -> Path:
    """Where the conversation with `model` is kept between runs."""
    safe = re.sub(r"[^a-z0-9._-]+", "_", model.lower()).strip("._") or "model"
    return home / "chats" / f"{safe}.json"


def load_history(home: Path, model: str) -> Conversation:
    """The kept conversation with `model`; a fresh one when there is none or it is unreadable."""
    path = history_path(home, model)
    try:
        kept = Conversation.from_json(path.read_text(encoding="utf-8"), str(path))
    except (OSError, InvalidRequestError):
        return Conversation(model)
    return Conversation(model, kept.system, kept.messages)


def save_history(home: Path, conversation: Conversation) -> None:
    write_text_atomic(history_path(home, conversation.model), conversation.to_json())


def save_file(path: Path, conversation: Conversation) -> Path:
    """Write the chat to `path` (Markdown for .md, else JSON); returns the absolute path."""
    path = path.expanduser().resolve()
    text = conversation.to_markdown() if path.suffix.lower() == ".md" else conversation.to_json()
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot write {path}: {exc.strerror}; pick another path"
        ) from exc
    return path


def load_file(path: Path) -> Conversation:
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot read {path}: {exc.strerror}; give the path /save wrote"
        ) from exc
    return Conversation.from_json(text, str(path))
