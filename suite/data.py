"""Data sets as in-memory uint8 tensors, batch augmentation on tensors, deterministic batch order.

CIFAR-10/100 are read from a directory the user names, in either torchvision layout:

    DIR/cifar-10-batches-py/        (or cifar-100-python/)  torchvision's pickled batches
    DIR/train/<class>/*.jpg|png     DIR/test/<class>/*      ImageFolder, as ImageNet is laid out

Decoded ImageFolder images are cached (``SUITE_CACHE_DIR``, default ``~/.cache/sharpness-suite``),
keyed by the files' names, sizes and times, so 60,000 JPEGs are decoded once. Augmentation runs on
whole batches with the harness's own generator: every optimizer sees the same crops and flips.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from suite.store import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
STATS = {  # per-channel mean and std of the training images
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}
TORCHVISION_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class DataError(RuntimeError):
    """The data set cannot be found or read; the message says what to put where."""


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 3, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # where it was read from, for the record


def default_data_dir() -> tuple[Path, bool]:
    """(directory, named_by_user): ``SUITE_DATA_DIR`` if set, else ``./data``."""
    env = os.environ.get("SUITE_DATA_DIR")
    return (Path(env), True) if env else (Path("data"), False)


def load_dataset(name: str, data_dir: Path | None = None, download: bool | None = None) -> Dataset:
    """Load ``name`` from ``data_dir``. ``download=None``: only when the directory was not named."""
    if name == "synthetic":
        return synthetic_dataset()
    named = data_dir is not None
    if data_dir is None:
        data_dir, named = default_data_dir()
    if download is None:
        download = not named
    if name not in TORCHVISION_DIRS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join([*TORCHVISION_DIRS, 'synthetic'])}")
    if (data_dir / TORCHVISION_DIRS[name]).is_dir():
        return _from_pickles(name, data_dir)
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        return _from_image_folder(name, data_dir)
    if download:
        _download(name, data_dir)
        return _from_pickles(name, data_dir)
    raise DataError(
        f"no {name} data in {str(data_dir)!r}: expected {TORCHVISION_DIRS[name]}/ (torchvision) or "
        f"train/<class>/*.jpg and test/<class>/*.jpg (ImageFolder); name the directory with --data-dir or "
        f"SUITE_DATA_DIR, or pass --download where the network allows"
    )


PICKLES = {  # torchvision's layout: (training files, test files, label key)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": (["train"], ["test"], "fine_labels"),
}


def _download(name: str, root: Path) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as exc:  # no network, a proxy, a corrupt archive: one line for the user
        raise DataError(
            f"could not download {name} into {str(root)!r} ({type(exc).__name__}: {exc}); unpack a copy there "
            f"({TORCHVISION_DIRS[name]}/ or train/ + test/ class folders) or name one with --data-dir"
        ) from None


def _from_pickles(name: str, root: Path) -> Dataset:
    """Read torchvision's pickled batches directly (no checksum: copies and fixtures load too)."""
    directory = root / TORCHVISION_DIRS[name]
    train_files, test_files, label_key = PICKLES[name]

    def read(files: list[str]) -> Split:
        images, labels = [], []
        for file in files:
            try:
                with open(directory / file, "rb") as f:
                    batch = pickle.load(f, encoding="latin1")
                images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(batch[label_key])
            except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
                raise DataError(f"cannot read {directory / file}: {type(exc).__name__}: {exc}") from None
        return Split(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64))

    mean, std = STATS[name]
    train, test = read(train_files), read(test_files)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return Dataset(name, train, test, num_classes, mean, std, str(directory.resolve()))


def _from_image_folder(name: str, root: Path) -> Dataset:
    listing = {s: _list_image_folder(root / s) for s in ("train", "test")}
    classes = sorted(listing["train"])
    if sorted(listing["test"]) != classes:
        raise DataError(f"{root}/train and {root}/test hold different class folders")
    if not classes:
        raise DataError(f"{root}/train holds no class folders with images")
    key = hashlib.sha256(repr((str(root.resolve()), sorted(listing.items()))).encode()).hexdigest()[:16]
    cache = _cache_dir() / f"{name}-imagefolder-{key}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
    else:
        blob = {s: _decode_split(root / s, listing[s], classes) for s in ("train", "test")}
        atomic_write(cache, lambda tmp: torch.save(blob, tmp))
    mean, std = STATS[name]
    train, test = (Split(*blob[s]) for s in ("train", "test"))
    return Dataset(name, train, test, len(classes), mean, std, str(root.resolve()))


def _list_image_folder(split_dir: Path) -> dict[str, list[tuple[str, int, int]]]:
    out = {}
    for cls in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if cls.is_dir():
            files = [
                (f.name, f.stat().st_size, f.stat().st_mtime_ns)
                for f in os.scandir(cls.path)
                if Path(f.name).suffix.lower() in IMAGE_SUFFIXES
            ]
            if files:
                out[cls.name] = sorted(files)
    return out


def _decode_split(split_dir: Path, listing: dict, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image
    from tqdm import tqdm

    paths = [(split_dir / c / f[0], i) for i, c in enumerate(classes) for f in listing[c]]
    images = None
    labels = torch.empty(len(paths), dtype=torch.int64)
    for k, (path, label) in enumerate(tqdm(paths, desc=f"decoding {split_dir}", unit="img", disable=None)):
        with Image.open(path) as img:
            array = np.array(img.convert("RGB"))
        if images is None:
            images = torch.empty((len(paths), 3, *array.shape[:2]), dtype=torch.uint8)
        if array.shape[:2] != tuple(images.shape[2:]):
            raise DataError(f"{path} is {array.shape[1]}x{array.shape[0]}; every image must have one size")
        images[k] = torch.from_numpy(array).permute(2, 0, 1)
        labels[k] = label
    return images, labels


def _cache_dir() -> Path:
    return Path(os.environ.get("SUITE_CACHE_DIR", Path.home() / ".cache" / "sharpness-suite"))


def synthetic_dataset(n_train: int = 2000, n_test: int = 500, num_classes: int = 10, size: int = 32) -> Dataset:
    """Generated, learnable images: a smooth random prototype per class plus noise. For tests."""
    gen = torch.Generator().manual_seed(1234)
    low = torch.rand(num_classes, 3, 4, 4, generator=gen)
    prototypes = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        labels = torch.arange(n) % num_classes
        noise = 0.25 * torch.randn(n, 3, size, size, generator=gen)
        images = ((prototypes[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        return Split(images, labels)

    mean, std = STATS["synthetic"]
    return Dataset("synthetic", make(n_train), make(n_test), num_classes, mean, std, "generated")


def class_balanced_subset(split: Split, n: int, seed: int = 0) -> Split:
    """The same ``n`` examples for every run (independent of the run's seed), classes balanced."""
    if n <= 0 or n >= len(split):
        return split
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=gen)
    labels = split.labels[order]
    # rank of each example within its class in the shuffled order; take the lowest ranks first
    rank = torch.empty_like(labels)
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    chosen = order[torch.sort(rank * len(split) + torch.arange(len(split)), stable=True).indices[:n]]
    chosen = chosen.sort().values
    return Split(split.images[chosen], split.labels[chosen])


class Augment:
    """Random crop with zero padding, horizontal flip, normalisation and optional Cutout, batched."""

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_padding: int = 4,
        flip: bool = True,
        cutout: int = 0,
        cutout_p: float = 0.5,
    ) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.crop_padding, self.flip, self.cutout, self.cutout_p = crop_padding, flip, cutout, cutout_p

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment a uint8 batch; all random draws come from ``gen`` (CPU) in a fixed order."""
        b, _, h, w = images.shape
        pad = self.crop_padding
        # draw everything first so the sequence of random numbers never depends on the options' data
        dy, dx = (torch.randint(0, 2 * pad + 1, (b,), generator=gen) for _ in range(2))
        flips = torch.rand(b, generator=gen) < 0.5
        cy, cx = (torch.randint(0, n, (b,), generator=gen) for n in (h, w))
        apply_cutout = torch.rand(b, generator=gen) < self.cutout_p
        x = images
        if pad:
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            rows = (dy[:, None] + torch.arange(h)).to(x.device)
            cols = (dx[:, None] + torch.arange(w)).to(x.device)
            batch = torch.arange(b, device=x.device)[:, None, None]
            x = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.flip:
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
        x = self.normalise(x)
        if self.cutout:
            half = self.cutout // 2
            ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
            inside_y = (ys >= cy[:, None] - half) & (ys < cy[:, None] - half + self.cutout)
            inside_x = (xs >= cx[:, None] - half) & (xs < cx[:, None] - half + self.cutout)
            hole = inside_y[:, :, None] & inside_x[:, None, :] & apply_cutout[:, None, None]
            x = x.masked_fill(hole[:, None].to(x.device), 0.0)
        return x


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A fresh permutation per epoch; the last partial batch is dropped (BatchNorm needs > 1)."""
    order = torch.randperm(n, generator=gen)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
