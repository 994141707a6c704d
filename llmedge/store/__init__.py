"""The model store: content-addressed blobs, one manifest per model version, and their history.

`store` draws the layout on disk; `names` says what a model name may be and where it lives;
`manifest` is what a version records; `refs` reads and writes the manifest files; `blobs` keeps
the files themselves; `maintenance` collects what nothing needs and re-checks the rest;
`migrate` moves a store of the earlier layout into this one; `folders` keeps a model that is a
folder (safetensors, MLX) as one blob.
"""

from __future__ import annotations

from llmedge.store.blobs import BlobCheck, sha256_of
from llmedge.store.manifest import BlobPart, Manifest, ModelDefaults, QuantReport
from llmedge.store.names import ModelRef
from llmedge.store.refs import StoreProblem
from llmedge.store.store import Store

__all__ = [
    "BlobCheck",
    "BlobPart",
    "Manifest",
    "ModelDefaults",
    "ModelRef",
    "QuantReport",
    "Store",
    "StoreProblem",
    "sha256_of",
]
