"""The measured host facts: memory bandwidth and the serve process's own memory, and their
caches under LLMEDGE_HOME (real measurements, kept small)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llmedge.hardware import (
    BandwidthFacts,
    BandwidthPoint,
    cpu_mhz_of,
    measure_bandwidth,
    measure_process,
    probe_host,
    with_bandwidth,
)
from llmedge.hardware import bandwidth as bandwidth_module
from llmedge.hardware.bandwidth import CpuWatch
from llmedge.hardware.process import cached_process, install_key

MIB, GB = 1 << 20, 1e9
FACTS = BandwidthFacts(
    threads=4,
    points=(
        BandwidthPoint(16 * MIB, 30 * GB, 90 * GB),
        BandwidthPoint(256 * MIB, 10 * GB, 20 * GB),
        BandwidthPoint(1024 * MIB, 8 * GB, 16 * GB),
    ),
)


def test_bandwidth_is_interpolated_by_working_set_and_threads() -> None:
    assert FACTS.read_bytes_per_s(256 * MIB, 4) == 20 * GB  # a measured point, exactly
    assert FACTS.read_bytes_per_s(1, 4) == 90 * GB  # inside the cache: the smallest size
    assert FACTS.read_bytes_per_s(64 << 30, 4) == 16 * GB  # past the largest: flat
    between = FACTS.read_bytes_per_s(64 * MIB, 4)
    assert 20 * GB < between < 90 * GB
    assert FACTS.read_bytes_per_s(64 * MIB, 4) == pytest.approx(55 * GB)  # halfway in log size
    assert FACTS.read_bytes_per_s(256 * MIB, 1) == 10 * GB
    assert FACTS.read_bytes_per_s(256 * MIB, 64) == 20 * GB  # no faster past the threads measured
    assert 10 * GB < FACTS.read_bytes_per_s(256 * MIB, 2) < 20 * GB
    assert BandwidthFacts.from_dict(json.loads(json.dumps(FACTS.to_dict()))) == FACTS


def test_this_hosts_bandwidth_is_measured() -> None:
    measured = measure_bandwidth(2, 8 << 30, sizes=(4 * MIB, 32 * MIB))
    assert measured is not None and measured.threads == 2
    assert [p.working_set_bytes for p in measured.points] == [4 * MIB, 32 * MIB]
    for point in measured.points:
        # Any machine that runs a model reads faster than 200 MB/s, and none at 10 TB/s.
        assert 2e8 < point.one_thread_bytes_per_s < 1e13
        assert 2e8 < point.all_threads_bytes_per_s < 1e13
    # No size past a quarter of the memory on offer: the probe must never push into swap.
    small = measure_bandwidth(1, 64 * MIB, sizes=(4 * MIB, 32 * MIB))
    assert small is not None and [p.working_set_bytes for p in small.points] == [4 * MIB]


def test_bandwidth_is_measured_once_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fake(threads: int, available_bytes: int) -> BandwidthFacts:
        calls.append(threads)
        return BandwidthFacts(threads, FACTS.points, f"run {len(calls)}")

    monkeypatch.setattr(bandwidth_module, "measure_bandwidth", fake)
    cache = tmp_path / "cache" / "bandwidth.json"
    host = probe_host()
    first = with_bandwidth(host, cache)
    assert first.bandwidth is not None and first.bandwidth.measured_at == "run 1"
    again = with_bandwidth(host, cache)
    assert again.bandwidth == first.bandwidth and len(calls) == 1
    other_host = with_bandwidth(replace(host, usable_cores=99), cache)
    assert other_host.bandwidth is not None and len(calls) == 2  # another key: measured anew
    cache.write_text("{not json")
    assert with_bandwidth(host, cache).bandwidth is not None and len(calls) == 3
    assert with_bandwidth(host, cache, remeasure=True).bandwidth is not None and len(calls) == 4


def test_a_fresh_process_is_measured_with_its_imports() -> None:
    bare = measure_process([])
    with_json = measure_process(["json", "decimal"])
    assert bare is not None and with_json is not None
    assert 1 * MIB < bare.resident_bytes < 200 * MIB
    assert with_json.modules == ("json", "decimal")
    assert measure_process(["no_such_module_here"]) is None  # a failed child measures nothing


def test_the_process_is_cached_per_install_and_measured_again_when_a_module_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "lib" / "llmedge_probe_module.py"
    module.parent.mkdir()
    module.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.setenv("PYTHONPATH", str(module.parent))  # the child imports it too
    cache = tmp_path / "process.json"
    names = ["llmedge_probe_module"]
    first = cached_process(cache, names)
    assert first is not None and cache.is_file()
    assert cached_process(cache, names) == first  # read back, not measured
    key = install_key(names)
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "reinstalled"
    assert install_key(names) != key
    again = cached_process(cache, names)
    assert again is not None and json.loads(cache.read_text())["key"] == install_key(names)


def test_cpu_clock_is_read_from_cpuinfo() -> None:
    assert cpu_mhz_of("processor\t: 0\ncpu MHz\t\t: 2600.004\ncache size\t: 4 MiB\n") == 2600.004
    assert cpu_mhz_of("Features\t: fp asimd\n") == 0.0


def test_hw_shows_bandwidth_and_the_serve_process_measured_once(llmedge_home: Path) -> None:
    def hw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llmedge.cli", "hw", *args],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "COLUMNS": "200"},
        )

    first = hw("--json")
    assert first.returncode == 0, first.stderr
    facts = json.loads(first.stdout)
    bandwidth = facts["bandwidth"]
    assert bandwidth["threads"] >= 1 and len(bandwidth["points"]) >= 1
    assert facts["serve_process"]["resident_bytes"] > 20 * MIB  # interpreter, server, llama.cpp
    table = hw()
    assert table.returncode == 0, table.stderr
    assert "bandwidth" in table.stdout and "serve process" in table.stdout
    kept = (llmedge_home / "cache" / "bandwidth.json").is_file()
    # A quiet host keeps its figure (the table shows the same one); a busy one says why not.
    assert kept == (bandwidth["others_busy"] <= 0.25)
    if kept:
        assert bandwidth["measured_at"] in table.stdout
    else:
        assert "not kept" in first.stdout or "not kept" in table.stdout


def test_other_processes_cpu_time_is_seen() -> None:
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        watch = CpuWatch()
        time.sleep(1.0)  # a measurement window, not a wait for an event
        share = watch.others_share()
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert share > 0.5


def test_a_measurement_on_a_busy_host_is_used_but_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = replace(FACTS, others_busy=0.9)
    monkeypatch.setattr(bandwidth_module, "measure_bandwidth", lambda *_: busy)
    cache = tmp_path / "bandwidth.json"
    measured = with_bandwidth(probe_host(), cache)
    assert measured.bandwidth == busy and not busy.trustworthy and not cache.exists()
    assert any("90% of the CPUs busy" in note for note in measured.notes)
