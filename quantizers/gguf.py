"""GGUF quantization through llama.cpp's `llama_model_quantize`: the ladder from Q2_K to Q8_0.

A quantized file is written under the store's `tmp/`, checked (its header, and with a report its
perplexity against the source on the shipped text), then moved into the store as `NAME:TYPE` with
its figures in the manifest. Only llmedge's public modules are used.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from llmedge.errors import ExtraNotInstalledError, InvalidRequestError, QuantizationError
from llmedge.gguf import read_gguf_header
from llmedge.gguf.quant_types import FLOAT_TYPES, LADDER, file_type_id, normalize
from llmedge.hub.pull import pull, store_built_file
from llmedge.progress import CallbackReporter, Reporter
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, QuantReport, Store
from quantizers.gguf_convert import convert
from quantizers.gguf_perplexity import perplexity
from quantizers.perplexity import DEFAULT_SCORED_TOKENS, EVAL_TEXT_NAME, Perplexity, eval_text

__all__ = ["LADDER", "TOOLS", "bits_per_weight", "quantize_file", "quantize_model"]

_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Baseline:
    """The source's perplexity, measured once and compared with every type made from it."""

    text: str
    result: Perplexity


def quantize_file(
    source: Path, out_path: Path, quant: str, *, threads: int, allow_requantize: bool = False
) -> float:
    """Write `source` (F16/BF16/F32 GGUF) quantized to `quant`; returns the seconds it took.

    `allow_requantize` accepts an already quantized source (quality suffers twice).
    """
    try:
        import llama_cpp
    except ModuleNotFoundError as exc:
        raise ExtraNotInstalledError("llama", "llama-cpp-python") from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type_id(quant)
    params.nthread = threads
    params.allow_requantize = allow_requantize
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    codes: list[int] = []

    def work() -> None:
        codes.append(
            llama_cpp.llama_model_quantize(
                str(source).encode(), str(out_path).encode(), ctypes.byref(params)
            )
        )

    # The C call cannot be interrupted; a daemon thread lets Ctrl-C end the process meanwhile.
    started = time.perf_counter()
    worker = threading.Thread(target=work, name=f"quantize-{quant}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(_POLL_SECONDS)
    if codes != [0]:
        raise QuantizationError(
            f"llama.cpp could not quantize {source} to {quant.upper()} (code {codes}); "
            "is it a complete F16/BF16/F32 GGUF? `llmedge verify` re-checks the store"
        )
    return time.perf_counter() - started


def bits_per_weight(path: Path) -> float:
    """Bits the file spends per model weight (tensor data only, metadata excluded)."""
    header = read_gguf_header(path)
    weights = sum(t.n_elements for t in header.tensors)
    return 8 * sum(t.nbytes for t in header.tensors) / max(weights, 1)


def measured(
    path: Path, text: str, name: str, threads: int, tokens: int, reporter: Reporter
) -> Perplexity:
    """The perplexity of the GGUF at `path` on `tokens` tokens of `text`, with a progress bar."""
    reporter.begin(f"perplexity of {name}", tokens, unit="tokens")
    try:
        return perplexity(
            path, text, threads=threads, scored_tokens=tokens, on_window=reporter.advance
        )
    finally:
        reporter.end()


def measure_baseline(
    store: Store, source: Manifest, threads: int, tokens: int, reporter: Reporter
) -> Baseline:
    text = eval_text()
    result = measured(store.verified_blob(source), text, source.ref, threads, tokens, reporter)
    return Baseline(text, result)


def quantize_stored(
    store: Store,
    source: Manifest,
    quant: str,
    reporter: Reporter,
    *,
    threads: int | None = None,
    baseline: Baseline | None = None,
) -> Manifest:
    """Quantize a stored float model to `quant` and store the result as `NAME:quant`."""
    quant = normalize(quant)
    if quant not in LADDER:
        raise InvalidRequestError(
            f"{quant} is not on the ladder; choose from: {', '.join(LADDER)}", param="to"
        )
    threads = threads or Settings().threads
    source_path = store.verified_blob(source)
    reporter.note(f"quantizing {source.ref} to {quant.upper()}")
    with store.temporary(".gguf") as out:
        store.check_free_space(source.size_bytes)
        seconds = quantize_file(source_path, out, quant, threads=threads)
        report = QuantReport(
            source=source.ref,
            source_sha256=source.sha256,
            bits_per_weight=round(bits_per_weight(out), 4),
            seconds=round(seconds, 3),
        )
        if baseline is not None:
            name, tokens = f"{source.name}:{quant}", baseline.result.tokens
            result = measured(out, baseline.text, name, threads, tokens, reporter)
            report = replace(
                report,
                perplexity=round(result.value, 4),
                source_perplexity=round(baseline.result.value, 4),
                eval_tokens=result.tokens,
                eval_text=EVAL_TEXT_NAME,
                perplexity_error=round(result.error, 4),
                source_perplexity_error=round(baseline.result.error, 4),
            )
        origin = {"kind": "quantize", "from": source.ref, "from_sha256": source.sha256}
        origin.update({k: v for k, v in source.source.items() if k in ("repo", "revision", "ref")})
        return store_built_file(store, out, ModelRef(source.name, quant), origin, report)


def float_source(store: Store, name: str, reporter: Reporter) -> Manifest:
    """The stored F16 (else BF16, else F32) version of `name`; pulled as F16 when there is none."""
    ref = ModelRef.parse(name)
    if ref.tag is not None:
        manifest = store.resolve(ref)
        if manifest.tag not in FLOAT_TYPES:
            raise InvalidRequestError(
                f"{manifest.ref} is already quantized; quantize from {ref.name}:f16 instead",
                param="model",
            )
        return manifest
    for tag in FLOAT_TYPES:
        found = store.find(ModelRef(ref.name, tag))
        if found is not None:
            return found
    reporter.note(f"{ref.name} has no F16 version stored; pulling one first")
    return pull(store, ref.name, quant="f16", reporter=reporter)


def quantize_model(
    store: Store,
    name: str,
    quants: list[str],
    *,
    report: bool = False,
    threads: int | None = None,
    reporter: Reporter | None = None,
    ppl_tokens: int = DEFAULT_SCORED_TOKENS,
) -> list[Manifest]:
    """Make each quantization of `name` from its float version; with `report`, measure each
    one's perplexity (and the source's) on `ppl_tokens` tokens of the shipped text."""
    reporter = reporter or CallbackReporter()
    wanted = [normalize(q) for q in quants]
    unknown = [q for q in wanted if q not in LADDER]
    if unknown or not wanted:
        raise InvalidRequestError(
            f"cannot quantize to {', '.join(unknown) or 'nothing'}; choose from: "
            f"{', '.join(LADDER)}",
            param="to",
        )
    threads = threads or Settings().threads
    source = float_source(store, name, reporter)
    baseline = None
    if report:
        reporter.note(f"measuring perplexity on {ppl_tokens} tokens of {EVAL_TEXT_NAME}")
        baseline = measure_baseline(store, source, threads, ppl_tokens, reporter)
    return [
        quantize_stored(store, source, q, reporter, threads=threads, baseline=baseline)
        for q in dict.fromkeys(wanted)
    ]


class _Tools:
    """What `llmedge.hub.pull` needs to turn a safetensors repository into a quantized GGUF."""

    @staticmethod
    def convert(source_dir: Path, out_path: Path, outtype: str) -> None:
        convert(source_dir, out_path, outtype)

    @staticmethod
    def quantize_stored(store: Store, source: Manifest, quant: str, reporter: Reporter) -> Manifest:
        return quantize_stored(store, source, quant, reporter)


TOOLS = _Tools()
