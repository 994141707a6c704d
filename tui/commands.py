"""Slash commands: what they are, how a typed line parses, and what completes it. No UI here."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from llmedge import InvalidRequestError, SamplingParams


@dataclass(frozen=True)
class CommandSpec:
    name: str
    args: str
    help: str


COMMANDS = (
    CommandSpec("/help", "", "list commands and keys"),
    CommandSpec("/model", "[NAME]", "switch model (no name: pick from the stored ones)"),
    CommandSpec("/system", "[TEXT]", "set the system message (no text: remove it)"),
    CommandSpec("/set", "KEY=VALUE …", "sampling, e.g. temperature=0.7 top_p=0.9 max_tokens=512"),
    CommandSpec("/clear", "", "forget this conversation and start again"),
    CommandSpec("/save", "FILE", "save the chat (.json to load back, .md to read)"),
    CommandSpec("/load", "FILE", "load a chat saved with /save"),
    CommandSpec("/stats", "", "speed, tokens and memory of the last answer"),
    CommandSpec("/quit", "", "leave (also Ctrl+D on an empty line, or Ctrl+Q)"),
)
_ALIASES = {"/exit": "/quit", "/bye": "/quit", "/?": "/help"}
_NAMES = {spec.name for spec in COMMANDS}


@dataclass(frozen=True)
class SlashCommand:
    name: str
    arg: str


def parse_command(text: str) -> SlashCommand | None:
    """The command a typed line holds, or None for a message (`//x` sends the message `/x`)."""
    text = text.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    word, _, arg = text.partition(" ")
    name = _ALIASES.get(word.lower(), word.lower())
    if name not in _NAMES:
        raise InvalidRequestError(f"unknown command {word}; type /help for the list")
    return SlashCommand(name, arg.strip())


def message_text(text: str) -> str:
    """The message a typed line sends: `//x` becomes `/x`."""
    return text[1:] if text.startswith("//") else text


# --- /set --------------------------------------------------------------------------------


def _number(kind: Callable[[str], float], low: float | None, high: float | None) -> Parser:
    def parse(text: str) -> float | None:
        value = kind(text)
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _optional_int(low: int) -> Parser:
    def parse(text: str) -> float | None:
        if text.lower() in ("none", "off", "default"):
            return None
        value = int(text)
        if value < low:
            raise ValueError(f"must be at least {low}, or none")
        return value

    return parse


Parser = Callable[[str], float | None]
SETTINGS: dict[str, Parser] = {
    "temperature": _number(float, 0.0, 2.0),
    "top_p": _number(float, 0.0, 1.0),
    "top_k": _number(int, 0, None),
    "min_p": _number(float, 0.0, 1.0),
    "max_tokens": _optional_int(1),
    "repeat_penalty": _number(float, 0.0, None),
    "presence_penalty": _number(float, -2.0, 2.0),
    "frequency_penalty": _number(float, -2.0, 2.0),
    "seed": _optional_int(0),
}


def apply_settings(params: SamplingParams, arg: str) -> SamplingParams:
    """`params` with `KEY=VALUE …` applied; the message of an error names the valid keys."""
    changes: dict[str, float | None] = {}
    for word in arg.split():
        key, sep, value = word.partition("=")
        key = key.replace("-", "_").lower()
        if key not in SETTINGS or not sep:
            known = ", ".join(SETTINGS)
            raise InvalidRequestError(
                f"cannot set {word!r}; write KEY=VALUE with KEY one of {known}"
            )
        try:
            changes[key] = SETTINGS[key](value)
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else "not a number"
            raise InvalidRequestError(f"{key}={value}: {reason}") from None
    return replace(params, **changes)  # type: ignore[arg-type]


def describe_settings(params: SamplingParams) -> str:
    return " ".join(f"{key}={getattr(params, key)}" for key in SETTINGS)


# --- completion --------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """One way to finish the input line: the whole new line, and what to show for it."""

    text: str
    label: str
    help: str = ""
    # What Enter does while this one is highlighted: run it, fill it in, or send what was typed.
    enter: Literal["run", "fill", "ignore"] = "run"


def complete(text: str, models: Sequence[str], cwd: Path | None = None) -> list[Completion]:
    """Ways to finish a slash command being typed; empty when `text` is not one."""
    if not text.startswith("/") or "\n" in text or text.startswith("//"):
        return []
    word, space, arg = text.partition(" ")
    if not space:
        return [
            Completion(
                f"{spec.name} " if spec.args else spec.name,
                spec.name,
                spec.help,
                enter="run" if not spec.args or spec.args.startswith("[") else "fill",
            )
            for spec in COMMANDS
            if spec.name.startswith(word.lower()) and spec.name != text
        ]
    name = _ALIASES.get(word.lower(), word.lower())
    if name == "/model":
        return [Completion(f"/model {m}", m) for m in models if m.startswith(arg) and m != arg]
    if name == "/set":
        head, _, last = arg.rpartition(" ")
        prefix = f"/set {head} " if head else "/set "
        return [
            Completion(f"{prefix}{key}=", f"{key}=", enter="ignore")
            for key in SETTINGS
            if key.startswith(last) and "=" not in last
        ]
    if name in ("/save", "/load"):
        return [
            Completion(f"{name} {path}", path, enter="ignore")
            for path in _paths(arg, cwd or Path.cwd())
        ]
    return []


def _paths(partial: str, cwd: Path) -> list[str]:
    """Files and folders that start with `partial` (folders end with /), at most 20."""
    folder, _, stem = partial.rpartition("/")
    base = Path(folder).expanduser() if folder else cwd
    if folder and not base.is_absolute():
        base = cwd / base
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith(stem) and not entry.name.startswith("."):
            shown = f"{folder}/{entry.name}" if folder else entry.name
            found.append(shown + "/" if entry.is_dir() else shown)
    return found[:20]
