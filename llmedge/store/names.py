"""Model names, validated once: what `name[:tag][@version]` may hold and the folder it maps to.

A name is one to four parts joined by `/` (`smollm2-135m`, `hf.co/owner/repo`); each part is
lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit. `:` separates the
tag (a quantization such as `q4_k_m`, or `latest`), `@N` an earlier version of that tag. No part
and no tag ends in a suffix the store gives its own files (`.json`, `.tmp`, `.part`, `.lock`,
`.verified`), so a name never reads as one of them.

Each `name:tag` has one folder, `<name with / as +>=<tag>`: neither `+` nor `=` can be part of
a name or a tag, so two references never share a folder and the folder name gives the
reference back exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmedge.errors import InvalidRequestError

MAX_NAME_CHARS = 180
MAX_TAG_CHARS = 64
MAX_PARTS = 4
MAX_VERSION = 10**9
RESERVED_SUFFIXES = (".json", ".tmp", ".part", ".lock", ".verified")
LATEST = "latest"

_PART = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_KEY_SLASH, _KEY_TAG = "+", "="


def _part_problem(part: str, what: str) -> str | None:
    """Why `part` cannot be a name part or tag (None: it can)."""
    if not part:
        return f"an empty {what}"
    if not _PART.match(part):
        return (
            f"{what} {part!r} may hold only a-z, 0-9, '.', '_' and '-', starting with a letter "
            "or digit"
        )
    if ".." in part:
        return f"{what} {part!r} contains '..'"
    if part.endswith(RESERVED_SUFFIXES):
        return f"{what} {part!r} ends in a suffix the store uses for its own files"
    return None


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid model name (None: it is)."""
    if len(name) > MAX_NAME_CHARS:
        return f"it is longer than {MAX_NAME_CHARS} characters"
    parts = name.split("/")
    if len(parts) > MAX_PARTS:
        return f"it has more than {MAX_PARTS} parts separated by '/'"
    for part in parts:
        if problem := _part_problem(part, "part"):
            return problem
    return None


def tag_problem(tag: str) -> str | None:
    if len(tag) > MAX_TAG_CHARS:
        return f"the tag is longer than {MAX_TAG_CHARS} characters"
    return _part_problem(tag, "tag")


@dataclass(frozen=True)
class ModelRef:
    """A model reference, `name[:tag][@version]`, checked so it cannot leave the store."""

    name: str
    tag: str | None = None
    version: int | None = None  # an earlier version of name:tag, numbered as `show` lists them

    def __post_init__(self) -> None:
        problem = name_problem(self.name) or (tag_problem(self.tag) if self.tag else None)
        if problem:
            raise InvalidRequestError(
                f"{str(self)!r} is not a valid model name: {problem}", param="model"
            )

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Read `name[:tag][@version]` (case-insensitive); refuse what the store cannot hold."""
        body, at, version_text = text.strip().lower().partition("@")
        name, _, tag = body.partition(":")
        version = None
        if at:
            if not version_text.isdigit() or not 0 < int(version_text) <= MAX_VERSION:
                raise InvalidRequestError(
                    f"{text!r}: a version is @N with N a number `llmedge show` lists",
                    param="model",
                )
            version = int(version_text)
        problem = name_problem(name) or ("':' appears twice" if ":" in tag else None)
        if problem is None and tag:
            problem = tag_problem(tag)
        if problem is None and version is not None and not tag:
            problem = "a version needs its tag: NAME:TAG@N"
        if problem:
            raise InvalidRequestError(
                f"{text!r} is not a valid model name: {problem}", param="model"
            )
        return cls(name, tag or None, version)

    def __str__(self) -> str:
        text = f"{self.name}:{self.tag}" if self.tag else self.name
        return f"{text}@{self.version}" if self.version is not None else text

    @property
    def key(self) -> str:
        """The folder name of `name:tag` in the store (a tag is required)."""
        if self.tag is None:
            raise InvalidRequestError(f"{self} needs a tag to be stored", param="model")
        return name_key(self.name) + _KEY_TAG + self.tag


def name_key(name: str) -> str:
    """The start every folder name of `name`'s tags shares (up to and without `=`)."""
    return name.replace("/", _KEY_SLASH)


def ref_from_key(key: str) -> ModelRef | None:
    """The reference a store folder name stands for (None: it stands for none)."""
    encoded, sep, tag = key.rpartition(_KEY_TAG)
    if not sep:
        return None
    name = encoded.replace(_KEY_SLASH, "/")
    if name_problem(name) or tag_problem(tag):
        return None
    return ModelRef(name, tag)
