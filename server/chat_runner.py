"""Runs a request on the engine for every API: tools and structured output go in as prompt and
grammar, answer text and tool calls come out as events, one stream per choice (`n`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from llmedge import (
    ChatMessage,
    Engine,
    GenerationChunk,
    GenerationStream,
    LlmedgeError,
    PreparedPrompt,
    SamplingParams,
    TokenLogprob,
    ToolCall,
)
from llmedge.engine import GenerationObserver
from llmedge.prompting import (
    ToolCallParser,
    apply_defaults,
    detect_tool_format,
    fold_messages,
    forced_call_grammar,
    new_call_id,
)

log = logging.getLogger("llmedge.server")
ToolMode = Literal["none", "auto", "required"]
Finish = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class ChatSpec:
    """A chat request in the terms every API shares."""

    model: str | None
    messages: Sequence[ChatMessage]
    params: SamplingParams
    tools: Sequence[Mapping[str, Any]] = ()
    tool_mode: ToolMode = "auto"
    forced_tool: str | None = None  # a tool the answer must call
    parallel_tool_calls: bool = True
    # With calls forced, may one function be called more than once? (parallel_tool_calls: true
    # said explicitly; by default each function is called at most once.)
    repeat_calls: bool = False
    keep_alive_s: float | None = None  # how long the model stays loaded once idle


@dataclass(frozen=True)
class Prepared:
    """A prompt ready to run, with what its answer should be searched for."""

    prompt: PreparedPrompt
    tool_names: tuple[str, ...] = ()
    whole_message_json: bool = False
    forced_calls: bool = False  # the grammar forces calls: repeats of a call are dropped
    repeat_calls: bool = False  # ... except calls to one function with other arguments

    def parser(self) -> ToolCallParser | None:
        """What reads this prompt's answer for tool calls (None: no tools were offered)."""
        if not self.tool_names:
            return None
        return ToolCallParser(
            self.tool_names,
            new_call_id,
            self.whole_message_json,
            unique=self.forced_calls,
            one_per_tool=self.forced_calls and not self.repeat_calls,
        )


def _tool_name(tool: Mapping[str, Any]) -> str:
    function = tool.get("function", tool)
    return str(function.get("name", "")) if isinstance(function, Mapping) else ""


def _log_request(model: str, messages: Sequence[ChatMessage], params: SamplingParams) -> None:
    """One line per chat request: what it ran with, the model's defaults included."""
    system = next((m.content for m in messages if m.role == "system"), None)
    shown = repr(system[:80] + ("…" if len(system) > 80 else "")) if system else "none"
    log.info(
        "chat %s: temperature %s, top_p %s, max_tokens %s, system %s",
        model, params.temperature, params.top_p, params.max_tokens, shown,
    )  # fmt: skip


def prepare_chat(engine: Engine, spec: ChatSpec) -> Prepared:
    """Render the conversation for the model's tool format; constrain a forced call by grammar.

    Blocking: it may load the model and tokenizes the prompt. The prompt holds a lease on the
    model until its generations start (`ChoiceRun`) or it is released."""
    lease = engine.lease(spec.model, spec.keep_alive_s)
    try:
        manifest = lease.manifest
        messages, params, template = apply_defaults(manifest.defaults, spec.messages, spec.params)
        _log_request(manifest.ref, messages, params)
        fmt = detect_tool_format(manifest.facts.chat_template if manifest.facts else None)
        offered = [dict(t) for t in spec.tools] if spec.tool_mode != "none" else []
        forced = bool(spec.forced_tool) or spec.tool_mode == "required"
        if forced:
            chosen = [t for t in offered if spec.forced_tool in (None, _tool_name(t))]
            # Each function once unless repeats were asked for: the model cannot loop on one call.
            most = None if spec.repeat_calls else len(chosen)
            grammar = forced_call_grammar(fmt, chosen, spec.parallel_tool_calls, most)
            params = replace(params, grammar=grammar)
    except BaseException:
        lease.release()
        raise
    if fmt.native:
        prompt = engine.prepare_chat(
            lease, messages, params, tools=offered or None, template=template
        )
    else:
        folded = fold_messages(messages, offered)
        prompt = engine.prepare_chat(lease, folded, params, template=template)
    names = tuple(_tool_name(t) for t in offered)
    return Prepared(prompt, names, fmt.style == "llama3", forced, spec.repeat_calls)


@dataclass
class ChoiceEvent:
    """A step of one choice: new answer text, completed calls, and at the end the finish."""

    index: int
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: tuple[TokenLogprob, ...] = ()
    finish: Finish | None = None
    last: GenerationChunk | None = None


@dataclass
class ChoiceResult:
    """A whole choice, gathered from its events."""

    index: int
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: Finish = "stop"
    last: GenerationChunk | None = None

    @property
    def content_or_none(self) -> str | None:
        return None if self.calls and not self.content.strip() else self.content


def _finish(chunk: GenerationChunk, called: bool) -> Finish:
    if called and chunk.finish_reason != "length":  # cut short, later calls may be missing
        return "tool_calls"
    return chunk.finish_reason or "stop"


async def _choice_events(
    index: int, stream: GenerationStream, prepared: Prepared
) -> AsyncIterator[ChoiceEvent]:
    parser = prepared.parser()
    called = False
    pending = ""  # whitespace held back: between or after tool calls it is not an answer
    async for chunk in stream:
        if parser is None:
            content, calls = chunk.text, []
        else:
            step = parser.feed(chunk.text)
            if chunk.finish_reason:
                step.extend(parser.finish(cut=chunk.finish_reason == "length"))
            content, calls = step.content, step.calls
            if not content.strip():
                pending, content = pending + content, ""
            else:
                pending, content = "", pending + content
        called = called or bool(calls)
        if chunk.finish_reason:
            if not called:
                content += pending
            finish = _finish(chunk, called)
            yield ChoiceEvent(index, content, calls, chunk.logprobs, finish, chunk)
            return
        if content or calls or chunk.logprobs:
            yield ChoiceEvent(index, content, calls, chunk.logprobs)


class ChoiceRun:
    """The `n` generations of one request, started at once and read together with `events()`.

    Starting is where a request can still be refused cleanly (a full queue, a grammar the engine
    will not take), before a byte is sent. The prompt's lease is released once they started."""

    def __init__(
        self,
        engine: Engine,
        prepared: Prepared,
        n: int = 1,
        observer: GenerationObserver | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.prepared = prepared
        self._streams: list[GenerationStream] = []
        base = prepared.prompt
        try:
            for i in range(n):
                params = base.params
                if i and params.seed is not None:
                    params = replace(params, seed=params.seed + i)  # distinct, yet repeatable
                prompt = replace(base, params=params)
                self._streams.append(engine.start(prompt, observer=observer, loop=loop))
        except LlmedgeError:
            self.cancel()
            raise
        finally:
            base.release()

    @property
    def model_ref(self) -> str:
        """The stored model these generations run on."""
        return self.prepared.prompt.model.manifest.ref

    def cancel(self) -> None:
        for stream in self._streams:
            stream.cancel()

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        """Events of all choices, interleaved as they come."""
        queue: asyncio.Queue[ChoiceEvent | BaseException | None] = asyncio.Queue()

        async def pump(index: int, stream: GenerationStream) -> None:
            try:
                async for event in _choice_events(index, stream, self.prepared):
                    await queue.put(event)
                await queue.put(None)
            except Exception as exc:  # handed to the reader, who raises it
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(self._streams)]
        try:
            running = len(tasks)
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            self.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def collect(self) -> list[ChoiceResult]:
        results = [ChoiceResult(i) for i in range(len(self._streams))]
        async for event in self.events():
            result = results[event.index]
            result.content += event.content
            result.calls.extend(event.calls)
            result.logprobs.extend(event.logprobs)
            if event.finish:
                result.finish, result.last = event.finish, event.last
        return results


def total_usage(results: Sequence[ChoiceResult]) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens; the prompt counts once however many choices."""
    lasts = [r.last for r in results if r.last is not None]
    if not lasts:
        return 0, 0, 0
    return lasts[0].prompt_tokens, sum(c.generated_tokens for c in lasts), lasts[0].cached_tokens
