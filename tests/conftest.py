from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARE

pytest_plugins = ["strict_skips"]  # CI fails on a skip whose reason is not declared there


def pytest_configure(config: pytest.Config) -> None:
    """Out-of-tree optimizers (SUITE_OPTIMIZER_MODULES) join the registry before the contract tests are
    generated from it; a module that is not there is one line, not a collection traceback."""
    from suite import registry

    try:
        registry.names()
    except registry.PluginError as exc:
        pytest.exit(str(exc), returncode=2)
    # Under pytest-xdist (tox -e test: -n auto) the cores are shared out among the workers: torch's
    # default of a thread per core in every worker oversubscribes them, and tiny tensors then spend most
    # of their time waiting for threads (a toy-problem test: 0.1 s with one thread, seconds with two on a
    # busy 2-core machine). The processes its tests start get the same share (OMP_NUM_THREADS, unless set),
    # so a result computed here and one from a subprocess ran with the same threads; one that must run with
    # the machine's own (re-running published records bit for bit) takes helpers.machine_threads_env().
    # Without xdist (tox -e bench) nothing changes.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        if "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = os.environ[SHARE] = str(max(1, (os.cpu_count() or 1) // workers))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def cifar_dir() -> Path:
    """The real CIFAR-10 copy (ImageFolder layout), unpacked by .ci/run; e2e tests skip without it."""
    path = os.environ.get("SUITE_TEST_CIFAR")
    if not path or not (Path(path) / "train").is_dir():
        if os.environ.get("CI"):  # CI must run them: a silent skip there would hide a broken data path
            pytest.fail("CI is set but SUITE_TEST_CIFAR does not name an unpacked CIFAR-10 copy")
        pytest.skip("end-to-end: set SUITE_TEST_CIFAR to an unpacked CIFAR-10 ImageFolder (tar -xzf "
                    "cifar10-jpeg.tar.gz -C DIR) and run tox -e e2e")
    return Path(path)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session temporary directory unless a test sets its own; under
    pytest-xdist one shared by every worker (cache files are written atomically), so that a data set is
    decoded once per session, not once per worker."""
    if "SUITE_CACHE_DIR" not in os.environ:
        base = tmp_path_factory.getbasetemp()
        session = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
        monkeypatch.setenv("SUITE_CACHE_DIR", str(session / "cache"))


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


@pytest.fixture
def digits_dir(tmp_path: Path) -> Path:
    """scikit-learn's digits, 7 classes of 8x8 grayscale, as an ImageFolder of PNGs (folders "0".."6").

    Pixels 0..16 are scaled to 0..255 (rounded). A fixed split per class: the first 80 % of its images, in
    scikit-learn's order, go to train/, the rest to test/. Files are named by their index in scikit-learn."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits(n_class=7)
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    root = tmp_path / "digits"
    for c in range(7):
        index = np.flatnonzero(digits.target == c)
        cut = int(round(0.8 * len(index)))
        for split, part in (("train", index[:cut]), ("test", index[cut:])):
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root
