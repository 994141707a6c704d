"""Getting models into the store: the pull plan (what a name means), the Hugging Face Hub client
(resumable, hash-checked downloads), GGUF pulls (split models in parallel parts) and imports,
updates of pulled models, and conversion to MLX."""

from __future__ import annotations

from llmedge.hub.pull import ensure_model, import_gguf, pull
from llmedge.hub.update import pull_or_update

__all__ = ["ensure_model", "import_gguf", "pull", "pull_or_update"]
