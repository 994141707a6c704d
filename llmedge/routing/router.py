"""The backend router: which engine runs a model on this host, in which format, and why.

A pure function over frozen dataclasses; probing the host and the backends, and estimating each
stored artifact's memory, happen before, in `llmedge.routing.facts`. The rules, in order:

1. `--backend NAME` overrides everything but memory (an unknown name lists the valid ones).
2. The host sets the order: Apple Silicon tries MLX, then llama.cpp on Metal; an NVIDIA GPU
   tries llama.cpp with layers offloaded, then MLC; a CPU-only host tries llama.cpp, then MLX
   on the CPU. A preferred backend (`prefer`) moves to the front.
3. The first backend that is installed, has an artifact in one of its formats, and fits the
   memory it can use wins, with the best-quality artifact that fits.
4. When nothing local can run it, the remote engine takes it if one is configured; otherwise the
   decision is a refusal carrying the fit numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmedge.errors import BackendUnavailableError, InsufficientMemoryError
from llmedge.hardware import HostFacts

REMOTE = "remote"
GIB = 1 << 30
# Backends that keep the whole model in GPU memory (no split with the CPU).
GPU_ONLY = frozenset({"mlc"})
# How to get an artifact in a format the model lacks.
PULL_HINTS = {
    "gguf": "`llmedge pull {model}` gets one",
    "mlx": "`llmedge pull {model} --mlx` converts one",
    "mlc": "compile one with `mlc_llm convert_weight` and store the folder",
    "gptq": "`llmedge quantize {model} --gptq` makes one",
    "awq": "`llmedge quantize {model} --awq` makes one",
    "nf4": "`llmedge quantize {model} --nf4` makes one",
}

Verdict = Literal["chosen", "usable", "unavailable", "no_artifact", "too_large", "overridden"]


@dataclass(frozen=True)
class BackendOption:
    """A registered backend as probed on this host."""

    name: str
    formats: tuple[str, ...]
    available: bool
    reason: str  # the probe's own words: version and device, or what is missing
    gpu: bool = False  # runs on the host's GPU (offloaded layers, Metal or CUDA)
    probed: bool = True  # False: skipped, as the model has no artifact in its formats


@dataclass(frozen=True)
class Artifact:
    """One way the model exists: a stored version, or (ref "") one that could be pulled."""

    format: str
    ref: str  # `name:tag` in the store; "" for an estimate of one not pulled yet
    needed_bytes: int  # memory it takes at the requested context and parallelism
    label: str = ""  # its quantization, e.g. q4_k_m or mlx-q4

    @property
    def stored(self) -> bool:
        return bool(self.ref)

    def describe(self) -> str:
        return self.ref or f"{self.label or self.format} (not pulled yet)"


@dataclass(frozen=True)
class RouteRequest:
    """Everything the router decides from."""

    model: str
    host: HostFacts
    backends: tuple[BackendOption, ...]
    artifacts: tuple[Artifact, ...]  # stored first, best quality first
    budget_bytes: int | None  # None: memory is not judged here (the load checks it)
    budget_source: str = "available RAM"
    override: str | None = None
    prefer: str | None = None
    remote_url: str | None = None


@dataclass(frozen=True)
class Alternative:
    """A backend that was considered, and what came of it."""

    backend: str
    format: str | None
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class RouteDecision:
    """The backend and artifact chosen (backend None: refused), with the reasons."""

    model: str
    backend: str | None
    artifact: Artifact | None
    reasons: tuple[str, ...]
    alternatives: tuple[Alternative, ...]
    needed_bytes: int | None = None  # set on a refusal for memory
    budget_bytes: int | None = None

    @property
    def refused(self) -> bool:
        return self.backend is None

    def raise_if_refused(self) -> None:
        """Turn a refusal into the error a user acts on."""
        if not self.refused:
            return
        if self.needed_bytes is not None and self.budget_bytes is not None:
            raise InsufficientMemoryError(self.needed_bytes, self.budget_bytes, self.reasons[-1])
        raise BackendUnavailableError(f"no backend can run {self.model}: {self.reasons[-1]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Judged:
    option: BackendOption
    verdict: Verdict
    reason: str
    artifact: Artifact | None = None
    needed_bytes: int = 0
    budget_bytes: int = 0


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def is_unified(host: HostFacts) -> bool:
    """An NVIDIA GPU that shares the host's memory (Jetson-class): one pool, not two."""
    return bool(host.gpus) and host.gpus[0].vram_total_bytes >= 0.9 * host.total_ram_bytes


def describe_host(host: HostFacts) -> str:
    if host.apple is not None:
        return f"Apple Silicon ({host.apple.chip}, {gib(host.apple.unified_memory_bytes)} unified)"
    nvidia = [g for g in host.gpus if g.vendor == "nvidia"]
    if nvidia and is_unified(host):
        return f"NVIDIA {nvidia[0].name} sharing {gib(host.total_ram_bytes)} of unified memory"
    if nvidia:
        return f"NVIDIA {nvidia[0].name} ({gib(nvidia[0].vram_free_bytes)} free)"
    return f"CPU only ({host.machine}, {host.usable_cores} cores, {gib(host.total_ram_bytes)} RAM)"


def host_order(host: HostFacts) -> list[tuple[str, str]]:
    """The built-in backends in the order this kind of host favours them, each with why."""
    if host.apple is not None:
        return [
            ("mlx", "MLX is built for Apple Silicon's unified memory"),
            ("llama.cpp", "llama.cpp runs on Apple Silicon through Metal"),
            ("mlc", "MLC runs compiled models on Metal"),
        ]
    if any(g.vendor == "nvidia" for g in host.gpus):
        return [
            ("llama.cpp", "llama.cpp offloads layers to the NVIDIA GPU"),
            ("mlc", "MLC runs compiled models on CUDA"),
            ("mlx", "MLX runs on the CPU here, slower than llama.cpp"),
        ]
    return [
        ("llama.cpp", "llama.cpp is the fastest engine on a CPU"),
        ("mlx", "MLX runs on the CPU here, slower than llama.cpp"),
        ("mlc", "MLC runs compiled models on the CPU"),
    ]


def _budget_for(option: BackendOption, request: RouteRequest, budget: int) -> int:
    """The memory this backend can use: RAM, plus free VRAM where layers can move there."""
    host = request.host
    if not option.gpu or host.apple is not None or not host.gpus or is_unified(host):
        return budget
    vram = host.gpus[0].vram_free_bytes
    return vram if option.name in GPU_ONLY else budget + vram


def _judge(option: BackendOption, request: RouteRequest) -> _Judged:
    if option.probed and not option.available:
        return _Judged(option, "unavailable", option.reason)
    mine = [a for a in request.artifacts if a.format in option.formats]
    if not mine:
        formats = "/".join(option.formats)
        name = request.model.partition(":")[0]
        hints = [PULL_HINTS[f].format(model=name) for f in option.formats if f in PULL_HINTS]
        why = f"no {formats} artifact of {request.model}" + (f": {hints[0]}" if hints else "")
        return _Judged(option, "no_artifact", why)
    if request.budget_bytes is None:
        return _Judged(option, "usable", option.reason, mine[0])
    budget = _budget_for(option, request, request.budget_bytes)
    source = request.budget_source + (" + free VRAM" if budget > request.budget_bytes else "")
    for artifact in mine:
        if artifact.needed_bytes <= budget:
            need = gib(artifact.needed_bytes)
            why = f"{artifact.describe()} needs {need} of {gib(budget)} ({source})"
            return _Judged(option, "usable", why, artifact, artifact.needed_bytes, budget)
    smallest = min(mine, key=lambda a: a.needed_bytes)
    why = (
        f"too large: {smallest.describe()} needs {gib(smallest.needed_bytes)} but "
        f"{gib(budget)} is available ({source})"
    )
    return _Judged(option, "too_large", why, None, smallest.needed_bytes, budget)


def _candidates(request: RouteRequest) -> list[tuple[BackendOption, str]]:
    """Registered backends in the order to try them, each with why it sits there."""
    by_name = {b.name: b for b in request.backends}
    ordered = [(by_name[n], why) for n, why in host_order(request.host) if n in by_name]
    seen = {b.name for b, _ in ordered}
    ordered += [(b, "a plug-in backend") for b in request.backends if b.name not in seen]
    if request.prefer in by_name:
        ordered.sort(key=lambda item: item[0].name != request.prefer)
        ordered = [
            (b, "preferred in the settings" if b.name == request.prefer else why)
            for b, why in ordered
        ]
    return ordered


def valid_backends(request: RouteRequest) -> list[str]:
    return sorted({b.name for b in request.backends} | {REMOTE})


def _remote(request: RouteRequest, chosen: bool) -> Alternative:
    if request.remote_url is None:
        return Alternative(
            REMOTE, None, "unavailable", "no remote engine configured (`--remote URL`)"
        )
    if chosen:
        return Alternative(REMOTE, None, "chosen", f"{request.remote_url} serves it")
    why = f"{request.remote_url}; used when no local backend can run the model"
    return Alternative(REMOTE, None, "usable", why)


def choose_backend(request: RouteRequest) -> RouteDecision:
    """Decide which backend runs `request.model` here; see the module docstring for the rules."""
    if request.override is not None:
        return _overridden(request)
    judged = [(_judge(option, request), why) for option, why in _candidates(request)]
    winner = next(((j, why) for j, why in judged if j.verdict == "usable"), None)
    host = describe_host(request.host)
    alternatives = [
        Alternative(
            j.option.name,
            j.artifact.format if j.artifact else None,
            "chosen" if winner and j is winner[0] else j.verdict,
            j.reason,
        )
        for j, _ in judged
    ]
    if winner is not None:
        chosen, why = winner
        assert chosen.artifact is not None
        reasons = [host, why, chosen.reason]
        if not chosen.artifact.stored:
            reasons.append(f"pull it first: `llmedge pull {request.model}`")
        return RouteDecision(
            request.model,
            chosen.option.name,
            chosen.artifact,
            tuple(reasons),
            (*alternatives, _remote(request, False)),
        )
    too_large = [j for j, _ in judged if j.verdict == "too_large"]
    if request.remote_url is not None:
        why = (
            f"too large for this host ({too_large[0].reason.removeprefix('too large: ')})"
            if too_large
            else "no local backend can run it"
        )
        return RouteDecision(
            request.model,
            REMOTE,
            None,
            (host, why, f"the remote engine at {request.remote_url} serves it"),
            (*alternatives, _remote(request, True)),
        )
    return _refusal(request, host, too_large, alternatives)


def _refusal(
    request: RouteRequest, host: str, too_large: list[_Judged], alternatives: list[Alternative]
) -> RouteDecision:
    remote = _remote(request, False)
    if too_large:
        best = min(too_large, key=lambda j: j.needed_bytes - j.budget_bytes)
        advice = (
            f"{best.option.name}: {best.reason}; free memory, pick a smaller quantization "
            f"(`llmedge fit {request.model}`), or serve it from a bigger machine with "
            "`llmedge serve --remote URL`"
        )
        return RouteDecision(
            request.model,
            None,
            None,
            (host, advice),
            (*alternatives, remote),
            best.needed_bytes,
            best.budget_bytes,
        )
    if not request.artifacts:
        advice = f"{request.model} is not stored: `llmedge pull {request.model}` gets it"
    else:
        formats = ", ".join(sorted({a.format for a in request.artifacts}))
        advice = f"no installed backend runs {formats}: " + "; ".join(
            f"{a.backend}: {a.reason}" for a in alternatives
        )
    return RouteDecision(request.model, None, None, (host, advice), (*alternatives, remote))


def _overridden(request: RouteRequest) -> RouteDecision:
    name = request.override
    valid = valid_backends(request)
    if name not in valid:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; valid backends: {', '.join(valid)}"
        )
    others = [
        Alternative(b.name, None, "overridden", f"--backend {name} was asked for")
        for b in request.backends
        if b.name != name
    ]
    host = describe_host(request.host)
    if name == REMOTE:
        if request.remote_url is None:
            raise BackendUnavailableError(
                "--backend remote needs a remote engine: pass --remote URL "
                "or set LLMEDGE_REMOTE_URL"
            )
        reasons = (host, f"--backend remote: the engine at {request.remote_url} serves it")
        return RouteDecision(
            request.model, REMOTE, None, reasons, (*others, _remote(request, True))
        )
    option = next(b for b in request.backends if b.name == name)
    judged = _judge(option, request)
    if judged.verdict in ("unavailable", "no_artifact"):
        raise BackendUnavailableError(
            f"--backend {name} cannot run {request.model}: {judged.reason}"
        )
    mine = Alternative(
        name,
        judged.artifact.format if judged.artifact else None,
        "chosen" if judged.artifact else judged.verdict,
        judged.reason,
    )
    alternatives = (mine, *others, _remote(request, False))
    if judged.artifact is None:  # too large: an override does not make memory appear
        return RouteDecision(
            request.model,
            None,
            None,
            (host, f"{name}: {judged.reason}; `llmedge fit {request.model}` shows what fits"),
            alternatives,
            judged.needed_bytes,
            judged.budget_bytes,
        )
    why = (host, f"--backend {name} was asked for", judged.reason)
    return RouteDecision(request.model, name, judged.artifact, why, alternatives)
