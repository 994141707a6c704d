"""What the store records about a model version: its reference, its blobs, its serving defaults,
and where it came from.

A manifest is read back strictly: a digest that is not `sha256:` and 64 hex digits, a name the
store would refuse, or a field of the wrong type makes it unreadable (`ValueError`), so nothing a
damaged or planted file says is ever used as a path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llmedge.gguf import ModelFacts
from llmedge.store.names import ModelRef

__all__ = ["BlobPart", "Manifest", "ModelDefaults", "ModelRef", "QuantReport", "split_digest"]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# What a created model may set (Ollama's PARAMETER names), and the Python types each takes.
DEFAULT_PARAMETERS: dict[str, tuple[type, ...]] = {
    "temperature": (float, int),
    "top_p": (float, int),
    "top_k": (int,),
    "min_p": (float, int),
    "repeat_penalty": (float, int),
    "presence_penalty": (float, int),
    "frequency_penalty": (float, int),
    "seed": (int,),
    "num_predict": (int,),
    "stop": (list,),
}


def check_digest(digest: str) -> str:
    """`digest` itself when it is `sha256:<64 hex digits>`; else ValueError."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return digest


def split_digest(part_digests: Sequence[str]) -> str:
    """The id of a model made of several blobs: the sha256 of their digests, one per line."""
    joined = "\n".join(check_digest(d) for d in part_digests)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


@dataclass(frozen=True)
class BlobPart:
    """One file of a model stored as several (a GGUF split into parts)."""

    digest: str
    size_bytes: int
    file: str = ""  # the part's name where it came from, for people

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")


@dataclass(frozen=True)
class ModelDefaults:
    """What a created model brings to every request that does not say otherwise."""

    system: str | None = None
    template: str | None = None  # a Jinja chat template used instead of the model file's own
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "template": self.template, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDefaults:
        system, template = data.get("system"), data.get("template")
        parameters = dict(data.get("parameters") or {})
        if not all(isinstance(v, str | None) for v in (system, template)):
            raise ValueError("system and template must be text")
        for name, value in parameters.items():
            kinds = DEFAULT_PARAMETERS.get(name)
            if kinds is None or isinstance(value, bool) or not isinstance(value, kinds):
                raise ValueError(f"parameter {name!r} has an unusable value {value!r}")
        return cls(system, template, parameters)

    def merged(self, other: ModelDefaults) -> ModelDefaults:
        """These defaults with `other`'s on top (what `other` sets wins)."""
        return ModelDefaults(
            other.system if other.system is not None else self.system,
            other.template if other.template is not None else self.template,
            {**self.parameters, **other.parameters},
        )


@dataclass(frozen=True)
class QuantReport:
    """How a locally quantized model compares with the file it was made from."""

    source: str
    source_sha256: str
    bits_per_weight: float
    seconds: float
    perplexity: float | None = None
    source_perplexity: float | None = None
    eval_tokens: int | None = None
    eval_text: str | None = None
    perplexity_error: float | None = None  # one standard error of `perplexity`
    source_perplexity_error: float | None = None

    @property
    def perplexity_change(self) -> float | None:
        """Relative perplexity change against the source (0.02 = 2 % worse)."""
        if self.perplexity is None or not self.source_perplexity:
            return None
        return self.perplexity / self.source_perplexity - 1


@dataclass(frozen=True)
class Manifest:
    """One stored model version.

    A model in one file has that file's sha256 as `digest`. A model in several parts lists
    them in `parts`; its `digest` is `split_digest` of theirs and `size_bytes` their total.
    """

    name: str
    tag: str
    format: str
    digest: str
    size_bytes: int
    created_at: str
    source: dict[str, str] = field(default_factory=dict)
    facts: ModelFacts | None = None
    quant_report: QuantReport | None = None
    parts: tuple[BlobPart, ...] = ()
    defaults: ModelDefaults | None = None
    version: int = 0  # its number among the versions of name:tag (0: not numbered yet)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")

    @property
    def blobs(self) -> tuple[BlobPart, ...]:
        """Every blob this version needs: its parts, or its one file."""
        return self.parts or (BlobPart(self.digest, self.size_bytes),)

    def same_content(self, other: Manifest) -> bool:
        """Whether two versions serve the same thing (the same blobs and defaults)."""
        return (self.digest, self.parts, self.defaults) == (
            other.digest,
            other.parts,
            other.defaults,
        )

    def to_json(self) -> str:
        skip = ("facts", "quant_report", "parts", "defaults")
        data: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k not in skip}
        data["facts"] = self.facts.to_dict() if self.facts else None
        data["quant_report"] = asdict(self.quant_report) if self.quant_report else None
        if self.parts:
            data["parts"] = [asdict(p) for p in self.parts]
        if self.defaults:
            data["defaults"] = self.defaults.to_dict()
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read a manifest back; anything malformed raises ValueError."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            facts = data.pop("facts", None)
            report = data.pop("quant_report", None)
            parts = tuple(BlobPart(**p) for p in data.pop("parts", None) or ())
            defaults = data.pop("defaults", None)
            manifest = cls(
                **data,
                facts=ModelFacts.from_dict(facts) if facts else None,
                quant_report=QuantReport(**report) if report else None,
                parts=parts,
                defaults=ModelDefaults.from_dict(defaults) if defaults else None,
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed manifest: {exc}") from exc
        manifest._check()
        return manifest

    def _check(self) -> None:
        ModelRef(self.name, self.tag)  # raises (a ValueError) for a name the store refuses
        check_digest(self.digest)
        if not all(isinstance(v, str) for v in (self.format, self.created_at)):
            raise ValueError("format and created_at must be text")
        if not isinstance(self.source, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.source.items()
        ):
            raise ValueError("source must map text to text")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise ValueError("version must be a whole number")
        sizes = [p.size_bytes for p in self.blobs]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
            raise ValueError("sizes must be whole numbers of bytes")
        if self.facts is not None:
            _check_facts(self.facts)
        if self.parts:
            if split_digest([p.digest for p in self.parts]) != self.digest:
                raise ValueError("its digest does not match its parts")
            if sum(sizes) != self.size_bytes:
                raise ValueError("its size is not the sum of its parts")


def _check_facts(facts: ModelFacts) -> None:
    for name, value in facts.to_dict().items():
        text = name in ("architecture", "quantization")
        if text and not isinstance(value, str):
            raise ValueError(f"facts.{name} must be text")
        if name in ("name", "chat_template") and not isinstance(value, str | None):
            raise ValueError(f"facts.{name} must be text")
        if name not in ("architecture", "quantization", "name", "chat_template") and (
            isinstance(value, bool) or not isinstance(value, int | None)
        ):
            raise ValueError(f"facts.{name} must be a whole number")
