"""The engine: loads stored models on demand, keeps them while used, streams their generations.

`engine` owns the table of loaded models and the requests' way in; `runner` is one loaded model
with its leases and waiting line; `stream` is one generation in flight.
"""

from __future__ import annotations

from llmedge.engine.engine import Engine, GenerationObserver
from llmedge.engine.runner import Lease, ModelRunner, PreparedPrompt
from llmedge.engine.stream import GenerationStream

# The name a loaded model had before leases; kept for code written against it.
LoadedEntry = ModelRunner

__all__ = [
    "Engine",
    "GenerationObserver",
    "GenerationStream",
    "Lease",
    "LoadedEntry",
    "ModelRunner",
    "PreparedPrompt",
]
