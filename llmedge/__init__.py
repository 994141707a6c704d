"""llmedge: run LLMs on the machine in front of you.

The public API that `server`, `tui`, `quantizers`, `vision` and third-party code build on. Errors
and the generation types load with the package; everything else loads on first use, so
`import llmedge` (and `llmedge --help`) never starts an engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmedge.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    CorruptModelError,
    DownloadError,
    EngineBusyError,
    ExtraNotInstalledError,
    GenerationCancelledError,
    InsufficientMemoryError,
    InvalidModelFileError,
    InvalidRequestError,
    LlmedgeError,
    ModelNotFoundError,
    ModelUnloadingError,
    StoreError,
)
from llmedge.generation import (
    ChatMessage,
    FinishReason,
    GenerationChunk,
    SamplingParams,
    TokenLogprob,
    ToolCall,
)

if TYPE_CHECKING:
    from llmedge.cards import ModelCard, all_cards, find_card
    from llmedge.engine import (
        Engine,
        GenerationStream,
        Lease,
        LoadedEntry,
        ModelRunner,
        PreparedPrompt,
    )
    from llmedge.gguf import ModelFacts
    from llmedge.hub import ensure_model, pull, pull_or_update
    from llmedge.settings import Settings
    from llmedge.store import Manifest, ModelDefaults, ModelRef, Store

__version__ = "0.1.0"

# Where each lazily loaded name lives.
_LAZY = {
    "ModelCard": "llmedge.cards",
    "all_cards": "llmedge.cards",
    "find_card": "llmedge.cards",
    "Engine": "llmedge.engine",
    "GenerationStream": "llmedge.engine",
    "Lease": "llmedge.engine",
    "LoadedEntry": "llmedge.engine",
    "ModelRunner": "llmedge.engine",
    "PreparedPrompt": "llmedge.engine",
    "ModelFacts": "llmedge.gguf",
    "ensure_model": "llmedge.hub",
    "pull": "llmedge.hub",
    "pull_or_update": "llmedge.hub",
    "Settings": "llmedge.settings",
    "Manifest": "llmedge.store",
    "ModelDefaults": "llmedge.store",
    "ModelRef": "llmedge.store",
    "Store": "llmedge.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmedge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BackendUnavailableError",
    "ChatMessage",
    "ContextLengthExceededError",
    "CorruptModelError",
    "DownloadError",
    "Engine",
    "EngineBusyError",
    "ExtraNotInstalledError",
    "FinishReason",
    "GenerationCancelledError",
    "GenerationChunk",
    "GenerationStream",
    "InsufficientMemoryError",
    "InvalidModelFileError",
    "InvalidRequestError",
    "Lease",
    "LlmedgeError",
    "LoadedEntry",
    "Manifest",
    "ModelCard",
    "ModelDefaults",
    "ModelFacts",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRunner",
    "ModelUnloadingError",
    "PreparedPrompt",
    "SamplingParams",
    "Settings",
    "Store",
    "StoreError",
    "TokenLogprob",
    "ToolCall",
    "__version__",
    "all_cards",
    "ensure_model",
    "find_card",
    "pull",
    "pull_or_update",
]
