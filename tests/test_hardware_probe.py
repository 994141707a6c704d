"""The host probe: parsers over real-looking /proc and tool output, and this machine end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmedge.hardware import (
    BackendFacts,
    GpuFacts,
    HostFacts,
    apple_working_set,
    cgroup_memory_limit,
    cpu_model_and_simd,
    llama_cpp_features,
    parse_nvidia_smi,
    probe_host,
)
from llmedge.routing import with_backends

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 pni ssse3 fma avx f16c avx2 avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp i8mm sve
CPU implementer\t: 0x41
"""


def test_x86_cpuinfo_gives_the_model_and_its_simd_features() -> None:
    name, simd = cpu_model_and_simd(X86_CPUINFO, "x86_64")
    assert name == "AMD EPYC 9654 96-Core Processor"
    assert simd == (
        "SSE3",
        "SSSE3",
        "AVX",
        "AVX2",
        "FMA",
        "F16C",
        "AVX512",
        "AVX512_VNNI",
        "AVX512_BF16",
    )


def test_arm_cpuinfo_names_neon_dotprod_and_sve() -> None:
    name, simd = cpu_model_and_simd(ARM_CPUINFO, "aarch64")
    assert name == ""  # many ARM kernels print no model name; the probe falls back
    assert simd == ("NEON", "FP16", "DOTPROD", "I8MM", "SVE")


def test_nvidia_smi_csv_and_garbage() -> None:
    text = (
        "NVIDIA GeForce RTX 4090, 24564, 23012, 550.54.14\n"
        "NVIDIA A100-SXM4-80GB, 81920, 81000, 550.54.14\n"
    )
    gpus = parse_nvidia_smi(text)
    assert gpus[0] == GpuFacts(
        "nvidia", "NVIDIA GeForce RTX 4090", 24564 << 20, 23012 << 20, "550.54.14"
    )
    assert len(gpus) == 2 and gpus[1].vram_total_bytes == 80 << 30
    assert parse_nvidia_smi("No devices were found\n") == ()
    assert parse_nvidia_smi("GPU, [N/A], [N/A]") == ()


def test_cgroup_limits_and_apple_working_sets() -> None:
    assert cgroup_memory_limit("max\n", "123\n") is None
    assert cgroup_memory_limit("4294967296\n", "1073741824\n") == (4 << 30, 1 << 30)
    assert cgroup_memory_limit("", "") is None
    assert apple_working_set(16 << 30) == int((16 << 30) * 2 / 3)
    assert apple_working_set(64 << 30) == 48 << 30
    assert apple_working_set(16 << 30, wired_limit_mib=14000) == 14000 << 20


def test_llama_cpp_build_features() -> None:
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
    assert llama_cpp_features(info) == ("SSE3", "AVX", "LLAMAFILE", "OPENMP", "REPACK")


def test_gpu_offload_needs_both_a_capable_backend_and_a_gpu() -> None:
    base = dict(
        os_name="Linux",
        os_version="6",
        machine="x86_64",
        cpu_model="c",
        physical_cores=1,
        logical_cores=1,
        usable_cores=1,
        simd=(),
        total_ram_bytes=1,
        available_ram_bytes=1,
    )
    gpu = (GpuFacts("nvidia", "g", 1, 1),)
    cpu_build = (BackendFacts("llama.cpp", True, "llama-cpp-python 0.3.36 (CPU only)"),)
    gpu_build = (BackendFacts("llama.cpp", True, "llama-cpp-python 0.3.36 (GPU offload)"),)
    assert not HostFacts(**base, gpus=gpu, backends=cpu_build).gpu_offload  # type: ignore[arg-type]
    assert not HostFacts(**base, backends=gpu_build).gpu_offload  # type: ignore[arg-type]
    assert HostFacts(**base, gpus=gpu, backends=gpu_build).gpu_offload  # type: ignore[arg-type]


def test_this_machine_is_probed_sensibly() -> None:
    host = with_backends(probe_host())
    assert 0 < host.available_ram_bytes <= host.total_ram_bytes
    assert 1 <= host.usable_cores <= host.logical_cores
    assert host.os_name and host.machine and host.cpu_model
    llama = next(b for b in host.backends if b.name == "llama.cpp")
    assert llama.available and "llama-cpp-python" in llama.reason
    assert {b.name for b in host.backends} >= {"llama.cpp", "mlx", "mlc"}
    json.dumps(host.to_dict())  # plain data all the way down


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for nvidia-smi")
def test_nvidia_smi_is_the_fallback_when_nvml_is_absent(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA L4, 23034, 22000, 535.1'\n")
    fake.chmod(0o755)
    code = (
        "import json; from llmedge.hardware import probe_host; "
        "print(json.dumps(probe_host().to_dict()['gpus']))"
    )
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    gpus = json.loads(done.stdout)
    if gpus and gpus[0]["name"] != "NVIDIA L4":
        pytest.skip("a real NVIDIA driver answered through NVML")
    assert gpus == [
        {
            "vendor": "nvidia",
            "name": "NVIDIA L4",
            "vram_total_bytes": 23034 << 20,
            "vram_free_bytes": 22000 << 20,
            "driver": "535.1",
        }
    ]


def test_hw_command_prints_a_table_and_json() -> None:
    table = subprocess.run(
        [sys.executable, "-m", "llmedge.cli", "hw"], capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0, table.stderr
    for word in ("cpu", "simd", "memory", "backend llama.cpp"):
        assert word in table.stdout
    raw = subprocess.run(
        [sys.executable, "-m", "llmedge.cli", "hw", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    facts = json.loads(raw.stdout)
    assert facts["total_ram_bytes"] >= facts["available_ram_bytes"] > 0
    assert any(b["name"] == "llama.cpp" for b in facts["backends"])
