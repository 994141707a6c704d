"""The chat screen's parts: the message box, messages, the completion menu, the status bar."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from tui.commands import Completion

# Terminals report Shift+Enter only with the kitty keyboard protocol; Ctrl+J and Alt+Enter
# reach every terminal, so all three add a line.
NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+j", "alt+enter", "ctrl+enter"})


class PromptInput(TextArea):
    """The message box: Enter sends, Shift+Enter or Ctrl+J adds a line, Up recalls a sent line."""

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self) -> None:
        super().__init__(
            soft_wrap=True,
            tab_behavior="focus",
            compact=True,
            highlight_cursor_line=False,
            placeholder="Message · Enter sends · Shift+Enter or Ctrl+J: new line · /help",
            id="prompt",
        )
        self._sent: list[str] = []
        self._recalled: int | None = None

    def remember_all(self, texts: Iterable[str]) -> None:
        """Make `texts` the lines Up recalls (the user's messages in a restored chat)."""
        self._sent = list(texts)
        self._recalled = None

    def remember(self, text: str) -> None:
        if not self._sent or self._sent[-1] != text:
            self._sent.append(text)
        self._recalled = None

    async def _on_key(self, event: events.Key) -> None:
        handled = True
        if event.key == "enter":
            if self.text.strip():
                self.post_message(self.Submitted(self.text))
        elif event.key in NEWLINE_KEYS:
            self.insert("\n")
        elif event.key == "up" and self.cursor_location[0] == 0 and self._sent:
            self._recall(-1)
        elif event.key == "down" and self._recalled is not None and self._on_last_row():
            self._recall(+1)
        else:
            handled = False
        if handled:  # else TextArea's own handler (run after this one) types the key
            event.stop()
            event.prevent_default()

    def _on_last_row(self) -> bool:
        return self.cursor_location[0] == self.document.line_count - 1

    def _recall(self, step: int) -> None:
        index = (len(self._sent) if self._recalled is None else self._recalled) + step
        if index >= len(self._sent):
            self._recalled = None
            self.load_text("")
            return
        self._recalled = max(index, 0)
        self.load_text(self._sent[self._recalled])
        self.move_cursor(self.document.end)


class CompletionMenu(OptionList):
    """Ways to finish the slash command being typed; Tab takes the highlighted one."""

    def __init__(self) -> None:
        super().__init__(id="completions")
        self.can_focus = False
        self.display = False
        self.choices: list[Completion] = []

    def show(self, choices: list[Completion]) -> None:
        if choices == self.choices:
            return  # most keys change nothing here; spare the redraw
        self.choices = choices
        width = max((len(c.label) for c in choices), default=0)
        self.set_options(
            Option(Text.assemble((c.label.ljust(width), "bold"), ("  " + c.help, "dim")))
            for c in choices
        )
        self.display = bool(choices)
        if choices:
            self.highlighted = 0

    def chosen(self) -> Completion | None:
        if not self.display or self.highlighted is None or not self.choices:
            return None
        return self.choices[self.highlighted]


class UserMessage(Static):
    """A message the user sent, shown as typed."""

    def __init__(self, text: str) -> None:
        super().__init__(Text(text), classes="user")


def chat_markdown() -> MarkdownIt:
    """GitHub-like Markdown in which a single newline breaks the line, as chat answers expect."""
    parser = MarkdownIt("gfm-like")

    def adapt(state: StateCore) -> None:
        for token in state.tokens:
            # Guessing an untagged block's language costs a third of a second per redraw.
            if token.type == "fence" and not token.info.strip():
                token.info = "text"
            for child in token.children or ():
                if child.type == "softbreak":
                    child.type = "hardbreak"

    parser.core.ruler.push("chat_answers", adapt)
    return parser


class AssistantMessage(Markdown):
    """An answer, rendered as Markdown with highlighted code blocks as it streams in."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text, classes="assistant", parser_factory=chat_markdown)


class Note(Markdown):
    """Something llmedge says in the chat: help, stats, what a command did, or an error."""

    def __init__(self, text: str, error: bool = False) -> None:
        super().__init__(text, classes="note error" if error else "note")


@dataclass(frozen=True)
class Status:
    """Everything the status bar shows."""

    model: str = "no model"
    backend: str = ""
    quantization: str | None = None
    ctx_used: int | None = None
    ctx_limit: int | None = None
    tokens_per_s: float | None = None
    memory_bytes: int | None = None
    state: str = ""


def format_status(status: Status) -> Text:
    """The status line; what is unknown (a server's context size or memory) is left out."""
    context = "?" if status.ctx_used is None else str(status.ctx_used)
    if status.ctx_limit is not None:
        context += f"/{status.ctx_limit}"
    speed = "-" if status.tokens_per_s is None else f"{status.tokens_per_s:.1f}"
    parts: list[tuple[str, str]] = [(f" {status.model} ", "bold reverse")]
    if status.backend:
        parts.append((f" {status.backend}", ""))
    if status.quantization:
        parts.append((f" · {status.quantization}", ""))
    parts += [(f" · ctx {context}", ""), (f" · {speed} tok/s", "")]
    if status.memory_bytes is not None:
        parts.append((f" · mem {status.memory_bytes / 2**20:.0f} MiB", ""))
    if status.state:
        parts.append((f"  {status.state}", "italic"))
    return Text.assemble(*parts)


class StatusBar(Static):
    def __init__(self) -> None:
        super().__init__(id="status")

    def show(self, status: Status) -> None:
        self.update(format_status(status))


class ModelPicker(ModalScreen[str | None]):
    """A list of stored models to switch to; Enter picks, Esc keeps the current one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "keep the current model")
    ]

    def __init__(self, models: list[str], current: str) -> None:
        super().__init__()
        self._models = models
        self._current = current

    def compose(self) -> ComposeResult:
        yield Label("Pick a model (Enter) · Esc keeps the current one", id="picker-title")
        yield OptionList(
            *(
                Option(m + ("  (current)" if m == self._current else ""), id=m)
                for m in self._models
            ),
            id="picker",
        )

    def on_mount(self) -> None:
        picker = self.query_one("#picker", OptionList)
        if self._current in self._models:
            picker.highlighted = self._models.index(self._current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
