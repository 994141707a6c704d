"""The Python environment litert-torch runs in, made by llmedge itself on first use.

litert-torch pins typing-extensions below what pydantic needs, so it cannot share llmedge's
environment. The first TFLite conversion makes one under `<home>/envs/litert` (a virtualenv
with torch and litert-torch, a few minutes and about a gigabyte, once); later ones find it.
It is built beside its final place and renamed into it when complete, so an interrupted
build is started again rather than used half made. LLMEDGE_LITERT_PYTHON, or
`--litert-python`, names an interpreter to use instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from llmedge.errors import ConversionError

REQUIREMENTS = ("torch==2.13.0", "litert-torch>=0.10,<0.11")
OVERRIDE = "LLMEDGE_LITERT_PYTHON"
_STAMP = ".llmedge-installed"
INSTALL_TIMEOUT_S = 3600


def env_python(env_dir: Path) -> Path:
    """The interpreter of the virtualenv at `env_dir`."""
    if os.name == "nt":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def litert_python(
    home: Path,
    note: Callable[[str], None],
    requirements: Sequence[str] = REQUIREMENTS,
) -> Path:
    """An interpreter that has litert-torch: the override, or the one under `home`, made now
    (with `note` told each step) when there is none yet."""
    override = os.environ.get(OVERRIDE)
    if override:
        return Path(override)
    env_dir = home / "envs" / "litert"
    stamp = env_dir / _STAMP
    wanted = "\n".join(requirements)
    if env_python(env_dir).is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return env_python(env_dir)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="litert.tmp-", dir=env_dir.parent))
    log = env_dir.parent / "litert-install.log"
    try:
        note(f"making the TFLite converter's environment in {env_dir} (once, a few minutes)")
        # This interpreter's pip installs into the new environment (`pip --python`), which
        # then needs no pip of its own: seconds instead of a minute of ensurepip.
        own_pip = importlib.util.find_spec("pip") is not None
        venv = [sys.executable, "-m", "venv", *(["--without-pip"] if own_pip else []), str(staging)]
        _run(venv, log, note)
        target = ["-m", "pip", "--python", str(env_python(staging))] if own_pip else ["-m", "pip"]
        python = sys.executable if own_pip else str(env_python(staging))
        command = [python, *target, "install", "--disable-pip-version-check"]
        _run([*command, *requirements], log, note)
        (staging / _STAMP).write_text(wanted)
        shutil.rmtree(env_dir, ignore_errors=True)  # an older, different one
        try:
            os.replace(staging, env_dir)
        except OSError:
            if not (env_python(env_dir).is_file() and stamp.is_file()):
                raise  # nobody else finished one meanwhile
    except OSError as exc:
        raise ConversionError(
            "tflite", f"could not make the environment in {env_dir}: {exc}; see {log}"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    note("the TFLite converter's environment is ready")
    return env_python(env_dir)


def _run(command: list[str], log: Path, note: Callable[[str], None]) -> None:
    """Run a step, its output to `log`; pip's steps (Collecting, Installing) to `note`."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            out.write(line)
            tail = [*tail[-7:], line.rstrip()]
            if line.startswith(("Collecting ", "Installing collected", "Successfully installed")):
                note(line.strip()[:120])
        code = process.wait(timeout=INSTALL_TIMEOUT_S)
    if code != 0:
        raise ConversionError(
            "tflite",
            f"`{' '.join(command[:4])} …` failed (exit {code}): "
            + " / ".join(t for t in tail if t)[-400:]
            + f"; the whole output is in {log}",
        )
