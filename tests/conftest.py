from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def cifar_dir() -> Path:
    """The real CIFAR-10 copy (ImageFolder layout), unpacked by .ci/run; e2e tests skip without it."""
    path = os.environ.get("SUITE_TEST_CIFAR")
    if not path or not (Path(path) / "train").is_dir():
        if os.environ.get("CI"):  # CI must run them: a silent skip there would hide a broken data path
            pytest.fail("CI is set but SUITE_TEST_CIFAR does not name an unpacked CIFAR-10 copy")
        pytest.skip("SUITE_TEST_CIFAR does not name an unpacked CIFAR-10 copy (.ci/run sets it)")
    return Path(path)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session temporary directory unless a test sets its own."""
    if "SUITE_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def tiny_images(n_per_class: int, classes: list[str], seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), c) for c in range(len(classes))
            for _ in range(n_per_class)]


@pytest.fixture
def two_layouts(tmp_path: Path) -> tuple[Path, Path, dict]:
    """The same tiny data set written as an ImageFolder (PNG) and as torchvision's CIFAR-10 pickles."""
    from PIL import Image

    classes = ["airplane", "automobile", "bird"]
    splits = {"train": tiny_images(4, classes, 0), "test": tiny_images(2, classes, 1)}
    folder = tmp_path / "folder"
    for split, items in splits.items():
        for k, (img, c) in enumerate(items):
            d = folder / split / classes[c]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{k:04d}.png")
    pickles = tmp_path / "pickles"
    batches = pickles / "cifar-10-batches-py"
    batches.mkdir(parents=True)

    def dump(name: str, items: list) -> None:
        data = np.stack([img.transpose(2, 0, 1).reshape(-1) for img, _ in items]) if items else \
            np.zeros((0, 3072), np.uint8)
        with open(batches / name, "wb") as f:
            pickle.dump({"data": data, "labels": [c for _, c in items]}, f)

    # torchvision reads data_batch_1..5 in order: all of the training items go in the first
    dump("data_batch_1", splits["train"])
    for i in range(2, 6):
        dump(f"data_batch_{i}", [])
    dump("test_batch", splits["test"])
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)
    return folder, pickles, splits
