"""Writes the README's command reference from `llmedge --help`, so the docs cannot drift.

python scripts/gen_cli_reference.py          # rewrite README.md
python scripts/gen_cli_reference.py --check  # exit 1 when README.md is out of date
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's llmedge
from llmedge.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- cli-reference:begin -->"
END = "<!-- cli-reference:end -->"


def reference() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal width
    parser = build_parser()
    parts = ["```text", "$ llmedge --help", parser.format_help().rstrip(), "```"]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen: set[int] = set()
    for name, sub in subparsers.choices.items():
        if id(sub) in seen:
            continue  # an alias
        seen.add(id(sub))
        parts += ["", f"### `llmedge {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


def rendered(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{reference()}\n{END}{tail}"


def main() -> int:
    check = "--check" in sys.argv
    current = README.read_text(encoding="utf-8")
    wanted = rendered(current)
    if check:
        if current != wanted:
            print("README.md's command reference is stale: run scripts/gen_cli_reference.py")
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
