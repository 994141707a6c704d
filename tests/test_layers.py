"""The house rules that keep the layout readable, checked: one direction of imports (the
import-linter contracts in pyproject.toml), every error in errors.py, small modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("llmedge", "server", "tui", "quantizers", "vision")
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for name in PACKAGES for p in (REPO / name).rglob("*.py"))


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `root` (it reads them from the current folder)."""
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    done = _lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("llmedge/store/store.py", "import llmedge.engine"),  # a lower layer reaching up
        ("server/app.py", "import tui.app"),  # two top-level packages that must stay apart
        ("llmedge/gguf/header.py", "import llmedge.gguf.facts"),  # a cycle inside a package
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path: Path, module: str, upward: str) -> None:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(f"{upward}\n{target.read_text()}")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout


def test_library_modules_do_not_import_the_public_facade() -> None:
    # `llmedge/__init__` loads its names lazily, so an import of them inside the core would be a
    # dependency the contracts cannot see. Only the packages above the core use the facade.
    offenders = []
    for path in _modules():
        if path.parts[len(REPO.parts)] != "llmedge" or path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "llmedge" and node.level == 0:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders


def test_every_llmedge_error_lives_in_errors_py() -> None:
    elsewhere = []
    for path in _modules():
        if path == REPO / "llmedge" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id.endswith("Error") for base in node.bases
            ):
                elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not elsewhere


def test_modules_stay_small() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"
