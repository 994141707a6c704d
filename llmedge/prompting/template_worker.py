"""The process chat templates render in (`python -m llmedge.prompting.template_worker`).

A chat template is code that comes with a model file, so it runs here, not in the server: in
Jinja's immutable sandbox, with this process's memory capped (RLIMIT_AS, where the OS has it),
its output capped as it is produced, and a parent that kills it when a render takes too long.

Protocol, over stdin and stdout: each message is a 4-byte big-endian length and that many bytes
of JSON. A request holds the template source, its special tokens and the render's arguments; the
answer is `{"text": ...}` or `{"error": ..., "kind": "refused" | "failed" | "too_long"}`.
"""

from __future__ import annotations

import json
import struct
import sys
from collections import OrderedDict
from datetime import datetime
from typing import IO, Any, NoReturn

_LENGTH = struct.Struct(">I")
_KEPT_TEMPLATES = 16


class TemplateRefused(Exception):
    """`raise_exception(...)` called by the template: it refuses these messages."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRefused(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def environment() -> Any:
    """The sandbox every chat template renders in (the one transformers uses, plus the globals
    chat templates call)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def read_message(stream: IO[bytes]) -> Any:
    """The next message on `stream`, or None at its end."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    return json.loads(stream.read(size))


def write_message(stream: IO[bytes], message: Any) -> None:
    data = json.dumps(message).encode()  # ASCII: even a lone surrogate travels as an escape
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def render(env: Any, cache: OrderedDict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """One render: the text, or what went wrong, kept short."""
    source = request["source"]
    template = cache.pop(source, None) or env.from_string(source)
    cache[source] = template
    while len(cache) > _KEPT_TEMPLATES:
        cache.popitem(last=False)
    limit = int(request["max_output_chars"])
    parts, size = [], 0
    try:
        for part in template.generate(**request["context"]):
            size += len(part)
            if size > limit:
                return {"kind": "too_long", "error": f"it wrote more than {limit} characters"}
            parts.append(part)
    except TemplateRefused as exc:
        return {"kind": "refused", "error": str(exc)}
    except MemoryError:
        return {"kind": "too_long", "error": "it needed more memory than templates may use"}
    except Exception as exc:  # the template's own fault, whatever it raised
        return {"kind": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"text": "".join(parts)}


def _limit_memory(max_bytes: int) -> None:
    try:
        import resource
    except ImportError:  # not on this OS: the time limit and the output cap still hold
        return
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def main() -> None:
    max_bytes = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    env = environment()  # before the memory cap: imports need room the renders do not
    if max_bytes:
        _limit_memory(max_bytes)
    cache: OrderedDict[str, Any] = OrderedDict()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_message(stdin)) is not None:
        write_message(stdout, render(env, cache, request))


if __name__ == "__main__":
    main()
