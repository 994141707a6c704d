"""`serve`: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import argparse
import sys

from llmedge.errors import ModelNotFoundError
from llmedge.settings import CLI_FIELDS, add_settings_flags, settings_from_args

ROUTING_FIELDS = ("remote_url", "remote_key", "prefer_backend", "allow_hosts")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="start the OpenAI-compatible server",
        description="Serve stored models over an OpenAI-compatible API (/v1/chat/completions …).",
    )
    serve.add_argument(
        "model", nargs="?", metavar="MODEL", help="model to load now (default: the default model)"
    )
    serve.add_argument(
        "--backend",
        help="backend for every model: llama.cpp, mlx, mlc, or remote to forward every request "
        "(default: chosen per model and host; `llmedge route MODEL` explains the choice)",
    )
    serve.add_argument(
        "--remote",
        dest="remote_url",
        metavar="URL",
        help="OpenAI-compatible server (its /v1 URL) that answers for models this host lacks or "
        "cannot fit [env LLMEDGE_REMOTE_URL]",
    )
    serve.add_argument(
        "--remote-key",
        dest="remote_key",
        metavar="KEY",
        help="API key for the remote engine [env LLMEDGE_REMOTE_KEY]",
    )
    serve.add_argument(
        "--prefer",
        dest="prefer_backend",
        metavar="BACKEND",
        help="backend to try first wherever it can run the model [env LLMEDGE_PREFER_BACKEND]",
    )
    serve.add_argument(
        "--allow-host",
        dest="allow_hosts",
        action="append",
        metavar="HOST",
        help="a host name the server answers to besides loopback names, this machine's name and "
        "the bound address (repeatable; * allows any) [env LLMEDGE_ALLOW_HOSTS]",
    )
    add_settings_flags(serve, CLI_FIELDS)
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    from llmedge.cli.route import render
    from llmedge.engine import Engine
    from llmedge.extras import import_extra
    from llmedge.hub import ensure_model
    from llmedge.routing import REMOTE
    from llmedge.store import Store

    server = import_extra("server", "server")
    settings = settings_from_args(args, (*CLI_FIELDS, *ROUTING_FIELDS))
    sock = server.listen(settings.host, settings.port)  # a taken port fails before any loading
    store = Store(settings.store_dir)
    name = args.model or settings.default_model
    if args.backend != REMOTE:
        try:
            ensure_model(store, name)  # the embedded default model is imported on first use
        except ModelNotFoundError:
            if settings.remote_url is None:  # else the remote engine may have it
                raise
    engine = Engine(settings.with_overrides(default_model=name), store, backend=args.backend)
    decision = engine.route(name)
    print("route: " + render(decision).replace("\n", "\nroute: "), file=sys.stderr, flush=True)
    decision.raise_if_refused()
    if decision.backend != REMOTE:
        engine.load(name)
    server.serve(engine, on_ready=name, sock=sock)
