"""The router over imagined hosts: a phone, an M2, an RTX 4090 box, a 2-core CI box, a Jetson."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from llmedge.errors import BackendUnavailableError, InsufficientMemoryError
from llmedge.hardware import AppleSiliconFacts, GpuFacts, HostFacts
from llmedge.routing.router import (
    REMOTE,
    Artifact,
    BackendOption,
    RouteDecision,
    RouteRequest,
    choose_backend,
)

GB = 1 << 30
REMOTE_URL = "http://big-box.lan:8000/v1"


def host(
    machine: str,
    cores: int,
    ram_gb: int,
    free_gb: int,
    gpus: tuple[GpuFacts, ...] = (),
    apple: AppleSiliconFacts | None = None,
) -> HostFacts:
    return HostFacts(
        os_name="Darwin" if apple else "Linux",
        os_version="",
        machine=machine,
        cpu_model="imagined",
        physical_cores=cores,
        logical_cores=cores,
        usable_cores=cores,
        simd=(),
        total_ram_bytes=ram_gb * GB,
        available_ram_bytes=free_gb * GB,
        gpus=gpus,
        apple=apple,
    )


PHONE = host("aarch64", 8, 8, 5)
M2 = host("arm64", 8, 16, 12, apple=AppleSiliconFacts("Apple M2", 16 * GB, 11 * GB))
RTX_4090 = host("x86_64", 16, 32, 28, gpus=(GpuFacts("nvidia", "RTX 4090", 24 * GB, 23 * GB),))
CI_BOX = host("x86_64", 2, 7, 6)
JETSON = host("aarch64", 12, 64, 58, gpus=(GpuFacts("nvidia", "Orin", 64 * GB, 58 * GB),))

LLAMA_CPU = BackendOption("llama.cpp", ("gguf",), True, "llama-cpp-python (CPU only)")
LLAMA_GPU = replace(LLAMA_CPU, reason="llama-cpp-python (GPU offload)", gpu=True)
MLX_METAL = BackendOption("mlx", ("mlx",), True, "mlx-lm on the Metal GPU", gpu=True)
MLX_CPU = BackendOption("mlx", ("mlx",), True, "mlx-lm on the CPU")
MLX_MISSING = BackendOption("mlx", ("mlx",), False, "mlx-lm cannot be imported")
MLC_CUDA = BackendOption("mlc", ("mlc",), True, "mlc_llm", gpu=True)
MLC_MISSING = BackendOption("mlc", ("mlc",), False, "mlc_llm is not installed")


def gguf(size_gb: float, quant: str = "q4_k_m") -> Artifact:
    return Artifact("gguf", f"model:{quant}", int(size_gb * GB), quant)


def mlx(size_gb: float) -> Artifact:
    return Artifact("mlx", "model:mlx-q4", int(size_gb * GB), "mlx-q4")


def mlc(size_gb: float) -> Artifact:
    return Artifact("mlc", "model:q4f16_1", int(size_gb * GB), "q4f16_1")


@dataclass(frozen=True)
class Case:
    name: str
    host: HostFacts
    backends: tuple[BackendOption, ...]
    artifacts: tuple[Artifact, ...]
    backend: str | None  # expected (None: refused)
    says: str  # a phrase the reasons must contain
    prefer: str | None = None
    remote: str | None = None


CASES = [
    Case("phone runs a 1B GGUF on llama.cpp", PHONE, (LLAMA_CPU, MLX_MISSING),
         (gguf(1.0),), "llama.cpp", "fastest engine on a CPU"),
    Case("phone refuses an 8B with the numbers", PHONE, (LLAMA_CPU,), (gguf(6.2),), None,
         "needs 6.20 GiB but 5.00 GiB is available"),
    Case("phone sends an 8B to the remote engine", PHONE, (LLAMA_CPU,), (gguf(6.2),), REMOTE,
         "too large for this host", remote=REMOTE_URL),
    Case("M2 prefers MLX when installed", M2, (LLAMA_GPU, MLX_METAL, MLC_MISSING),
         (gguf(4.9), mlx(4.5)), "mlx", "built for Apple Silicon"),
    Case("M2 without MLX runs llama.cpp on Metal", M2, (LLAMA_GPU, MLX_MISSING),
         (gguf(4.9), mlx(4.5)), "llama.cpp", "through Metal"),
    Case("M2 with MLX but only a GGUF", M2, (LLAMA_GPU, MLX_METAL), (gguf(4.9),), "llama.cpp",
         "through Metal"),
    Case("M2 budget is Metal's working set", M2, (LLAMA_GPU, MLX_METAL), (mlx(13.0),), None,
         "13.00 GiB but 11.00 GiB"),
    Case("4090 offloads a GGUF", RTX_4090, (LLAMA_GPU, MLC_MISSING), (gguf(4.9),), "llama.cpp",
         "offloads layers"),
    Case("4090 spreads a 40 GB model over RAM and VRAM", RTX_4090, (LLAMA_GPU,), (gguf(40),),
         "llama.cpp", "available RAM + free VRAM"),
    Case("4090 keeps llama.cpp first without a preference", RTX_4090, (LLAMA_GPU, MLC_CUDA),
         (gguf(4.9), mlc(4.5)), "llama.cpp", "offloads layers"),
    Case("4090 runs MLC when preferred", RTX_4090, (LLAMA_GPU, MLC_CUDA),
         (gguf(4.9), mlc(4.5)), "mlc", "preferred in the settings", prefer="mlc"),
    Case("4090 MLC must fit in VRAM alone", RTX_4090, (LLAMA_GPU, MLC_CUDA),
         (gguf(30), mlc(30)), "llama.cpp", "offloads layers", prefer="mlc"),
    Case("CI box runs llama.cpp", CI_BOX, (LLAMA_CPU, MLX_CPU), (gguf(0.1), mlx(0.1)),
         "llama.cpp", "fastest engine on a CPU"),
    Case("CI box runs an MLX-only model on the CPU", CI_BOX, (LLAMA_CPU, MLX_CPU), (mlx(0.1),),
         "mlx", "runs on the CPU here"),
    Case("Jetson counts unified memory once", JETSON, (LLAMA_GPU,), (gguf(30),), "llama.cpp",
         "of 58.00 GiB (available RAM)"),
    Case("Jetson refuses a 70B without a remote", JETSON, (LLAMA_GPU,), (gguf(70),), None,
         "needs 70.00 GiB but 58.00 GiB"),
    Case("Jetson sends a 70B to the remote", JETSON, (LLAMA_GPU,), (gguf(70),), REMOTE,
         "the remote engine at", remote=REMOTE_URL),
    Case("a model stored nowhere goes remote", CI_BOX, (LLAMA_CPU,), (), REMOTE,
         "no local backend can run it", remote=REMOTE_URL),
    Case("a model stored nowhere is refused", CI_BOX, (LLAMA_CPU,), (), None,
         "`llmedge pull model` gets it"),
    Case("a plug-in backend runs its own format", CI_BOX,
         (LLAMA_CPU, BackendOption("transformers", ("safetensors",), True, "torch")),
         (Artifact("safetensors", "model:bf16", GB, "bf16"),), "transformers", "plug-in"),
    Case("no installed backend for the format", CI_BOX, (LLAMA_CPU, MLX_MISSING), (mlx(0.1),),
         None, "mlx: mlx-lm cannot be imported"),
]  # fmt: skip


def request(case: Case, **changes: Any) -> RouteRequest:
    budget = case.host.available_ram_bytes
    if case.host.apple is not None:
        budget = min(budget, case.host.apple.recommended_working_set_bytes)
    base = RouteRequest(
        model="model",
        host=case.host,
        backends=case.backends,
        artifacts=case.artifacts,
        budget_bytes=budget,
        prefer=case.prefer,
        remote_url=case.remote,
    )
    return replace(base, **changes)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_imagined_hosts(case: Case) -> None:
    decision = choose_backend(request(case))
    assert decision.backend == case.backend, decision.reasons
    assert any(case.says in reason for reason in decision.reasons), decision.reasons
    names = [a.backend for a in decision.alternatives]
    assert names[-1] == REMOTE and set(names[:-1]) == {b.name for b in case.backends}
    chosen = [a.backend for a in decision.alternatives if a.verdict == "chosen"]
    assert chosen == ([case.backend] if case.backend else [])
    if case.backend not in (None, REMOTE):
        assert decision.artifact is not None
        assert decision.artifact.format in next(
            b.formats for b in case.backends if b.name == case.backend
        )


def test_every_alternative_says_why() -> None:
    case = CASES[4]  # M2 without MLX
    decision = choose_backend(request(case))
    why = {a.backend: (a.verdict, a.reason) for a in decision.alternatives}
    assert why["mlx"] == ("unavailable", "mlx-lm cannot be imported")
    assert why["remote"][0] == "unavailable" and "--remote URL" in why["remote"][1]
    gguf_only = choose_backend(request(CASES[5]))
    mlx_alt = next(a for a in gguf_only.alternatives if a.backend == "mlx")
    assert mlx_alt.verdict == "no_artifact"
    assert "`llmedge pull model --mlx` converts one" in mlx_alt.reason


def test_a_refusal_raises_the_fit_numbers() -> None:
    decision = choose_backend(request(CASES[1]))
    assert decision.refused and decision.needed_bytes == int(6.2 * GB)
    assert decision.budget_bytes == 5 * GB
    with pytest.raises(InsufficientMemoryError) as raised:
        decision.raise_if_refused()
    assert raised.value.needed_bytes == int(6.2 * GB)
    assert "llmedge serve --remote URL" in str(raised.value)


def test_without_a_budget_memory_is_left_to_the_load() -> None:
    decision = choose_backend(request(CASES[1], budget_bytes=None))
    assert decision.backend == "llama.cpp"


def test_the_best_fitting_artifact_of_a_format_is_chosen() -> None:
    case = CASES[0]
    decision = choose_backend(request(case, artifacts=(gguf(9.0, "q8_0"), gguf(4.5))))
    assert decision.artifact == gguf(4.5)


def test_an_override_wins_over_the_host_order() -> None:
    case = CASES[12]  # CI box, both formats
    decision = choose_backend(request(case, override="mlx"))
    assert decision.backend == "mlx" and "--backend mlx was asked for" in decision.reasons
    verdicts = {a.backend: a.verdict for a in decision.alternatives}
    assert verdicts == {"mlx": "chosen", "llama.cpp": "overridden", REMOTE: "unavailable"}


def test_an_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(BackendUnavailableError, match=r"valid backends: llama\.cpp, mlx, remote"):
        choose_backend(request(CASES[12], override="vllm"))


def test_an_override_that_cannot_run_says_why() -> None:
    with pytest.raises(BackendUnavailableError, match="mlc_llm is not installed"):
        choose_backend(request(CASES[4], backends=(LLAMA_GPU, MLC_MISSING), override="mlc"))
    with pytest.raises(BackendUnavailableError, match="no mlx artifact"):
        choose_backend(request(CASES[5], override="mlx"))
    with pytest.raises(BackendUnavailableError, match="needs a remote engine"):
        choose_backend(request(CASES[0], override=REMOTE))


def test_an_override_does_not_make_memory_appear() -> None:
    decision = choose_backend(request(CASES[1], override="llama.cpp", remote_url=REMOTE_URL))
    assert decision.refused and "`llmedge fit model`" in decision.reasons[-1]


def test_remote_override_forwards_everything() -> None:
    decision: RouteDecision = choose_backend(
        request(CASES[0], override=REMOTE, remote_url=REMOTE_URL)
    )
    assert decision.backend == REMOTE and decision.artifact is None
    assert decision.to_dict()["alternatives"][-1]["verdict"] == "chosen"
