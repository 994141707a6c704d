"""Backend discovery: every backend, built-in or third-party, registers as an entry point.

A package adds one with, in its pyproject.toml::

    [project.entry-points."llmedge.backends"]
    my-engine = "my_package.backend:MyBackend"
"""

from __future__ import annotations

from importlib.metadata import entry_points

from llmedge.backends.base import Availability, Backend, GenerationSink, LoadedModel, LoadOptions
from llmedge.errors import BackendUnavailableError

ENTRY_POINT_GROUP = "llmedge.backends"

__all__ = [
    "Availability",
    "Backend",
    "GenerationSink",
    "LoadOptions",
    "LoadedModel",
    "backend_names",
    "get_backend",
]


def backend_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get_backend(name: str) -> Backend:
    """The backend registered under `name`; an unknown name fails with the valid ones."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        backend: Backend = ep.load()()
        return backend
    valid = ", ".join(backend_names()) or "none installed"
    raise BackendUnavailableError(f"unknown backend {name!r}; valid backends: {valid}")
