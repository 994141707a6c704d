"""Make the chat's screenshot for the docs: `python -m tui.screenshot [docs/chat.svg]`.

It runs the real default model, greedy, in a throwaway home, so the picture is what users see.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from llmedge import SamplingParams, Settings
from tui.app import ChatApp
from tui.launch import build_app
from tui.pilot import ask, until_ready

QUESTION = "Write a Python function that checks whether a number is prime."
SIZE = (100, 34)


async def shoot(app: ChatApp, path: Path) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await until_ready(pilot, app, 300)
        await ask(pilot, app, QUESTION, typed=True, timeout_s=600)
        await pilot.press("/", "s")  # the completion menu, open
        await pilot.pause(0.5)
        svg = app.export_screenshot()
    # Drop the renderer's comment line, so the file holds the picture only.
    path.write_text("\n".join(line for line in svg.splitlines() if "<!--" not in line) + "\n")


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/chat.svg").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        app = build_app(Settings(home=Path(home)), None, None, None)
        app.params = SamplingParams(temperature=0.0, max_tokens=200)
        asyncio.run(shoot(app, path))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
