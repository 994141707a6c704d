"""llmedge's OpenAI-compatible HTTP server, built on llmedge's public API."""

from __future__ import annotations

from server.app import create_app
from server.main import listen, serve

__all__ = ["create_app", "listen", "serve"]
