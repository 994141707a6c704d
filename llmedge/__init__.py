"""llmedge: run LLMs on the machine in front of you.

The public API that `server`, `tui`, `quantizers` and third-party code build on.
"""

from __future__ import annotations

from llmedge.cards import ModelCard, all_cards, find_card
from llmedge.engine import Engine, EngineBusyError, GenerationStream, LoadedEntry, PreparedPrompt
from llmedge.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    CorruptModelError,
    DownloadError,
    ExtraNotInstalledError,
    InsufficientMemoryError,
    InvalidModelFileError,
    InvalidRequestError,
    LlmedgeError,
    ModelNotFoundError,
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
from llmedge.model_facts import ModelFacts
from llmedge.pull import ensure_model, pull
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, Store

__version__ = "0.1.0"

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
    "GenerationChunk",
    "GenerationStream",
    "InsufficientMemoryError",
    "InvalidModelFileError",
    "InvalidRequestError",
    "LlmedgeError",
    "LoadedEntry",
    "Manifest",
    "ModelCard",
    "ModelFacts",
    "ModelNotFoundError",
    "ModelRef",
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
]
