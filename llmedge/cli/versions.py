"""`rollback` and `verify`: earlier versions of a model, and a full re-check of the store."""

from __future__ import annotations

import argparse

from llmedge.settings import Settings
from llmedge.store import ModelRef, Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollback = subparsers.add_parser(
        "rollback",
        help="restore the previous version of a model",
        description="Make the version a pull replaced current again; the newer one is dropped.",
    )
    rollback.add_argument("model", metavar="MODEL", help="NAME:TAG (or NAME: its newest tag)")
    rollback.set_defaults(handler=run_rollback)

    verify = subparsers.add_parser(
        "verify",
        help="re-hash every stored model and report damage",
        description="Re-hash every blob any model version points to; exit 1 when one is damaged.",
    )
    verify.set_defaults(handler=run_verify)


def run_rollback(args: argparse.Namespace) -> None:
    store = Store(Settings().store_dir)
    restored, dropped = store.rollback(ModelRef.parse(args.model))
    revision = restored.source.get("revision", "")
    print(
        f"rolled {restored.ref} back to sha256 {restored.sha256[:12]}"
        + (f" (revision {revision[:12]})" if revision else "")
        + f"; dropped sha256 {dropped.sha256[:12]}"
    )


def run_verify(args: argparse.Namespace) -> int:
    from rich.table import Table

    from llmedge.cli.output import table_console

    store = Store(Settings().store_dir)
    checks = store.verify()
    table = Table(box=None, header_style="bold")
    for column in ("STATUS", "MODELS", "FILE", "DETAIL"):
        table.add_column(column)
    for check in checks:
        if check.status != "ok":
            table.add_row(check.status, ", ".join(check.refs), str(check.path), check.detail)
    console = table_console()
    if table.row_count:
        console.print(table)
    ok = sum(c.status == "ok" for c in checks)
    damaged = [c for c in checks if c.damaged]
    print(f"checked {ok + len(damaged)} blobs: {ok} ok, {len(damaged)} damaged")
    if damaged:
        refs = sorted({ref for c in damaged for ref in c.refs})
        print(f"to repair: `llmedge rm {' '.join(refs)}` and pull them again")
        return 1
    return 0
