"""Renders a conversation through a model's own Jinja chat template, as transformers does.

The template comes with the model file, so it is not trusted: it is parsed here, and rendered in
a worker process under Jinja's sandbox with limits on time, memory and output
(`llmedge.prompting.template_sandbox`). Whatever it does wrong is a 400 that names the model's
chat template, never a failure of the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2

from llmedge.errors import InvalidRequestError
from llmedge.generation import ChatMessage
from llmedge.prompting.template_sandbox import (
    MAX_OUTPUT_CHARS,
    RENDER_TIMEOUT_S,
    RenderFailed,
    sandbox,
)
from llmedge.prompting.template_worker import environment

# Used when a model carries no template: ChatML, as llama.cpp falls back to.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n"
    "{{ message.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Real chat templates are a few kilobytes; a far larger one is refused before it is parsed.
MAX_TEMPLATE_CHARS = 256 << 10
_WHAT = "the model's chat template (tokenizer.chat_template in its file)"


def _template_error(message: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(f"{_WHAT} {message}", param=param, code="chat_template_error")


@lru_cache(maxsize=16)
def _check_syntax(source: str) -> None:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise _template_error(
            f"is {len(source)} characters, more than the {MAX_TEMPLATE_CHARS} llmedge renders"
        )
    try:
        environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _template_error(f"does not parse: {exc}") from exc
    except (RecursionError, MemoryError) as exc:
        raise _template_error("nests too deeply to parse") from exc


class ChatTemplate:
    """A checked chat template with the special tokens it may refer to."""

    def __init__(
        self,
        source: str | None,
        bos_token: str = "",
        eos_token: str = "",
        timeout_s: float = RENDER_TIMEOUT_S,
    ) -> None:
        self.source = source or CHATML_TEMPLATE
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.timeout_s = timeout_s
        _check_syntax(self.source)

    def with_source(self, source: str | None) -> ChatTemplate:
        """This template, or another source with the same special tokens (None: this one)."""
        return self if source is None else ChatTemplate(source, self.bos_token, self.eos_token)

    def render(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        context = {
            "messages": [m.template_view() for m in messages],
            "tools": list(tools) if tools else None,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        request = {"source": self.source, "context": context, "max_output_chars": MAX_OUTPUT_CHARS}
        try:
            return sandbox().render(request, self.timeout_s)
        except RenderFailed as exc:
            if exc.kind == "refused":
                raise _template_error(f"refused the messages: {exc}", "messages") from None
            raise _template_error(f"failed: {exc}") from None
