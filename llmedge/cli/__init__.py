"""The `llmedge` command line: one module per group of commands, reached from `main`.

Each module registers its subcommands on the parser and imports what it runs inside its handler,
so `llmedge --help` starts without loading an engine, a server or a chat app.
"""

from __future__ import annotations

from llmedge.cli.main import build_parser, main, parse_args

__all__ = ["build_parser", "main", "parse_args"]
