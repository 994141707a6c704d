"""Sample sets for calibration and evaluation: `.npz`/`.npy` files, or a folder of them.

A `.npz` holds `x` (float32, NxCxHxW, already preprocessed the way the model expects) and,
for a labelled set, `y` (N integer class ids). A `.npy` holds `x` alone. A folder's files are
joined in name order. Images are not decoded here: preprocessing belongs to the model's owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmedge.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

FORMAT_HINT = "give a .npz with `x` (NxCxHxW float32) and optional `y` labels, or a .npy of x"


@dataclass(frozen=True)
class Samples:
    """Model inputs, one per row, with their class labels when known."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def head(self, n: int) -> Samples:
        return Samples(self.x[:n], None if self.y is None else self.y[:n])

    def save(self, path: Path) -> None:
        import numpy as np

        if self.y is None:
            np.savez(path, x=self.x)
        else:
            np.savez(path, x=self.x, y=self.y)


def load_samples(path: Path, input_shape: tuple[int, ...]) -> Samples:
    """Read a sample set and check each row against the model's input shape (batch excluded)."""
    import numpy as np

    files = (
        sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if path.is_dir()
        else [path]
    )
    if not path.exists() or not files:
        raise InvalidRequestError(f"no samples at {path}: {FORMAT_HINT}", param="data")
    xs: list[npt.NDArray[np.float32]] = []
    ys: list[npt.NDArray[np.int64]] = []
    for file in files:
        if file.suffix == ".npy":
            xs.append(np.load(file).astype(np.float32))
            continue
        with np.load(file) as arrays:
            if "x" not in arrays:
                raise InvalidRequestError(f"{file} has no array `x`: {FORMAT_HINT}", param="data")
            xs.append(arrays["x"].astype(np.float32))
            if "y" in arrays:
                ys.append(arrays["y"].astype(np.int64))
    x = np.concatenate(xs)
    row = tuple(input_shape[1:])
    if tuple(x.shape[1:]) != row:
        raise InvalidRequestError(
            f"{path} holds inputs of shape {tuple(x.shape[1:])} but the model takes {row}; "
            "preprocess the samples, or pass --input-shape to match them",
            param="data",
        )
    y = np.concatenate(ys) if ys and len(ys) == len(xs) else None
    if y is not None and len(y) != len(x):
        raise InvalidRequestError(f"{path}: {len(x)} inputs but {len(y)} labels", param="data")
    return Samples(x, y)


def random_samples(input_shape: tuple[int, ...], n: int, seed: int = 0) -> Samples:
    """Standard-normal inputs, for parity checks when no data is given (never for calibration)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return Samples(rng.standard_normal((n, *input_shape[1:]), dtype=np.float32))


def batches(samples: Samples, batch: int) -> list[npt.NDArray[np.float32]]:
    """Split inputs into arrays of exactly `batch` rows (converted models have a fixed batch)."""
    usable = len(samples) - len(samples) % batch
    return [samples.x[i : i + batch] for i in range(0, usable, batch)]
