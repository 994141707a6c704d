"""The in-process chat client: the model runs inside this process, through llmedge's Engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import psutil

from llmedge import (
    ChatMessage,
    ContextLengthExceededError,
    Engine,
    GenerationChunk,
    SamplingParams,
)
from llmedge.prompting import apply_defaults
from tui.client import ModelInfo


class LocalClient:
    """A `ChatClient` over an Engine; blocking engine calls run in a thread, off the UI loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._process = psutil.Process()

    @property
    def where(self) -> str:
        return "in-process"

    async def open(self, name: str) -> ModelInfo:
        manifest = await asyncio.to_thread(self._engine.resolve, name)
        # Two names for one file share a loaded model, so the name comes from the manifest.
        entry = await asyncio.to_thread(self._engine.load, manifest.ref)
        facts = manifest.facts
        return ModelInfo(
            ref=manifest.ref,
            backend=entry.backend,
            quantization=facts.quantization if facts else manifest.tag,
            ctx_tokens=entry.model.ctx_tokens,
        )

    async def models(self) -> list[str]:
        manifests = await asyncio.to_thread(self._engine.store.manifests)
        return [m.ref for m in manifests]

    async def stream(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[GenerationChunk]:
        # A created model's system prompt, parameters and template, as the server applies them.
        defaults = (await asyncio.to_thread(self._engine.resolve, model)).defaults
        turns, params, template = apply_defaults(defaults, messages, params)
        prompt = await asyncio.to_thread(
            self._engine.prepare_chat, model, turns, params, None, template
        )
        async for chunk in self._engine.stream(prompt):
            yield chunk

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        if not messages:
            return 0
        try:
            prompt = await asyncio.to_thread(
                self._engine.prepare_chat, model, messages, SamplingParams(max_tokens=1)
            )
        except ContextLengthExceededError as exc:
            return exc.prompt_tokens
        with prompt:  # counted, not generated from
            return len(prompt.tokens)

    def memory_bytes(self) -> int | None:
        return int(self._process.memory_info().rss)

    async def close(self) -> None:
        await asyncio.to_thread(self._engine.close)
