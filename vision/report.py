"""The bench table and conversion lines as people read them (rich), and as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rich.table import Table

from vision.bench import BenchRow
from vision.convert import TargetResult

COLUMNS = (
    "TARGET", "RUNS ON", "SIZE", "LOAD", "P50", "P90", "MAX |Δ|", "TOP-1 AGREE", "ACC", "Δ ACC",
    "NOTE",
)  # fmt: skip


def _kib(n: int | None) -> str:
    return "—" if n is None else f"{n / 1024:.1f} KiB"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def bench_table(rows: Sequence[BenchRow]) -> Table:
    """The table `llmedge vision bench` prints; the first row is the reference (fp32)."""
    table = Table(box=None, header_style="bold")
    for column in COLUMNS:
        table.add_column(column, overflow="fold", max_width=60 if column == "NOTE" else None)
    ref_acc = rows[0].accuracy if rows else None
    for row in rows:
        delta = None
        if row.accuracy is not None and ref_acc is not None:
            delta = (row.accuracy - ref_acc) * 100
        table.add_row(
            row.target,
            row.runs_on,
            _kib(row.size_bytes),
            _num(None if row.load_s is None else row.load_s * 1000, ".1f")
            + ("ms" if row.load_s is not None else ""),
            _num(row.p50_ms, ".3f") + ("ms" if row.p50_ms is not None else ""),
            _num(row.p90_ms, ".3f") + ("ms" if row.p90_ms is not None else ""),
            _num(row.max_abs_diff, ".2e"),
            _num(None if row.top1_agreement is None else row.top1_agreement * 100, ".1f")
            + ("%" if row.top1_agreement is not None else ""),
            _num(None if row.accuracy is None else row.accuracy * 100, ".1f")
            + ("%" if row.accuracy is not None else ""),
            _num(delta, "+.1f"),
            "" if row.status == "ok" else row.status,
        )
    return table


def bench_json(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def result_line(result: TargetResult) -> str:
    """One line per converted target: `onnx  ok  model.onnx (0.3 s)`."""
    if result.status == "ok":
        return (
            f"{result.target:<14} ok           {', '.join(result.files)} ({result.seconds:.1f} s)"
        )
    first = result.message.splitlines()[0] if result.message else ""
    return f"{result.target:<14} {result.status:<12} {first}"
