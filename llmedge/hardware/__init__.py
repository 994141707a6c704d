"""What this host offers a model: the probe (CPU, SIMD, memory, GPUs), its memory bandwidth,
and the serving process's own memory; each measured once and cached where it takes time."""

from __future__ import annotations

from llmedge.hardware.bandwidth import BandwidthFacts, BandwidthPoint, measure_bandwidth
from llmedge.hardware.probe import (
    KNOWN_ENGINES,
    AppleSiliconFacts,
    BackendFacts,
    GpuFacts,
    HostFacts,
    apple_working_set,
    cgroup_memory_limit,
    cpu_mhz_of,
    cpu_model_and_simd,
    llama_cpp_features,
    parse_nvidia_smi,
    peak_rss_bytes,
    probe_host,
    with_bandwidth,
)
from llmedge.hardware.process import ProcessFacts, cached_process, measure_process

__all__ = [
    "KNOWN_ENGINES",
    "AppleSiliconFacts",
    "BackendFacts",
    "BandwidthFacts",
    "BandwidthPoint",
    "GpuFacts",
    "HostFacts",
    "ProcessFacts",
    "apple_working_set",
    "cached_process",
    "cgroup_memory_limit",
    "cpu_mhz_of",
    "cpu_model_and_simd",
    "llama_cpp_features",
    "measure_bandwidth",
    "measure_process",
    "parse_nvidia_smi",
    "peak_rss_bytes",
    "probe_host",
    "with_bandwidth",
]
