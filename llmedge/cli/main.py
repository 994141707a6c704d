"""The `llmedge` command: parses arguments, runs one command, turns errors into one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from llmedge import __version__
from llmedge.errors import LlmedgeError
from llmedge.files import file_error
from llmedge.settings import describe_invalid

# Each module adds its subcommands with `register(subparsers)`; heavy imports wait for the handler.
COMMAND_MODULES = (
    "models",
    "update",
    "create",
    "run",
    "serve",
    "chat",
    "quantize",
    "versions",
    "vision",
    "hw",
    "fit",
    "route",
    "client",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmedge",
        description="Run LLMs on the machine in front of you.",
    )
    parser.add_argument("--version", action="version", version=f"llmedge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"llmedge.cli.{name}").register(subparsers)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse arguments; words after options (`run -m X --seed 1 some prompt`) join the prompt."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not isinstance(getattr(args, "words", None), list) or any(
            w.startswith("-") for w in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.words += extra
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result: int | None = args.handler(args)
    except LlmedgeError as exc:
        print(f"llmedge: error: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"llmedge: {note}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk, a folder that cannot be written: one line, not a trace
        if (error := file_error(exc)) is None:
            raise
        print(f"llmedge: error: {error}", file=sys.stderr)
        return error.exit_code
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        print(f"llmedge: error: {describe_invalid(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return result or 0
