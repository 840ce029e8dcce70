"""Data: both directory layouts, the decode cache, subsets, batch order and augmentation."""

from __future__ import annotations

import pytest
import torch

from suite import data
from suite.data import Augment, DataError, class_balanced_subset, epoch_batches, load_dataset


def test_both_layouts_give_the_same_tensors(two_layouts):
    folder, pickles, splits = two_layouts
    a = load_dataset("cifar10", folder)
    b = load_dataset("cifar10", pickles)
    assert a.num_classes == b.num_classes == 3
    for split in ("train", "test"):
        sa, sb = getattr(a, split), getattr(b, split)
        assert sa.images.dtype == torch.uint8 and sa.images.shape == (len(splits[split]), 3, 32, 32)
        assert torch.equal(sa.images, sb.images)  # PNG is lossless: pixel-exact
        assert torch.equal(sa.labels, sb.labels)
    expected = torch.from_numpy(splits["train"][5][0]).permute(2, 0, 1)
    assert torch.equal(a.train.images[5], expected)


def test_image_folder_is_decoded_once(two_layouts, tmp_path, monkeypatch):
    folder = two_layouts[0]
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / "c"))
    first = load_dataset("cifar10", folder)
    assert list((tmp_path / "c").glob("*.pt"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(data, "_decode_split", no_decoding)
    second = load_dataset("cifar10", folder)
    assert torch.equal(first.train.images, second.train.images)


def test_cache_is_invalidated_when_files_change(two_layouts, tmp_path, monkeypatch):
    folder = two_layouts[0]
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / "c"))
    load_dataset("cifar10", folder)
    victim = next((folder / "train" / "bird").iterdir())
    victim.unlink()
    assert len(load_dataset("cifar10", folder).train) == 11


def test_missing_directory_is_one_clear_line(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message and "cifar-10-batches-py" in message and "train/<class>" in message


def test_directory_with_neither_layout(tmp_path):
    (tmp_path / "train").mkdir()  # no test/ beside it
    with pytest.raises(DataError, match="no cifar10 data"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_pickle_is_named(two_layouts):
    pickles = two_layouts[1]
    (pickles / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", pickles)


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        load_dataset("mnist", tmp_path)


def test_env_var_names_the_directory(two_layouts, monkeypatch):
    monkeypatch.setenv("SUITE_DATA_DIR", str(two_layouts[1]))
    assert len(load_dataset("cifar10").train) == 12


def test_class_balanced_subset_is_balanced_and_fixed():
    ds = data.synthetic_dataset(n_train=1000)
    a = class_balanced_subset(ds.train, 100, seed=0)
    b = class_balanced_subset(ds.train, 100, seed=0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [10] * 10
    assert len(class_balanced_subset(ds.train, 0)) == 1000


def test_epoch_batches_permute_and_drop_the_last_partial_batch():
    batches = epoch_batches(10, 3, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(torch.cat(batches).unique()) == 9


def test_augment_without_options_is_normalisation():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    aug = Augment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_padding=0, flip=False, cutout=0)
    out = aug(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, (images.float() / 255 - 0.5) / 0.25)


def test_augment_crops_are_shifted_windows_of_the_padded_image():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 6, 6)
    aug = Augment((0.0,) * 3, (1.0,) * 3, crop_padding=2, flip=False)
    out = (aug(images, torch.Generator().manual_seed(3)) * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for k in range(2):
        windows = [padded[k, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[k], w) for w in windows)


def test_augment_flips_about_half_and_is_deterministic_per_generator():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    aug = Augment((0.5,) * 3, (0.25,) * 3, crop_padding=0, flip=True)
    a = aug(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, aug(images, torch.Generator().manual_seed(1)))
    plain = (images.float() / 255 - 0.5) / 0.25
    flipped = [torch.equal(a[k], plain[k].flip(2)) for k in range(64)]
    kept = [torch.equal(a[k], plain[k]) for k in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_cutout_zeroes_one_square_per_image():
    images = torch.full((64, 3, 8, 8), 255, dtype=torch.uint8)
    aug = Augment((0.5,) * 3, (0.25,) * 3, crop_padding=0, flip=False, cutout=4, cutout_p=1.0)
    out = aug(images, torch.Generator().manual_seed(1))
    holes = (out == 0).all(dim=1)
    sizes = holes.sum(dim=(1, 2))
    assert (sizes >= 4).all() and (sizes <= 16).all() and (sizes == 16).any()  # clipped at the border
    rows, cols = holes.any(dim=2), holes.any(dim=1)
    assert torch.equal(sizes, rows.sum(1) * cols.sum(1))  # a rectangle, not scattered pixels
