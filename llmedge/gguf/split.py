"""GGUF models split into parts by llama.cpp's gguf-split, read as one model.

Every part is a GGUF file of its own with `split.no` (0-based), `split.count` and
`split.tensors.count`; the first part carries the model's metadata, and each part the tensors
it holds. llama.cpp opens the first part, `<prefix>-00001-of-0000N.gguf`, and finds the others
beside it by name. The merged header has the first part's metadata and every part's tensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from llmedge.errors import InvalidModelFileError
from llmedge.gguf.header import GgufHeader, read_gguf_header

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
_FIRST_PART = re.compile(r"^(.*)-00001-of-(\d{5})\.gguf$")


def split_count(header: GgufHeader) -> int:
    """How many parts the model this header belongs to has (1: it is not split)."""
    count = header.get(SPLIT_COUNT)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 1 else 1


def merge_split(headers: Sequence[GgufHeader], names: Sequence[str]) -> GgufHeader:
    """One header for a split model's parts, given in order (`names` for messages)."""
    count = len(headers)
    total = 0
    for index, (header, name) in enumerate(zip(headers, names, strict=True)):
        if (header.get(SPLIT_NO), split_count(header)) != (index, count):
            raise InvalidModelFileError(
                name,
                f"it should be part {index + 1} of {count} of a split model, but its header "
                f"says part {header.get(SPLIT_NO)!r} of {header.get(SPLIT_COUNT)!r}",
            )
        total += len(header.tensors)
    first = headers[0]
    if first.get(SPLIT_TENSORS) != total:
        raise InvalidModelFileError(
            names[0], f"the parts hold {total} tensors, the first says {first.get(SPLIT_TENSORS)}"
        )
    return replace(
        first,
        tensors=tuple(t for h in headers for t in h.tensors),
        file_size=sum(h.file_size for h in headers),
    )


def read_model_header(
    path: str | os.PathLike[str], keep_arrays: Collection[str] = ()
) -> GgufHeader:
    """The header of the model at `path`: its own, or, for the first part of a split model,
    that of all its parts (found beside it by name, as llama.cpp finds them)."""
    path = Path(path)
    header = read_gguf_header(path, keep_arrays)
    count = split_count(header)
    if count == 1:
        return header
    match = _FIRST_PART.match(path.name)
    if header.get(SPLIT_NO) != 0 or match is None or int(match.group(2)) != count:
        raise InvalidModelFileError(
            str(path),
            f"it is one part of a model split in {count}; open the part named "
            f"…-00001-of-{count:05d}.gguf",
        )
    paths = [
        path.with_name(f"{match.group(1)}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    headers = [header] + [read_gguf_header(p) for p in paths[1:]]
    return merge_split(headers, [str(p) for p in paths])
