"""`chat`: the terminal chat (the `tui` extra), in-process or against a server."""

from __future__ import annotations

import argparse
import os

from llmedge.settings import add_settings_flags, settings_from_args

CHAT_SETTINGS = (
    "ctx_tokens",
    "threads",
    "gpu_layers",
    "kv_type",
    "flash_attn",
    "speculative",
    "draft",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = subparsers.add_parser(
        "chat",
        help="chat with a model in the terminal",
        description=(
            "Chat with a stored model in a full-screen terminal app: streamed Markdown answers, "
            "slash commands (/help), speed, context and memory in the status bar. The model runs "
            "in this process, or on a server given with --url (any OpenAI-compatible one)."
        ),
    )
    chat.add_argument(
        "model", nargs="?", metavar="NAME", help="model to chat with (default: the default model)"
    )
    chat.add_argument(
        "--url", help="chat through this server instead, e.g. http://127.0.0.1:8000/v1"
    )
    chat.add_argument(
        "--api-key",
        default=os.environ.get("LLMEDGE_API_KEY"),
        help="API key the server asks for, with --url [env LLMEDGE_API_KEY]",
    )
    add_settings_flags(chat, CHAT_SETTINGS)
    chat.set_defaults(handler=run_chat)


def run_chat(args: argparse.Namespace) -> None:
    from llmedge.extras import import_extra

    tui = import_extra("tui", "tui")
    settings = settings_from_args(args, CHAT_SETTINGS)
    tui.run_chat(settings, args.model, url=args.url, api_key=args.api_key)
