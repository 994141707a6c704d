"""Writing a file so that a crash never leaves half of it: a unique temporary file, flushed to
disk, then renamed over the target in one step; and what to tell the user when the disk says no."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from llmedge.errors import DiskFullError, LlmedgeError

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def file_error(exc: OSError) -> LlmedgeError | None:
    """A failed file operation as a one-line error that says what to do, or None when `exc`
    is not about a file (a network error, say)."""
    if exc.errno in _FULL:
        return DiskFullError(exc.filename or "a file under LLMEDGE_HOME", "a file")
    if exc.filename is None:
        return None
    reason = exc.strerror or str(exc)
    if exc.errno in _NOT_WRITABLE:
        return LlmedgeError(
            f"cannot write {exc.filename} ({reason}); make it writable, or set LLMEDGE_HOME to "
            "a folder you can write"
        )
    return LlmedgeError(
        f"{exc.filename}: {reason}; fix that path, or set LLMEDGE_HOME to a folder you can write"
    )


def write_text_atomic(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Replace `path` with `text`; the temporary file lives in `tmp_dir` (default: beside it),
    which must be on the same file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = tmp_dir or path.parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
