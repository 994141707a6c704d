"""`serve`: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import argparse

from llmedge.engine import Engine
from llmedge.pull import ensure_model
from llmedge.settings import CLI_FIELDS, add_settings_flags, settings_from_args
from llmedge.store import Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="start the OpenAI-compatible server",
        description="Serve stored models over an OpenAI-compatible API (/v1/chat/completions …).",
    )
    serve.add_argument(
        "model", nargs="?", metavar="MODEL", help="model to load now (default: the default model)"
    )
    serve.add_argument("--backend", help="inference backend (default: llama.cpp)")
    add_settings_flags(serve, CLI_FIELDS)
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    from llmedge.cli import import_extra

    server = import_extra("server", "server")
    settings = settings_from_args(args, CLI_FIELDS)
    store = Store(settings.store_dir)
    manifest = ensure_model(store, args.model or settings.default_model)
    engine = Engine(
        settings.with_overrides(default_model=manifest.ref), store, backend=args.backend
    )
    engine.load(manifest.ref)
    server.serve(engine, on_ready=manifest.ref)
