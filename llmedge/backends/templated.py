"""What every backend's loaded model shares: a prompt rendered through the model's chat template,
or through a created model's own template with the same special tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmedge.generation import ChatMessage
from llmedge.prompting.chat_template import ChatTemplate


class TemplatedChat:
    """`render_chat` for a loaded model that keeps its `ChatTemplate` in `_template`."""

    _template: ChatTemplate

    def render_chat(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[dict[str, Any]] | None = None,
        template: str | None = None,
    ) -> str:
        return self._template.with_source(template).render(messages, tools)
