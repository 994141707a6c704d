"""Record what each model card's GGUF repositories hold, where the Hub (or HF_ENDPOINT) answers.

    python scripts/refresh_cards.py            # rewrite tests/data/listings/*.json
    python scripts/refresh_cards.py --check    # only report card entries the Hub lacks
    python scripts/refresh_cards.py --only bartowski/SmolLM2-135M-Instruct-GGUF

Each listing is a small JSON file: the repository, the commit it was read at, and every file
with its size. tests/test_cards_all.py checks every card entry against them, so a card that
names a file its repository does not hold fails the suite; this script keeps them current.
Exits 1 when a card names a file (or a split part) that is not in its repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

# This checkout's llmedge, not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llmedge.cards import all_cards
from llmedge.errors import LlmedgeError
from llmedge.hub import hf
from llmedge.hub.plan import split_parts

LISTINGS = Path(__file__).resolve().parent.parent / "tests" / "data" / "listings"


def listing_path(folder: Path, repo: str) -> Path:
    return folder / (repo.replace("/", "__") + ".json")


def card_entries() -> dict[str, list[tuple[str, str, str]]]:
    """repo -> (card, quant, file) for every file a card names (each part of a split one)."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for card in all_cards().values():
        for repo in card.gguf:
            for quant, file in repo.files.items():
                for part in split_parts(file):
                    found.setdefault(repo.repo, []).append((card.name, quant, part))
    return found


def refresh(repo: str, folder: Path, write: bool) -> list[str]:
    """Read one repository's files; write its listing; the card entries it lacks."""
    snapshot = hf.fetch_snapshot(repo)
    files = {f.path: f.size_bytes for f in snapshot.files}
    if write:
        data = {
            "repo": repo,
            "checked": datetime.now(UTC).strftime("%Y-%m-%d"),
            "complete": True,
            "source": f"{hf.endpoint()} at commit {snapshot.commit}",
            "files": dict(sorted(files.items())),
        }
        folder.mkdir(parents=True, exist_ok=True)
        listing_path(folder, repo).write_text(json.dumps(data, indent=2) + "\n")
    return [
        f"{card} {quant}: {repo} has no {file}"
        for card, quant, file in card_entries().get(repo, [])
        if file not in files
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=LISTINGS, help="where the listings go")
    parser.add_argument("--only", action="append", metavar="REPO", help="just this repository")
    parser.add_argument("--check", action="store_true", help="report only; write nothing")
    args = parser.parse_args()
    repos = args.only or sorted(card_entries())
    problems, failed = [], 0
    for repo in repos:
        try:
            missing = refresh(repo, args.out, write=not args.check)
        except LlmedgeError as exc:
            failed += 1
            print(f"{repo}: not read: {exc}", file=sys.stderr)
            continue
        print(f"{repo}: {'ok' if not missing else f'{len(missing)} missing'}")
        problems += missing
    for problem in problems:
        print(problem)
    return 1 if problems or failed else 0


if __name__ == "__main__":
    sys.exit(main())
