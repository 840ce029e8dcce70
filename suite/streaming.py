"""Image folders that do not fit in memory (ImageNet: 1.28 M images): read from disk by DataLoader workers
(PIL's decoding, torchvision's transforms), where the in-memory path (``suite.data``) decodes a whole set
once and keeps it as one tensor. A profile asks for it with ``[train] streaming = true``.

- Training images: ``RandomResizedCrop(side)`` and a horizontal flip, decoded and transformed in the
  workers (``loader_workers`` of them). Every example of a batch gets a seed drawn from the run's
  augmentation generator, and its transform runs under that seed: the crops and flips of a run depend on
  its seed alone, not on the number of workers, which worker takes which example, or the number of
  processes (under torchrun each process loads only its slice of every batch).
- Test images: ``Resize(resize)`` then ``CenterCrop(side)`` (224 and 256 for ImageNet), in order.
- ``FolderImages`` stands where the in-memory split's image tensor stands: ``images[idx]`` decodes those
  files with the test transform. The harness's few direct reads go through it (the examples SSAM-F scores
  with ``fisher_data = "train"``, budget probes, warm-up, sharpness); those examples are then center
  crops (plus the profile's flip), not random resized crops.
- Normalisation: ImageNet's published mean and std, on the device, as the in-memory path normalises.
- The record's fingerprint hashes every file's relative path, size and label, not its bytes: reading a
  million files to hash them is what streaming avoids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's published ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # the test transform's resize before the center crop, as for ImageNet


def decode(path: str) -> torch.Tensor:
    """uint8 (3, H, W) RGB, decoded by PIL (torchvision's own decoders are deprecated since 0.29)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


def train_transform(side: int):
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(side, antialias=True), v2.RandomHorizontalFlip()])


def test_transform(side: int):
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(round(side * RESIZE_RATIO), antialias=True), v2.CenterCrop(side)])


class _Seeded(TorchDataset):
    """(index, seed) -> the image transformed under that seed: the same crop whichever worker runs it."""

    def __init__(self, files: Sequence[str], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(decode(self.files[index]))


class _Plain(TorchDataset):
    def __init__(self, files: Sequence[str], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(decode(self.files[index]))


class FolderImages:
    """The images of one split, read on demand; ``[idx]`` (an int, a slice or indices) decodes those with the
    test transform into a uint8 (n, 3, side, side) tensor, as the in-memory split's tensor would give."""

    def __init__(self, files: Sequence[str], side: int) -> None:
        self.files, self.side = list(files), side

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.side, self.side)

    def subset(self, index: torch.Tensor) -> FolderImages:
        """Those files, still on disk (a class-balanced subset)."""
        return FolderImages([self.files[i] for i in index.tolist()], self.side)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index]][0]
        chosen = range(len(self.files))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        items = _Plain(self.files, test_transform(self.side))
        return torch.stack([items[i] for i in chosen])

    def batches(self, batch_size: int, workers: int) -> Iterator[torch.Tensor]:
        """Every image in order, test transform, ``batch_size`` at a time, decoded by ``workers`` workers."""
        loader = DataLoader(_Plain(self.files, test_transform(self.side)), batch_size=batch_size,
                            num_workers=workers)
        yield from loader

    def train_batches(self, batches: list[torch.Tensor], seeds: list[torch.Tensor], workers: int,
                      pin: bool = False) -> Iterator[torch.Tensor]:
        """The given batches of indices, each example transformed under its seed (random resized crop, flip),
        prefetched by ``workers`` workers; uint8 (n, 3, side, side) each."""
        sampler = [list(zip(idx.tolist(), s.tolist())) for idx, s in zip(batches, seeds)]
        loader = DataLoader(_Seeded(self.files, train_transform(self.side)), batch_sampler=sampler,
                            num_workers=workers, pin_memory=pin, persistent_workers=False)
        yield from loader


def streamed(images) -> bool:
    """Whether a split's images are read from disk (``FolderImages``) rather than held in memory."""
    return isinstance(images, FolderImages)


def name_bytes(name: str) -> bytes:
    """A file name as hashed: its UTF-8, as always; a name that is not UTF-8 on disk (an old archive's
    Latin-1 ``café.jpg``, listed with its undecodable bytes as surrogate escapes) as its bytes on disk,
    which are never valid UTF-8, so no two names hash alike and every other name hashes as before."""
    try:
        return name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name)


def fingerprint(root: Path, samples: dict[str, list[tuple[str, int]]]) -> str:
    """Relative path, size and label of every file: a file added, removed, renamed or resized changes it.
    A path is hashed as ``suite.data`` hashes one (a name that is not UTF-8 as its bytes on disk)."""
    digest, prefix = hashlib.sha256(), len(str(root)) + 1
    for split in ("train", "test"):
        for path, label in samples[split]:
            digest.update(name_bytes(path[prefix:]) + f"\0{os.stat(path).st_size}\0{label}\n".encode())
    return digest.hexdigest()[:16]
