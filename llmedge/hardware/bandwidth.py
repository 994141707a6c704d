"""Memory read bandwidth: measured once per host by streaming through buffers, cached as JSON.

Decoding one token reads every weight once, so on a CPU the tokens/s ceiling is bandwidth over
model bytes. What counts is the rate at which the decoding threads can *read* a working set the
size of the model: a buffer that fits in the last-level cache reads several times faster than
DRAM. So the probe reads buffers of a few sizes, with one thread and with every usable core
(`memchr` for a byte that is not there: glibc's vectorised scan, which releases the GIL under
ctypes), and keeps the best of a few passes, since other processes only ever make it slower.
A measurement taken while other processes kept the CPUs busy is used once but not cached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import math
import mmap
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from llmedge.hardware.cache import read_cached, write_cached

MIB = 1 << 20
# Working sets from well inside a core's caches to well past any last-level cache.
SIZES_BYTES = (16 * MIB, 64 * MIB, 256 * MIB, 1024 * MIB)
PASSES = 3  # best of: a busy neighbour only ever slows a pass down
MIN_READ_BYTES = 1 << 30  # each pass reads at least this much, so timing noise stays small
# Past this share of the CPUs busy with other work the figures are too low to keep: they are
# reported, with a note, and measured again next time instead of being cached.
BUSY_LIMIT = 0.25


@dataclass(frozen=True)
class BandwidthPoint:
    """Read bandwidth over one working-set size, with one thread and with `threads`."""

    working_set_bytes: int
    one_thread_bytes_per_s: float
    all_threads_bytes_per_s: float


@dataclass(frozen=True)
class BandwidthFacts:
    """This host's memory read bandwidth, by working-set size; `threads` read together."""

    threads: int
    points: tuple[BandwidthPoint, ...]
    measured_at: str = ""
    others_busy: float = 0.0  # the share of the CPUs other processes used meanwhile

    @property
    def trustworthy(self) -> bool:
        """Whether the host was quiet enough while measuring for the figures to stand."""
        return self.others_busy <= BUSY_LIMIT

    def read_bytes_per_s(self, working_set_bytes: int, threads: int) -> float:
        """Bytes/s that `threads` threads read from a working set of this size.

        Log-interpolated between the measured sizes (flat beyond them); linear in threads
        between one and all, and no faster past the threads measured.
        """
        points = sorted(self.points, key=lambda p: p.working_set_bytes)
        size = max(1, working_set_bytes)

        def at(point: BandwidthPoint) -> float:
            if self.threads <= 1 or threads <= 1:
                return point.one_thread_bytes_per_s
            share = (min(threads, self.threads) - 1) / (self.threads - 1)
            one, every = point.one_thread_bytes_per_s, point.all_threads_bytes_per_s
            return one + share * (every - one)

        if size <= points[0].working_set_bytes:
            return at(points[0])
        for low, high in itertools.pairwise(points):
            if size <= high.working_set_bytes:
                span = math.log(high.working_set_bytes / low.working_set_bytes)
                weight = math.log(size / low.working_set_bytes) / span
                return at(low) + weight * (at(high) - at(low))
        return at(points[-1])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandwidthFacts:
        points = tuple(BandwidthPoint(**p) for p in data["points"])
        busy = float(data.get("others_busy", 0.0))
        return cls(int(data["threads"]), points, str(data.get("measured_at", "")), busy)


class CpuWatch:
    """The share of this host's CPU time that other processes take from its creation on (this
    process and the children it has waited for do not count)."""

    def __init__(self) -> None:
        self._started = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        every = psutil.cpu_times()
        busy = sum(every) - every.idle - getattr(every, "iowait", 0.0)
        mine = psutil.Process().cpu_times()
        own = mine.user + mine.system + mine.children_user + mine.children_system
        return time.monotonic(), busy, own

    def others_share(self) -> float:
        """Other processes' CPU time since then, as a share of every core's time."""
        (then, busy_then, mine_then), (now, busy, mine) = self._started, self._read()
        span = (now - then) * (psutil.cpu_count() or 1)
        return max(0.0, min(1.0, (busy - busy_then - (mine - mine_then)) / span)) if span else 0.0


def _scanner() -> Any:
    """libc's memchr through ctypes (a foreign call that runs without the GIL), or None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        memchr = libc.memchr
    except (OSError, AttributeError):
        return None
    memchr.restype = ctypes.c_void_p
    memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    return memchr


def _read_rate(memchr: Any, address: int, size: int, threads: int) -> float:
    """Bytes/s of `threads` threads each scanning its share of the buffer, best of PASSES.

    One thread is timed by its own CPU time, which a busy host's time-sharing does not stretch;
    several are timed by the wall clock, as they read together.
    """
    share = size // threads
    repeats = max(1, MIN_READ_BYTES // size)

    def scan(index: int) -> None:
        start = address + index * share
        for _ in range(repeats):
            memchr(start, 0, share)  # the buffer holds no zero byte: reads it to the end

    best = 0.0
    if threads == 1:
        for _ in range(PASSES):
            started = time.thread_time()
            scan(0)
            best = max(best, size * repeats / max(time.thread_time() - started, 1e-9))
        return best
    for _ in range(PASSES):
        workers = [threading.Thread(target=scan, args=(i,)) for i in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        best = max(best, share * threads * repeats / elapsed)
    return best


def measure_bandwidth(
    threads: int, available_bytes: int, sizes: Sequence[int] = SIZES_BYTES
) -> BandwidthFacts | None:
    """Measure read bandwidth with one thread and `threads`; None where libc cannot be called.

    Sizes past a quarter of the available memory are skipped, so the probe never pushes the
    host into swap.
    """
    memchr = _scanner()
    usable = [size for size in sizes if size <= available_bytes // 4] or [min(sizes)]
    if memchr is None:
        return None
    points = []
    watch = CpuWatch()
    for size in usable:
        buffer = mmap.mmap(-1, size)
        view = (ctypes.c_char * size).from_buffer(buffer)
        try:
            ctypes.memset(view, 1, size)  # fault every page in before timing
            address = ctypes.addressof(view)
            one = _read_rate(memchr, address, size, 1)
            every = _read_rate(memchr, address, size, threads) if threads > 1 else one
        finally:
            del view
            buffer.close()
        points.append(BandwidthPoint(size, one, every))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return BandwidthFacts(threads, tuple(points), stamp, round(watch.others_share(), 3))


def cached_bandwidth(
    cache_file: Path, key: str, threads: int, available_bytes: int, remeasure: bool = False
) -> BandwidthFacts | None:
    """The bandwidth measured for `key` (this CPU, its cores and memory), measured on a miss."""
    cached = None if remeasure else read_cached(cache_file, key)
    if cached is not None:
        try:
            return BandwidthFacts.from_dict(cached)
        except (KeyError, TypeError, ValueError):
            pass  # a damaged record: measure again
    facts = measure_bandwidth(threads, available_bytes)
    if facts is not None and facts.trustworthy:
        write_cached(cache_file, key, facts.to_dict())
    return facts
