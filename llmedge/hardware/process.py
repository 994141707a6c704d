"""The serving process's own memory: a fresh interpreter with the server and an engine imported.

Before a model is loaded, `llmedge serve` already holds the interpreter, pydantic, the HTTP
stack and the engine's shared libraries: tens of MiB that depend on the install, not on the
model. They are measured once per install, by starting the same interpreter with the same
imports, and cached; a reinstalled or upgraded module (its file changes) measures again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmedge.hardware.cache import read_cached, write_cached

PROCESS_TIMEOUT_S = 120.0
# The child reports its peak resident memory: VmHWM where /proc has it (Linux's ru_maxrss keeps
# the parent's peak across fork and exec), else ru_maxrss (bytes on macOS).
_CHILD = """
import importlib, json, resource, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
exec(sys.argv[2])
try:
    with open("/proc/self/status") as status:
        print(next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:")))
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@dataclass(frozen=True)
class ProcessFacts:
    """The peak resident bytes of a process that imported `modules` and ran `setup`."""

    resident_bytes: int
    modules: tuple[str, ...]
    measured_at: str = ""


def install_key(modules: Sequence[str], setup: str = "") -> str:
    """What the measurement depends on: the interpreter and each module's file, as it is now."""
    parts = [sys.executable, sys.version, setup]
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec and spec.origin else ""
        try:
            stamp = os.stat(origin).st_mtime_ns if origin else 0
        except OSError:
            stamp = 0
        parts.append(f"{name}={origin}@{stamp}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def measure_process(modules: Sequence[str], setup: str = "") -> ProcessFacts | None:
    """Start this interpreter, import `modules`, run `setup`; None if that fails here."""
    command = [sys.executable, "-c", _CHILD, json.dumps(list(modules)), setup]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].isdigit():
        return None
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return ProcessFacts(int(lines[-1]), tuple(modules), stamp)


def cached_process(
    cache_file: Path, modules: Sequence[str], setup: str = "", remeasure: bool = False
) -> ProcessFacts | None:
    """The process measured for this install, measured (and cached) on a miss."""
    key = install_key(modules, setup)
    cached = None if remeasure else read_cached(cache_file, key)
    if cached is not None:
        try:
            return ProcessFacts(
                int(cached["resident_bytes"]),
                tuple(cached["modules"]),
                str(cached.get("measured_at", "")),
            )
        except (KeyError, TypeError, ValueError):
            pass  # a damaged record: measure again
    facts = measure_process(modules, setup)
    if facts is not None:
        write_cached(cache_file, key, asdict(facts))
    return facts
