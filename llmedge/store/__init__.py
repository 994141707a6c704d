"""The model store: content-addressed blobs, one manifest per model version, and their history.

`store` draws the layout on disk; `manifest` is what a version records; `folders` keeps a model
that is a folder (safetensors, MLX) as one blob.
"""

from __future__ import annotations

from llmedge.store.manifest import Manifest, ModelRef, QuantReport
from llmedge.store.store import BlobCheck, Store, sha256_of

__all__ = ["BlobCheck", "Manifest", "ModelRef", "QuantReport", "Store", "sha256_of"]
