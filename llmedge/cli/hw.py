"""`hw`: what this machine offers a model: CPU, SIMD, memory and its bandwidth, GPUs, backends."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmedge.hardware import HostFacts, ProcessFacts
    from llmedge.settings import Settings

# What `llmedge serve` has imported before it loads a model; the backend's probe then loads the
# engine's libraries. Measured together, that is the serving process's own memory.
SERVE_MODULES = ("llmedge.cli.main", "llmedge.cli.serve", "llmedge.engine", "llmedge.hub", "server")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hw = subparsers.add_parser(
        "hw",
        help="show this machine: CPU, memory, GPUs, backends",
        description="Show this machine's CPU and SIMD, memory and its read bandwidth (measured "
        "once, a few seconds, then kept under LLMEDGE_HOME), GPUs, and the backends that can "
        "run here.",
    )
    hw.add_argument("--json", action="store_true", help="print JSON (every size in bytes)")
    hw.add_argument(
        "--measure", action="store_true", help="measure bandwidth and the serve process again"
    )
    hw.set_defaults(handler=run_hw)


def measured_host(settings: Settings, remeasure: bool = False) -> HostFacts:
    """This host with its backends and its memory bandwidth (cached, or measured now)."""
    from llmedge.hardware import probe_host, with_bandwidth
    from llmedge.routing import with_backends

    host = with_backends(probe_host())
    return with_bandwidth(host, settings.cache_dir / "bandwidth.json", remeasure)


def serve_process(
    settings: Settings, backend: str = "llama.cpp", remeasure: bool = False
) -> ProcessFacts | None:
    """The memory `llmedge serve` takes with `backend` ready and no model (cached per install)."""
    from llmedge.hardware import cached_process

    setup = f"from llmedge.backends import get_backend; get_backend({backend!r}).probe()"
    cache = settings.cache_dir / f"process-{backend}.json"
    return cached_process(cache, SERVE_MODULES, setup, remeasure)


def run_hw(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from llmedge.cli.output import human_bytes
    from llmedge.settings import Settings

    settings = Settings()
    host = measured_host(settings, args.measure)
    process = serve_process(settings, remeasure=args.measure)
    if args.json:
        facts = host.to_dict()
        facts["serve_process"] = asdict(process) if process else None
        print(json.dumps(facts, indent=2))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("os", f"{host.os_name} {host.os_version} ({host.machine})")
    clock = f" at {host.cpu_mhz:,.0f} MHz" if host.cpu_mhz else ""
    table.add_row("cpu", host.cpu_model + clock)
    cores = f"{host.physical_cores} physical, {host.logical_cores} logical"
    table.add_row("cores", f"{cores}, {host.usable_cores} usable")
    table.add_row("simd", " ".join(host.simd) or "none detected")
    memory = f"{human_bytes(host.available_ram_bytes)} available of "
    table.add_row("memory", memory + human_bytes(host.total_ram_bytes))
    if host.bandwidth:
        bandwidth = host.bandwidth
        rates = ", ".join(
            f"{p.all_threads_bytes_per_s / 1e9:.1f} GB/s over {human_bytes(p.working_set_bytes)}"
            for p in bandwidth.points
        )
        single = bandwidth.points[-1].one_thread_bytes_per_s / 1e9
        table.add_row(
            "bandwidth",
            f"read with {bandwidth.threads} threads: {rates}; one thread {single:.1f} GB/s "
            f"(measured {bandwidth.measured_at}; `llmedge hw --measure` again)",
        )
    if process:
        table.add_row(
            "serve process",
            f"{human_bytes(process.resident_bytes)} before a model (llama.cpp ready, "
            f"measured {process.measured_at})",
        )
    for gpu in host.gpus:
        vram = f"{human_bytes(gpu.vram_free_bytes)} free of {human_bytes(gpu.vram_total_bytes)}"
        driver = f", driver {gpu.driver}" if gpu.driver else ""
        table.add_row("gpu", f"{gpu.name}: {vram}{driver}")
    if not host.gpus:
        table.add_row("gpu", "none detected")
    if host.apple:
        apple = host.apple
        table.add_row(
            "apple silicon",
            f"{apple.chip}: {human_bytes(apple.unified_memory_bytes)} unified, "
            f"{human_bytes(apple.recommended_working_set_bytes)} GPU working set",
        )
    for backend in host.backends:
        state = "usable" if backend.available else "unavailable"
        features = f" [{' '.join(backend.features)}]" if backend.features else ""
        table.add_row(f"backend {backend.name}", f"{state}: {backend.reason}{features}")
    for note in host.notes:
        table.add_row("note", note)
    Console().print(table)
