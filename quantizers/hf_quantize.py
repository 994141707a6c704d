"""GPTQ, AWQ and NF4 on a stored safetensors model, measured like the GGUF ladder.

The unquantized `NAME:hf` version is unpacked, quantized into a folder under the store's `tmp/`,
measured (bits per weight from the safetensors headers; with a report, perplexity against the
source on the same text and windows as the GGUF report), then packed into the store as
`NAME:TAG` with its figures in the manifest. The result is served by the transformers backend.
The source's perplexity is kept under `<home>/cache/perplexity/`, so quantizing one model
several ways measures it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from llmedge.backends.transformers.backend import pick_device
from llmedge.errors import InvalidRequestError
from llmedge.progress import CallbackReporter, Reporter
from llmedge.settings import Settings
from llmedge.store import Manifest, ModelRef, QuantReport, Store
from llmedge.store.folders import store_dir, unpacked_dir
from quantizers.calibration import Calibration
from quantizers.hf_folder import facts_from_folder, tensor_stats
from quantizers.hf_method import Method
from quantizers.hf_perplexity import measure
from quantizers.hf_source import source_model
from quantizers.perplexity import DEFAULT_SCORED_TOKENS, EVAL_TEXT_NAME, Perplexity, eval_text

DEVICES = ("auto", "cpu", "cuda")
# Files a quantizer may leave out of its output that serving needs.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
)


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise InvalidRequestError(f"choose a device of {', '.join(DEVICES)}", param="device")
    if device == "auto":
        return pick_device()
    if device == "cuda" and pick_device() != "cuda":
        raise InvalidRequestError(
            "no CUDA GPU is usable here (or this torch build has no CUDA); use --device cpu",
            param="device",
        )
    return device


def measured(
    folder: Path, device: str, text: str, name: str, tokens: int, reporter: Reporter
) -> Perplexity:
    """A folder's perplexity on `tokens` tokens of `text`, with a progress bar."""
    reporter.begin(f"perplexity of {name}", tokens, unit="tokens")
    try:
        return measure(folder, device, text, tokens, reporter.advance)
    finally:
        reporter.end()


def source_perplexity(
    folder: Path, source: Manifest, device: str, text: str, tokens: int, reporter: Reporter
) -> Perplexity:
    """The unquantized model's perplexity, measured once per source, text, length and device."""
    key = f"{source.sha256}:{device}:{tokens}:{text}"
    cache = (
        Settings().home
        / "cache"
        / "perplexity"
        / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    )
    with contextlib.suppress(OSError, ValueError, TypeError):
        return Perplexity(**json.loads(cache.read_text(encoding="utf-8")))
    result = measured(folder, device, text, source.ref, tokens, reporter)
    with contextlib.suppress(OSError):  # a cache that cannot be written costs a re-measure
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return result


def quantize_hf(
    store: Store,
    name: str,
    method: Method,
    *,
    source_dir: Path | None = None,
    calibration: Calibration | None = None,
    report: bool = False,
    device: str = "auto",
    reporter: Reporter | None = None,
    ppl_tokens: int = DEFAULT_SCORED_TOKENS,
) -> Manifest:
    """Quantize `name`'s safetensors version with `method`; store it as `name:TAG`. With
    `report`, measure its perplexity and the source's on `ppl_tokens` tokens."""
    reporter = reporter or CallbackReporter()
    calibration = calibration or Calibration()
    device = resolve_device(device)
    source = source_model(store, name, reporter, source_dir=source_dir)
    ref = ModelRef(source.name, method.tag)
    folder = unpacked_dir(store.verified_blob(source))
    method.check(folder)
    source_stats = tensor_stats(folder)
    store.check_free_space(source_stats.nbytes)
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="quantize-", dir=store.tmp_dir))
    try:
        out = work / "model"
        reporter.note(f"quantizing {source.ref} to {method.tag} with {method.library} ({device})")
        text = eval_text() if report else None
        started = time.perf_counter()
        result = method.quantize(folder, out, work, calibration, device, text, ppl_tokens)
        seconds = result.seconds or time.perf_counter() - started
        quantized = result.perplexity
        for file in _TOKENIZER_FILES:
            if (folder / file).is_file() and not (out / file).exists():
                shutil.copy2(folder / file, out / file)
        stats = tensor_stats(out)
        quant_report = QuantReport(
            source=source.ref,
            source_sha256=source.sha256,
            bits_per_weight=round(8 * stats.nbytes / source_stats.n_elements, 4),
            seconds=round(seconds, 3),
        )
        if text is not None:
            reporter.note(f"measuring perplexity on {ppl_tokens} tokens of {EVAL_TEXT_NAME}")
            baseline = source_perplexity(folder, source, device, text, ppl_tokens, reporter)
            if quantized is None or quantized.tokens != ppl_tokens:
                quantized = measured(out, device, text, str(ref), ppl_tokens, reporter)
            quant_report = replace(
                quant_report,
                perplexity=round(quantized.value, 4),
                source_perplexity=round(baseline.value, 4),
                eval_tokens=quantized.tokens,
                eval_text=EVAL_TEXT_NAME,
                perplexity_error=round(quantized.error, 4),
                source_perplexity_error=round(baseline.error, 4),
            )
        origin = {
            "kind": "quantize",
            "from": source.ref,
            "from_sha256": source.sha256,
            "method": method.format,
            "library": method.library,
        }
        if method.calibrated:
            origin["calibration"] = (
                f"{calibration.name} ({calibration.samples} x {calibration.tokens} tokens)"
            )
        facts = facts_from_folder(out, method.tag.upper(), source_stats.n_elements)
        return store_dir(
            store, out, ref, format=method.format, origin=origin, facts=facts,
            quant_report=quant_report,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
