"""The one settings object: environment (`LLMEDGE_*`), then command-line flags, over defaults.

Every path derives from `home`. The CLI builds its flags from these fields, so `--help` and the
environment always agree.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m"


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("llmedge", appauthor=False))


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class Settings(BaseSettings):
    """How llmedge runs on this machine."""

    model_config = SettingsConfigDict(env_prefix="LLMEDGE_", extra="ignore", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="folder holding the model store and everything llmedge keeps",
    )
    default_model: str = Field(
        DEFAULT_MODEL, min_length=1, description="model used when a command names none"
    )
    host: str = Field("127.0.0.1", description="address the server binds to")
    port: int = Field(8000, ge=0, le=65535, description="port the server listens on (0: any free)")
    ctx_tokens: int = Field(
        4096,
        ge=64,
        le=1 << 20,
        description="context window in tokens (capped at the model's trained context)",
    )
    threads: int = Field(
        default_factory=_default_threads, ge=1, le=512, description="CPU threads for decoding"
    )
    gpu_layers: int = Field(
        -1, ge=-1, le=1000, description="layers to offload to a GPU (-1: all that the build can)"
    )
    max_tokens_limit: int = Field(
        8192, ge=1, le=1 << 20, description="largest max_tokens a request may ask for"
    )
    api_key: SecretStr | None = Field(
        None, description="when set, requests must send `Authorization: Bearer KEY`"
    )
    log_level: str = Field(
        "info", pattern="^(debug|info|warning|error)$", description="server log level"
    )

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced (None means: keep), validated again."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return type(self).model_validate({**self.model_dump(), **values}) if values else self


# The fields `serve`, `run` and `chat` expose as flags; the rest stay environment-only.
CLI_FIELDS = ("host", "port", "ctx_tokens", "threads", "gpu_layers", "api_key", "log_level")


def add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add `--field-name` flags for these settings, with help and defaults taken from the fields."""
    for name in names:
        field = Settings.model_fields[name]
        flag = "--" + name.replace("_tokens", "").replace("_", "-")
        annotation = field.annotation
        kind: type = int if annotation is int else str
        env = f"LLMEDGE_{name.upper()}"
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} [env {env}]",
        )


def settings_from_args(args: argparse.Namespace, names: tuple[str, ...]) -> Settings:
    """Settings from the environment, with the flags the user gave on top."""
    return Settings().with_overrides(**{name: getattr(args, name, None) for name in names})
