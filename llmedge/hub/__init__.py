"""Getting models into the store: the pull plan (what a name means), the Hugging Face Hub client
(resumable, hash-checked downloads), GGUF pulls and imports, and conversion to MLX."""

from __future__ import annotations

from llmedge.hub.pull import ensure_model, import_gguf, pull

__all__ = ["ensure_model", "import_gguf", "pull"]
