"""The router's inputs, gathered on this host: backend probes, the model's artifacts, the budget.

Everything with I/O happens here (probing backends, reading GGUF headers and manifests); the
decision itself is `llmedge.routing.router.choose_backend`, a pure function.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import replace

from llmedge.backends import backend_names, get_backend
from llmedge.cards import all_cards, embedded_file
from llmedge.fit import (
    FitOptions,
    ModelShape,
    estimate_memory,
    memory_budget,
    shape_from_card,
    shape_of_file,
)
from llmedge.hardware import KNOWN_ENGINES, BackendFacts, HostFacts, llama_cpp_features, probe_host
from llmedge.hub.plan import card_default
from llmedge.routing.router import (
    Artifact,
    BackendOption,
    RouteDecision,
    RouteRequest,
    choose_backend,
)
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, Store

# Folder formats (MLX, MLC, safetensors) are estimated as their weights, a float16 KV cache and
# the runtime's share on top; GGUF files get the fit advisor's exact estimate.
KV_BYTES_PER_VALUE = 2
RUNTIME_OVERHEAD_FRACTION = 0.1
RUNTIME_OVERHEAD_BYTES = 64 << 20


def _uses_gpu(name: str, available: bool, reason: str, host: HostFacts) -> bool:
    if not available or not (host.gpus or host.apple):
        return False
    if name == "llama.cpp":
        # The probe says whether this build offloads (as HostFacts.gpu_offload reads it).
        return "GPU offload" in reason
    return name in ("mlc", "mlx") and (name == "mlc" or host.apple is not None)


def backend_options(
    host: HostFacts, formats: Collection[str] | None = None
) -> tuple[BackendOption, ...]:
    """Every registered backend, probed; with `formats`, only those that could run one."""
    options = []
    for name in backend_names():
        try:
            backend = get_backend(name)
        except Exception as exc:  # a broken plug-in must not take the router down
            options.append(BackendOption(name, (), False, f"its plug-in does not load: {exc}"))
            continue
        kinds = tuple(backend.formats)
        if formats is not None and not set(kinds) & set(formats):
            options.append(BackendOption(name, kinds, False, "not probed", probed=False))
            continue
        found = backend.probe()
        gpu = _uses_gpu(name, found.available, found.reason, host)
        options.append(BackendOption(name, kinds, found.available, found.reason, gpu))
    return tuple(options)


def _gguf_bytes(shape: ModelShape, ctx_tokens: int, parallel: int) -> int:
    ctx = min(ctx_tokens, shape.ctx_train_tokens or ctx_tokens)
    return estimate_memory(shape, FitOptions(ctx_tokens=ctx, parallel=parallel)).total_bytes


def folder_model_bytes(manifest: Manifest, ctx_tokens: int, parallel: int) -> int:
    """Weights, KV cache and overhead of a model stored as a folder."""
    kv = 0
    facts = manifest.facts
    if facts and facts.n_layers and facts.n_embd and facts.n_heads:
        ctx = min(ctx_tokens, facts.ctx_train_tokens or ctx_tokens)
        head_dim = facts.n_embd // facts.n_heads
        kv_heads = facts.n_kv_heads or facts.n_heads
        kv = 2 * facts.n_layers * kv_heads * head_dim * ctx * parallel * KV_BYTES_PER_VALUE
    weights = manifest.size_bytes
    return weights + kv + int(weights * RUNTIME_OVERHEAD_FRACTION) + RUNTIME_OVERHEAD_BYTES


def _stored_artifact(store: Store, manifest: Manifest, ctx: int, parallel: int) -> Artifact:
    blob = store.model_file(manifest)
    if manifest.format == "gguf" and blob.is_file():
        needed = _gguf_bytes(shape_of_file(blob, manifest.name), ctx, parallel)
    else:
        needed = folder_model_bytes(manifest, ctx, parallel)
    return Artifact(manifest.format, manifest.ref, needed, manifest.tag)


def artifacts_for(store: Store, ref: ModelRef, ctx_tokens: int, parallel: int) -> list[Artifact]:
    """The stored versions `ref` names; else the card's default download, estimated.

    A name without a tag means its newest version, as in the store: here, the newest of each
    format, so the router chooses between formats, and a tag chooses the quantization.
    """
    newest: dict[str, Manifest] = {}
    for manifest in sorted(store.manifests(), key=lambda m: m.created_at):
        if manifest.name == ref.name and ref.tag in (None, manifest.tag):
            newest[manifest.format if ref.tag is None else manifest.tag] = manifest
    found = [_stored_artifact(store, m, ctx_tokens, parallel) for m in newest.values()]
    card = all_cards().get(ref.name)
    if found or card is None:
        return found
    quant = ref.tag or card_default(card)
    embedded = embedded_file(card)
    if card.embedded and embedded is not None and card.embedded.quant == quant:
        shape = shape_of_file(embedded, card.name)
    else:
        try:
            shape = shape_from_card(card, quant)
        except KeyError:
            return []
    return [Artifact("gguf", "", _gguf_bytes(shape, ctx_tokens, parallel), quant)]


def route_model(
    settings: Settings,
    store: Store,
    name: str,
    *,
    override: str | None = None,
    check_memory: bool = True,
    probe_all: bool = False,
) -> RouteDecision:
    """Route the model `name` names on this host (see `llmedge.routing.router`).

    Without `check_memory`, memory is left to the load-time guard (which can first unload idle
    models). Without `probe_all`, only backends that could run one of its formats are probed, so
    loading a GGUF model never imports MLX.
    """
    ref = store.canonical(ModelRef.parse(name))
    host = probe_host()
    artifacts = artifacts_for(store, ref, settings.ctx_tokens, settings.least_parallel)
    formats = None if probe_all or override else {a.format for a in artifacts}
    budget: int | None = None
    source = ""
    if check_memory:
        given = int(settings.memory_budget_bytes) if settings.memory_budget_bytes else None
        budget, source = memory_budget(host, given, offload=host.apple is not None)
        source = "LLMEDGE_MEMORY_BUDGET_BYTES" if given is not None else source
    request = RouteRequest(
        model=str(ref),
        host=host,
        backends=backend_options(host, formats),
        artifacts=tuple(artifacts),
        budget_bytes=budget,
        budget_source=source,
        override=override,
        prefer=settings.prefer_backend,
        remote_url=settings.remote_url,
    )
    return choose_backend(request)


def with_backends(host: HostFacts) -> HostFacts:
    """The host with every registered backend (and known engines without one) probed."""
    found = []
    for name in backend_names():
        availability = get_backend(name).probe()
        features: tuple[str, ...] = ()
        if name == "llama.cpp" and availability.available:
            import llama_cpp

            features = llama_cpp_features(llama_cpp.llama_print_system_info().decode())
        found.append(BackendFacts(name, availability.available, availability.reason, features))
    for name, module in KNOWN_ENGINES.items():
        if name not in {b.name for b in found}:
            installed = importlib.util.find_spec(module) is not None
            why = (
                "installed; no llmedge backend registered for it" if installed else "not installed"
            )
            found.append(BackendFacts(name, False, f"{module} {why}"))
    return replace(host, backends=tuple(found))
