"""`update` and `list --outdated`: newer revisions of pulled models, checked and pulled."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from llmedge.errors import LlmedgeError
from llmedge.settings import Settings
from llmedge.store import Store

if TYPE_CHECKING:
    from llmedge.hub.update import UpdateCheck

# `list --outdated` exits with these, for scripts: all current, some outdated, some unknown.
CURRENT_EXIT, OUTDATED_EXIT, UNKNOWN_EXIT = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = subparsers.add_parser(
        "update",
        help="pull the newest revision of pulled models",
        description=(
            "Ask the hub for the newest revision of each model named (every tag of a name "
            "without one), or of every stored model with --all; download only the files the "
            "store does not have, verify them, and switch. The version replaced stays for "
            "`llmedge rollback`; a failed or interrupted update leaves the current one in place."
        ),
    )
    update.add_argument("models", metavar="MODEL", nargs="*")
    update.add_argument("--all", action="store_true", help="every stored model")
    update.add_argument("--verbose", action="store_true", help="show the converters' output")
    update.set_defaults(handler=run_update)


def checks(store: Store, names: list[str]) -> list[tuple[str, UpdateCheck | LlmedgeError]]:
    """Where each named (or every) stored model stands; one hub question per repository."""
    from llmedge.hub import hf
    from llmedge.hub.update import check, stored_versions

    snapshots: dict[str, hf.RepoSnapshot] = {}
    found: list[tuple[str, UpdateCheck | LlmedgeError]] = []
    for manifest in stored_versions(store, names):
        try:
            found.append((manifest.ref, check(manifest, snapshots)))
        except LlmedgeError as exc:
            found.append((manifest.ref, exc))
    return found


def run_outdated(store: Store, names: list[str]) -> int:
    """`llmedge list --outdated`: a table of hub models and where they stand; the exit code."""
    from rich.table import Table

    from llmedge.cli.output import table_console

    table = Table(box=None, header_style="bold")
    for column in ("NAME", "STATUS", "DETAIL"):
        table.add_column(column)
    outdated = unknown = 0
    for ref, result in checks(store, names):
        if isinstance(result, LlmedgeError):
            unknown += 1
            table.add_row(ref, "unknown", str(result))
        elif result.status != "local":
            outdated += result.status == "outdated"
            table.add_row(ref, result.status, result.detail)
    if table.row_count:
        table_console().print(table)
    else:
        print("no stored model was pulled from a hub")
    if outdated:
        print(f"{outdated} outdated: `llmedge update --all` pulls them")
        return OUTDATED_EXIT
    return UNKNOWN_EXIT if unknown else CURRENT_EXIT


def run_update(args: argparse.Namespace) -> int:
    from llmedge.cli.logs import engine_log
    from llmedge.cli.output import RichReporter
    from llmedge.hub.update import local_reason, stored_versions, update

    if not args.models and not args.all:
        print("name the models to update, or --all", file=sys.stderr)
        return 2
    settings = Settings()
    store = Store(settings.store_dir)
    failed = 0
    with engine_log(settings.home, args.verbose, "update"), RichReporter() as reporter:
        for manifest in stored_versions(store, [] if args.all else args.models):
            if (reason := local_reason(manifest)) is not None:
                print(f"{manifest.ref}: skipped ({reason})")
                continue
            try:
                after = update(store, manifest, reporter)
            except LlmedgeError as exc:
                failed += 1
                print(f"{manifest.ref}: not updated: {exc}", file=sys.stderr)
                continue
            if after.same_content(manifest):
                print(f"{manifest.ref}: up to date")
            else:
                print(
                    f"{manifest.ref}: updated to sha256 {after.sha256[:12]}; "
                    f"`llmedge rollback {manifest.ref}` restores sha256 {manifest.sha256[:12]}"
                )
    return 1 if failed else 0
