"""The host probe: OS, CPU and its SIMD features, memory, GPUs, and which backends can run here.

Everything is read once into frozen dataclasses, which the fit advisor and the router take as
plain data. Each probe degrades to "unknown" rather than failing: a missing /proc file, an absent
`nvidia-smi` or an unloadable NVML leave their fields empty, with the reason kept in `notes`.
Memory bandwidth takes seconds to measure, so it is added on request (`with_bandwidth`) from a
measurement cached under LLMEDGE_HOME.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from llmedge.hardware.bandwidth import BandwidthFacts, cached_bandwidth

# SIMD features worth naming, as /proc/cpuinfo spells them -> as llama.cpp names them.
X86_FEATURES = {
    "pni": "SSE3", "ssse3": "SSSE3", "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C",
    "avx_vnni": "AVX_VNNI", "avx512f": "AVX512", "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16", "amx_int8": "AMX_INT8",
}  # fmt: skip
ARM_FEATURES = {
    "asimd": "NEON", "asimdhp": "FP16", "asimddp": "DOTPROD", "i8mm": "I8MM", "sve": "SVE",
    "sve2": "SVE2", "sme": "SME",
}  # fmt: skip
MAC_ARM_FEATURES = {
    "hw.optional.neon": "NEON", "hw.optional.arm.FEAT_FP16": "FP16",
    "hw.optional.arm.FEAT_DotProd": "DOTPROD", "hw.optional.arm.FEAT_I8MM": "I8MM",
    "hw.optional.arm.FEAT_SME": "SME",
}  # fmt: skip
# Engines llmedge knows of that may be installed without a registered backend yet.
KNOWN_ENGINES = {"mlx": "mlx_lm", "mlc": "mlc_llm"}
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GpuFacts:
    """One GPU and its memory."""

    vendor: str
    name: str
    vram_total_bytes: int
    vram_free_bytes: int
    driver: str = ""


@dataclass(frozen=True)
class AppleSiliconFacts:
    """An Apple Silicon chip: the GPU shares the host's memory, up to a working-set limit."""

    chip: str
    unified_memory_bytes: int
    recommended_working_set_bytes: int


@dataclass(frozen=True)
class BackendFacts:
    """A backend (or a known engine without one) and whether it can run here."""

    name: str
    available: bool
    reason: str
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostFacts:
    """What this machine offers a model."""

    os_name: str
    os_version: str
    machine: str
    cpu_model: str
    physical_cores: int
    logical_cores: int
    usable_cores: int
    simd: tuple[str, ...]
    total_ram_bytes: int
    available_ram_bytes: int
    gpus: tuple[GpuFacts, ...] = ()
    apple: AppleSiliconFacts | None = None
    backends: tuple[BackendFacts, ...] = ()
    notes: tuple[str, ...] = field(default=())
    cpu_mhz: float = 0.0  # the clock /proc/cpuinfo reports (0: unknown)
    bandwidth: BandwidthFacts | None = None  # measured on request: `with_bandwidth`

    @property
    def gpu_offload(self) -> bool:
        """Whether an installed backend can put layers on a GPU that is present."""
        offload = any("GPU offload" in b.reason for b in self.backends if b.available)
        return offload and bool(self.gpus or self.apple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _run(command: list[str]) -> str:
    """A command's stdout, or "" when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return ""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _sysctl(name: str) -> str:
    return _run(["sysctl", "-n", name]).strip()


def cpu_model_and_simd(cpuinfo: str, machine: str) -> tuple[str, tuple[str, ...]]:
    """The CPU's name and SIMD features from /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or ""
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    table = ARM_FEATURES if machine.lower() in ("aarch64", "arm64") else X86_FEATURES
    return name, tuple(label for flag, label in table.items() if flag in flags)


def cpu_mhz_of(cpuinfo: str) -> float:
    """The first "cpu MHz" in /proc/cpuinfo text (0.0 when absent)."""
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def cgroup_memory_limit(max_text: str, current_text: str) -> tuple[int, int] | None:
    """A cgroup v2 memory limit and current use, when one is set."""
    limit, current = max_text.strip(), current_text.strip()
    if not limit.isdigit() or not current.isdigit():
        return None
    return int(limit), int(current)


def _memory() -> tuple[int, int, list[str]]:
    vm = psutil.virtual_memory()
    total, available, notes = int(vm.total), int(vm.available), []
    limit = cgroup_memory_limit(
        _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    )
    if limit and limit[0] < total:
        total = limit[0]
        available = max(0, min(available, limit[0] - limit[1]))
        notes.append(f"memory limited by cgroup to {limit[0]} bytes")
    return total, available, notes


def parse_nvidia_smi(text: str) -> tuple[GpuFacts, ...]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version
    --format=csv,noheader,nounits` (memory in MiB)."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
            driver = parts[3] if len(parts) > 3 else ""
            mib = 1 << 20
            gpus.append(
                GpuFacts("nvidia", parts[0], int(parts[1]) * mib, int(parts[2]) * mib, driver)
            )
    return tuple(gpus)


def _nvml_gpus() -> tuple[tuple[GpuFacts, ...], str]:
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return (), "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError and ctypes load failures alike: no NVIDIA driver
        return (), f"NVML unavailable: {exc}"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                GpuFacts(
                    "nvidia",
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(memory.total),
                    int(memory.free),
                    driver.decode() if isinstance(driver, bytes) else str(driver),
                )
            )
        return tuple(gpus), ""
    finally:
        pynvml.nvmlShutdown()


def _nvidia_gpus() -> tuple[tuple[GpuFacts, ...], list[str]]:
    gpus, why = _nvml_gpus()
    if gpus:
        return gpus, []
    query = "--query-gpu=name,memory.total,memory.free,driver_version"
    smi = parse_nvidia_smi(_run(["nvidia-smi", query, "--format=csv,noheader,nounits"]))
    return smi, ([] if smi or "not installed" in why else [why])


def apple_working_set(memory_bytes: int, wired_limit_mib: int = 0) -> int:
    """Metal's recommended working set: the `iogpu.wired_limit_mb` override, else about 2/3 of
    memory up to 36 GiB and 3/4 above."""
    if wired_limit_mib > 0:
        return wired_limit_mib << 20
    fraction = 0.75 if memory_bytes > 36 << 30 else 2 / 3
    return int(memory_bytes * fraction)


def _apple() -> AppleSiliconFacts | None:
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return None
    memory = int(_sysctl("hw.memsize") or 0)
    wired = _sysctl("iogpu.wired_limit_mb")
    chip = _sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    return AppleSiliconFacts(chip, memory, apple_working_set(memory, int(wired or 0)))


def llama_cpp_features(system_info: str) -> tuple[str, ...]:
    """Enabled features from llama.cpp's `llama_print_system_info()` ("AVX2 = 1 | ...")."""
    return tuple(m.group(1) for m in re.finditer(r"(\w+) = 1\b", system_info))


def probe_host() -> HostFacts:
    """Probe this machine (its backends are probed by `llmedge.routing.facts.with_backends`)."""
    machine = platform.machine()
    cpuinfo = _read("/proc/cpuinfo")
    cpu_model, simd = cpu_model_and_simd(cpuinfo, machine)
    if sys.platform == "darwin":
        cpu_model = _sysctl("machdep.cpu.brand_string") or cpu_model
        if machine == "arm64":
            simd = tuple(label for key, label in MAC_ARM_FEATURES.items() if _sysctl(key) == "1")
        else:
            flags = f"{_sysctl('machdep.cpu.features')} {_sysctl('machdep.cpu.leaf7_features')}"
            simd = cpu_model_and_simd(f"flags: {flags.lower()}", machine)[1]
    total, available, notes = _memory()
    gpus, gpu_notes = _nvidia_gpus()
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    os_version = platform.release()
    if sys.platform == "darwin":
        os_version = platform.mac_ver()[0] or os_version
    return HostFacts(
        os_name=platform.system(),
        os_version=os_version,
        machine=machine,
        cpu_model=cpu_model or platform.processor() or "unknown",
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        usable_cores=usable,
        simd=simd,
        total_ram_bytes=total,
        available_ram_bytes=available,
        gpus=gpus,
        apple=_apple(),
        notes=tuple(notes + gpu_notes),
        cpu_mhz=cpu_mhz_of(cpuinfo),
    )


MAX_BANDWIDTH_THREADS = 32  # past this many readers a host's bandwidth no longer grows


def with_bandwidth(host: HostFacts, cache_file: Path, remeasure: bool = False) -> HostFacts:
    """`host` with its memory bandwidth, from `cache_file` or measured now (a few seconds)."""
    threads = max(1, min(host.usable_cores, MAX_BANDWIDTH_THREADS))
    key = f"{host.cpu_model}|{host.machine}|{threads} threads|{host.total_ram_bytes} bytes"
    measured = cached_bandwidth(cache_file, key, threads, host.available_ram_bytes, remeasure)
    if measured is None:
        note = "memory bandwidth not measured: libc's memchr is not callable here"
        return replace(host, notes=(*host.notes, note))
    notes = host.notes
    if not measured.trustworthy:
        notes += (
            f"memory bandwidth measured while other processes kept {measured.others_busy:.0%} "
            "of the CPUs busy: too low, so not kept; speeds are pessimistic until it is "
            "measured on a quieter machine (`llmedge hw --measure`)",
        )
    return replace(host, bandwidth=measured, notes=notes)


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far."""
    import resource  # Unix only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
