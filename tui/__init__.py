"""`llmedge chat`: the terminal chat, in-process or against an OpenAI-compatible server.

Built on llmedge's public API only; `llmedge.cli` imports it lazily (the `tui` extra).
"""

from __future__ import annotations

from llmedge.errors import RemoteServerError
from tui.app import ChatApp
from tui.client import ChatClient, ModelInfo
from tui.launch import build_app, run_chat
from tui.local import LocalClient
from tui.remote import RemoteClient

__all__ = [
    "ChatApp",
    "ChatClient",
    "LocalClient",
    "ModelInfo",
    "RemoteClient",
    "RemoteServerError",
    "build_app",
    "run_chat",
]
