"""A created model's defaults (system prompt, sampling parameters, chat template): read from
flags or an Ollama-style Modelfile, and applied to each request that does not say otherwise.

The Modelfile subset: `FROM <model>`, `SYSTEM <text>`, `PARAMETER <name> <value>` (repeatable;
`stop` may repeat), `TEMPLATE <text>` and `#` comments; a value may span lines inside `\"\"\"`.
Ollama's templates are Go templates; llmedge renders Jinja chat templates (the kind a model's
own tokenizer config holds), so a Go template is refused rather than misread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmedge.errors import InvalidRequestError
from llmedge.generation import ChatMessage, SamplingParams
from llmedge.prompting.chat_template import ChatTemplate
from llmedge.store import ModelDefaults

# name -> (type, lowest, highest, SamplingParams field); the wire APIs' bounds.
_PARAMETERS: dict[str, tuple[type, float, float, str]] = {
    "temperature": (float, 0, 2, "temperature"),
    "top_p": (float, 0, 1, "top_p"),
    "top_k": (int, 0, 1 << 20, "top_k"),
    "min_p": (float, 0, 1, "min_p"),
    "repeat_penalty": (float, 0, 10, "repeat_penalty"),
    "presence_penalty": (float, -2, 2, "presence_penalty"),
    "frequency_penalty": (float, -2, 2, "frequency_penalty"),
    "seed": (int, -(1 << 63), (1 << 64) - 1, "seed"),
    "num_predict": (int, 1, 1 << 20, "max_tokens"),
}
_SET_AT_LOAD = ("num_ctx", "num_batch", "num_gpu", "num_thread", "main_gpu", "use_mmap")
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(\.|if\s+\.|range\s+\.|end\b)")
_INSTRUCTION = re.compile(r"^(\w+)\s*(.*)$", re.DOTALL)
MAX_STOPS = 16


@dataclass(frozen=True)
class ModelfileSpec:
    """What a Modelfile says: the model to start from and the defaults to add."""

    base: str
    defaults: ModelDefaults


def parameter_value(name: str, text: str | float | int) -> float | int | str:
    """One parameter, checked: its value in the type it takes, or a 400 naming it."""
    name = name.strip().lower()
    if name == "stop":
        if not isinstance(text, str) or not text:
            raise InvalidRequestError("PARAMETER stop needs a text", param="parameters.stop")
        return text.strip('"') if len(text) > 1 and text[0] == text[-1] == '"' else text
    if name in _SET_AT_LOAD:
        raise InvalidRequestError(
            f"PARAMETER {name} is set when the server starts (`llmedge serve --ctx …`, "
            "`--gpu-layers`, `--threads`); remove it",
            param=f"parameters.{name}",
        )
    if name not in _PARAMETERS:
        known = ", ".join([*_PARAMETERS, "stop"])
        raise InvalidRequestError(
            f"PARAMETER {name} is not one llmedge applies; use one of: {known}",
            param=f"parameters.{name}",
        )
    kind, low, high, _ = _PARAMETERS[name]
    try:
        value: float | int = kind(float(text)) if kind is float else int(str(text).strip())
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"PARAMETER {name} must be a {'number' if kind is float else 'whole number'}, "
            f"not {text!r}",
            param=f"parameters.{name}",
        ) from None
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise InvalidRequestError(
            f"PARAMETER {name} must be between {low} and {high}, not {value}",
            param=f"parameters.{name}",
        )
    return value


def parameters_from(pairs: Iterable[tuple[str, str | float | int]]) -> dict[str, Any]:
    """Checked parameters from (name, value) pairs; `stop` collects every value it is given."""
    found: dict[str, Any] = {}
    for name, raw in pairs:
        value = parameter_value(name, raw)
        key = name.strip().lower()
        if key == "stop":
            stops = found.setdefault("stop", [])
            if len(stops) >= MAX_STOPS:
                raise InvalidRequestError(
                    f"PARAMETER stop: at most {MAX_STOPS}", param="parameters.stop"
                )
            stops.append(value)
        else:
            found[key] = value
    return found


def checked_template(source: str | None) -> str | None:
    """A chat template for a created model, refused unless it is a Jinja template that parses."""
    if source is None:
        return None
    if _GO_TEMPLATE.search(source):
        raise InvalidRequestError(
            "TEMPLATE is a Go template (Ollama's); llmedge renders Jinja chat templates like the "
            "one a model carries (`llmedge show MODEL --template` prints it): write it in Jinja, "
            "or leave it out to keep the model's own",
            param="template",
        )
    ChatTemplate(source)  # raises a 400 naming the problem when it does not parse
    return source


def model_defaults(
    system: str | None = None,
    template: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> ModelDefaults:
    """Checked defaults for a created model."""
    checked = parameters_from(_pairs(parameters or {}))
    return ModelDefaults(system, checked_template(template), checked)


def _pairs(parameters: Mapping[str, Any]) -> list[tuple[str, Any]]:
    pairs = []
    for name, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise InvalidRequestError(
                    f"parameters.{name} must be a number or a text", param=f"parameters.{name}"
                )
            pairs.append((name, item))
    return pairs


def parse_modelfile(text: str) -> ModelfileSpec:
    """Read the Modelfile subset llmedge honours; anything else is a 400 naming the line."""
    base = system = template = None
    pairs: list[tuple[str, str]] = []
    for number, instruction in _instructions(text):
        match = _INSTRUCTION.match(instruction)
        if match is None:
            raise InvalidRequestError(
                f"Modelfile line {number}: {instruction[:60]!r} is unreadable"
            )
        word, rest = match.group(1).upper(), _unquote(match.group(2).strip())
        if word == "FROM":
            base = rest
        elif word == "SYSTEM":
            system = rest
        elif word == "TEMPLATE":
            template = rest
        elif word == "PARAMETER":
            name, _, value = rest.partition(" ")
            pairs.append((name, _unquote(value.strip())))
        else:
            raise InvalidRequestError(
                f"Modelfile line {number}: {word} is not supported; llmedge reads FROM, SYSTEM, "
                "PARAMETER and TEMPLATE",
                param="modelfile",
            )
    if not base:
        raise InvalidRequestError("the Modelfile has no FROM line naming the model to start from")
    defaults = ModelDefaults(system, checked_template(template), parameters_from(pairs))
    return ModelfileSpec(base, defaults)


def _instructions(text: str) -> list[tuple[int, str]]:
    """(line number, instruction) pairs; a `\"\"\"` value runs on until it closes."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.count('"""') == 1:
            while i < len(lines) and '"""' not in lines[i]:
                line += "\n" + lines[i]
                i += 1
            if i == len(lines):
                raise InvalidRequestError(f'Modelfile line {start}: a """ value never ends')
            line += "\n" + lines[i]
            i += 1
        found.append((start, line))
    return found


def _unquote(text: str) -> str:
    if text.startswith('"""') and text.endswith('"""') and len(text) >= 6:
        return text[3:-3].strip("\n")
    return text


def apply_defaults(
    defaults: ModelDefaults | None,
    messages: Sequence[ChatMessage],
    params: SamplingParams,
) -> tuple[list[ChatMessage], SamplingParams, str | None]:
    """The request with the model's defaults filled in where it set nothing: its system prompt
    when the messages have none, each parameter the request left unset; and the chat template
    to render it with (None: the model file's own). The request's own values always win."""
    if defaults is None:
        return list(messages), params, None
    messages = list(messages)
    if defaults.system and not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage("system", defaults.system))
    unset = SamplingParams()
    given = params.given
    changes: dict[str, Any] = {}
    for name, value in defaults.parameters.items():
        field = "stop" if name == "stop" else _PARAMETERS[name][3]
        was_set = (
            field in given if given is not None else getattr(params, field) != getattr(unset, field)
        )
        if not was_set:
            changes[field] = tuple(value) if field == "stop" else value
    return messages, replace(params, **changes) if changes else params, defaults.template
