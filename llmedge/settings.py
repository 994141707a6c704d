"""The one settings object: environment (`LLMEDGE_*`), then command-line flags, over defaults.

Every path derives from `home`. The CLI builds its flags from these fields, so `--help` and the
environment always agree.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import platformdirs
from pydantic import ByteSize, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m"
# A keep-alive longer than any clock reaches (a century): the model stays until it is evicted.
MAX_KEEP_ALIVE_S = 100 * 365 * 86400.0
# KV cache types llama.cpp's CPU backend runs: 16-bit floats, 8- or 4-bit blocks of 32 values.
KV_TYPES = ("f16", "q8_0", "q4_0")
QUANTIZED_KV_TYPES = ("q8_0", "q4_0")
FlashAttention = Literal["auto", "on", "off"]
# `--parallel auto` gives a model at most this many slots: on a CPU a decode step of 8 rows
# already makes most of what a step can, and each slot has its own KV cache.
AUTO_PARALLEL_MAX = 8


def parse_kv_type(text: str) -> tuple[str, str]:
    """`TYPE` (K and V alike) or `K,V` -> the K and V cache types; ValueError names the choices."""
    parts = [part.strip().lower() for part in text.split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or any(part not in KV_TYPES for part in parts):
        raise ValueError(
            f"KV cache type {text!r}: write one of {', '.join(KV_TYPES)} for K and V alike, "
            "or K,V (e.g. q8_0,f16)"
        )
    return parts[0], parts[1]


def flash_attention_problem(kv_type_v: str, flash_attn: str) -> str | None:
    """Why llama.cpp would refuse these options (a quantized V cache needs flash attention)."""
    if kv_type_v in QUANTIZED_KV_TYPES and flash_attn == "off":
        return (
            f"a {kv_type_v} V cache needs flash attention, which llama.cpp refuses to run "
            "without: use --flash-attn auto (or on), or keep V in f16 (--kv-type K,f16)"
        )
    return None


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
    parallel: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="sequences a loaded model decodes together (server slots); auto: up to "
        f"{AUTO_PARALLEL_MAX}, as many as half the memory left beside the model holds",
    )
    max_queue: int = Field(
        64, ge=0, le=100_000, description="requests that may wait for a slot before 503 Busy"
    )
    keep_alive_s: float = Field(
        300,
        ge=-1,
        le=MAX_KEEP_ALIVE_S,
        description="seconds an idle model stays loaded (-1: until evicted)",
    )
    max_loaded_models: int = Field(
        3, ge=1, le=64, description="models kept loaded at once, memory permitting"
    )
    gpu_layers: int = Field(
        -1, ge=-1, le=1000, description="layers to offload to a GPU (-1: all that the build can)"
    )
    memory_budget_bytes: ByteSize | None = Field(
        None,
        ge=0,
        description="memory a model may use, e.g. 6GiB (default: the RAM available at load time)",
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
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="browser origins allowed to call the server, comma-separated "
        "(e.g. http://localhost:3000); none by default",
    )
    max_request_bytes: int = Field(
        8 << 20, ge=1024, le=1 << 30, description="largest request body the server accepts"
    )
    max_messages: int = Field(
        2048, ge=1, le=1 << 20, description="most messages one chat request may carry"
    )
    allow_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="host names the server answers to besides loopback names, this machine's "
        "name and the bound address, comma-separated; * allows any (a guard against DNS "
        "rebinding: a web page whose name now points here is refused)",
    )
    remote_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+",
        description="an OpenAI-compatible server (its /v1 URL) that takes the requests for "
        "models this host does not have or cannot fit",
    )
    remote_key: SecretStr | None = Field(
        None, description="API key sent to the remote engine as `Authorization: Bearer KEY`"
    )
    prefer_backend: str | None = Field(
        None, description="backend to try first wherever it can run the model (e.g. mlc)"
    )
    kv_type: str = Field(
        "f16",
        description="KV cache type for llama.cpp: f16, q8_0 (half the memory) or q4_0, or K,V "
        "for each (e.g. q8_0,f16)",
    )
    flash_attn: FlashAttention = Field(
        "auto",
        description="flash attention for llama.cpp: auto (on wherever the device supports it), "
        "on or off; a quantized V cache needs it",
    )

    @field_validator("kv_type")
    @classmethod
    def _normal_kv_type(cls, value: str) -> str:
        k, v = parse_kv_type(value)
        return k if k == v else f"{k},{v}"

    @model_validator(mode="after")
    def _runnable_attention(self) -> Settings:
        problem = flash_attention_problem(self.kv_types[1], self.flash_attn)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def least_parallel(self) -> int:
        """The sequences a model surely gets: `parallel`, or one for `auto` (which gives it more
        where memory allows, `llmedge.fit.advisor.slots_that_fit`)."""
        return 1 if self.parallel == "auto" else self.parallel

    @property
    def kv_types(self) -> tuple[str, str]:
        """The K and V cache types."""
        return parse_kv_type(self.kv_type)

    speculative: Literal["off", "ngram", "draft"] = Field(
        "ngram",
        description="speculative decoding: off, ngram (guess tokens from the context; answers "
        "stay the same), or draft (guesses from the --draft model)",
    )
    draft: str | None = Field(
        None,
        min_length=1,
        description="a stored model with the served model's vocabulary that drafts tokens "
        "ahead (speculative decoding; implies --speculative draft)",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_draft_model_drafts(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("draft") and not data.get("speculative"):
            return {**data, "speculative": "draft"}
        return data

    @model_validator(mode="after")
    def _drafts_need_a_draft_model(self) -> Settings:
        if self.speculative == "draft" and self.draft is None:
            raise ValueError("--speculative draft needs a draft model: --draft MODEL")
        return self

    @field_validator("cors_origins", "allow_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def preflight_dir(self) -> Path:
        """Where the verdicts of llama.cpp's test loads are kept (`backends.llama.preflight`)."""
        return self.home / "preflight"

    @property
    def cache_dir(self) -> Path:
        """Measurements of this host and install (bandwidth, the serving process), kept as JSON."""
        return self.home / "cache"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced (None means: keep), validated again."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return type(self).model_validate({**self.model_dump(), **values}) if values else self


# The fields `serve`, `run` and `chat` expose as flags; the rest stay environment-only.
CLI_FIELDS = (
    "host",
    "port",
    "ctx_tokens",
    "parallel",
    "max_queue",
    "keep_alive_s",
    "max_loaded_models",
    "memory_budget_bytes",
    "threads",
    "gpu_layers",
    "kv_type",
    "flash_attn",
    "api_key",
    "log_level",
    "speculative",
    "draft",
)


def flag_of(name: str) -> str:
    """A setting's flag: units stay in the field names and leave the flags (ctx_tokens: --ctx)."""
    return "--" + re.sub(r"_(tokens|s|bytes)$", "", name).replace("_", "-")


def add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add `--field-name` flags for these settings, with help and defaults taken from the fields."""
    for name in names:
        field = Settings.model_fields[name]
        flag = flag_of(name)
        kind: type = field.annotation if field.annotation in (int, float) else str  # type: ignore[assignment]
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        metavar = "|".join(choices) if choices else flag[2:].upper().replace("-", "_")
        words = [get_args(a) for a in get_args(field.annotation) if get_origin(a) is Literal]
        if words:  # a number or a word (`--parallel N|auto`)
            metavar = "|".join(("N", *(w for group in words for w in group)))
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            choices=choices,
            metavar=metavar,
            help=f"{field.description} [env LLMEDGE_{name.upper()}]",
        )


def settings_from_args(args: argparse.Namespace, names: tuple[str, ...]) -> Settings:
    """Settings from the environment, with the flags the user gave on top."""
    return Settings().with_overrides(**{name: getattr(args, name, None) for name in names})


def describe_invalid(error: ValidationError) -> str:
    """One line for invalid settings, naming each flag and environment variable concerned."""
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        if name in Settings.model_fields:
            message = f"{flag_of(name)} / LLMEDGE_{name.upper()}: {message}"
        problems.append(message)
    return "; ".join(problems)
