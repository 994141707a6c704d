"""Splits a GGUF model into parts the way llama.cpp's gguf-split does, for tests of split pulls.

Every part is a GGUF file with `split.no`, `split.count` and `split.tensors.count`; the first
carries the model's metadata. gguf-py's writer does the splitting (`split_max_tensors`); the
tensors are copied as they are stored (quantized bytes included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def split_gguf(source: Path, out: Path, max_tensors_per_part: int, *, nudge: int = 0) -> list[Path]:
    """Write `source` as `<out stem>-0000i-of-0000N.gguf`; returns the parts in order. With a
    `nudge` (1-255), the first byte of the last tensor is xor-ed with it: a valid model whose
    last part alone has new bytes (an update that changes one blob)."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(out, arch, split_max_tensors=max_tensors_per_part)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    last = len(reader.tensors) - 1
    for i, tensor in enumerate(reader.tensors):
        data: Any = tensor.data
        if nudge and i == last:
            data = np.array(data, copy=True)
            data.view(np.uint8).reshape(-1)[0] ^= nudge
        writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(out)
