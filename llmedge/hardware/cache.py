"""Measurements kept under LLMEDGE_HOME: one JSON file each, valid for one key.

A key names what the measurement depends on (the CPU, the installed libraries); a file with
another key, another version, or damaged, is measured over and never trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CACHE_VERSION = 2  # 2: bandwidth records say how busy the host was


def read_cached(path: Path, key: str) -> dict[str, Any] | None:
    """The payload stored for `key`, or None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return None
    payload = data.get("payload")
    return payload if data.get("key") == key and isinstance(payload, dict) else None


def write_cached(path: Path, key: str, payload: dict[str, Any]) -> None:
    """Store `payload` for `key`, atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps({"version": CACHE_VERSION, "key": key, "payload": payload}))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
