"""A small CNN trained in seconds on scikit-learn's bundled 8x8 digits: the demo and test model.

Nothing is downloaded: the digits set ships inside scikit-learn. The split is fixed (first
1,400 images train, the remaining 397 test) and so is the seed, so accuracy repeats run to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vision.data import Samples

TRAIN_ROWS = 1400
INPUT_SHAPE = (1, 1, 8, 8)


@dataclass(frozen=True)
class DigitsModel:
    """Where the trained model and its data sets were written, and its own test accuracy."""

    program: Path  # torch.export .pt2, batch 1
    calib: Path  # .npz of training images (x, y)
    test: Path  # .npz of held-out images (x, y)
    accuracy: float
    train_s: float


def load_digits_samples() -> tuple[Samples, Samples]:
    """(train, test) as Nx1x8x8 float32 in [0, 1] with integer labels."""
    import importlib

    import numpy as np

    digits = importlib.import_module("sklearn.datasets").load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    return Samples(x[:TRAIN_ROWS], y[:TRAIN_ROWS]), Samples(x[TRAIN_ROWS:], y[TRAIN_ROWS:])


def make_cnn() -> Any:
    """Two 3x3 conv blocks and a linear head: about 1,900 weights, ~93% test accuracy."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )  # fmt: skip


def train_digits(out_dir: Path, epochs: int = 20, seed: int = 0) -> DigitsModel:
    """Train the CNN, export it with torch.export, and save the calibration and test sets."""
    import time

    import torch

    started = time.perf_counter()
    threads = torch.get_num_threads()
    # One thread: a model this small only loses time to thread hand-offs, badly on a busy host.
    torch.set_num_threads(1)
    try:
        model, accuracy = _fit(epochs, seed)
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    program = out_dir / "digits.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(INPUT_SHAPE),)), str(program))
    train, test = load_digits_samples()
    train.save(out_dir / "digits-train.npz")
    test.save(out_dir / "digits-test.npz")
    return DigitsModel(
        program,
        out_dir / "digits-train.npz",
        out_dir / "digits-test.npz",
        accuracy,
        time.perf_counter() - started,
    )


def _fit(epochs: int, seed: int) -> tuple[Any, float]:
    """Adam on minibatches of 100; returns the model in eval mode and its test accuracy."""
    import torch
    from torch import nn

    train, test = load_digits_samples()
    assert train.y is not None and test.y is not None
    torch.manual_seed(seed)
    model = make_cnn()
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 100):
            rows = order[start : start + 100]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(test.x)).argmax(dim=1).numpy()
    return model, float((predicted == test.y).mean())
