"""Optional parts of llmedge: import one, or say which extra brings it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from llmedge.errors import BackendUnavailableError, ExtraNotInstalledError

MLX_INSTALL_HINT = "install it with `pip install 'llmedge[mlx]'` (on Linux: mlx-lm[cpu])"


def import_extra(module: str, extra: str) -> ModuleType:
    """Import one of llmedge's optional packages, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        if missing.split(".")[0] == module.split(".")[0] and missing != module:
            raise  # a module of our own is missing: a broken install, not a missing extra
        raise ExtraNotInstalledError(extra, missing) from exc


def import_mlx() -> tuple[Any, Any]:
    """`mlx.core` and `mlx_lm`, or `BackendUnavailableError` saying how to install them."""
    try:
        mx = importlib.import_module("mlx.core")
        mlx_lm = importlib.import_module("mlx_lm")
    except (ImportError, OSError) as exc:  # plain `mlx` on Linux: its core library is missing
        raise BackendUnavailableError(
            f"mlx-lm cannot be imported ({exc}); {MLX_INSTALL_HINT}"
        ) from exc
    return mx, mlx_lm
