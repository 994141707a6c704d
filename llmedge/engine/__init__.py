"""The engine: loads stored models on demand, keeps them while used, streams their generations."""

from __future__ import annotations

from llmedge.engine.engine import Engine
from llmedge.engine.runner import LoadedEntry, PreparedPrompt
from llmedge.engine.stream import GenerationStream

__all__ = ["Engine", "GenerationStream", "LoadedEntry", "PreparedPrompt"]
