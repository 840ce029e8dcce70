"""Data: both CIFAR layouts, any ImageFolder by name (channels, sizes, bad files and folders), computed
statistics, the fingerprint, the decode cache, subsets, batch order and augmentation."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suite import data
from suite.data import (
    Augment,
    DataError,
    class_balanced_subset,
    epoch_batches,
    load_dataset,
    with_label_noise,
)
from suite.models import build_model

SYNTHETIC_FINGERPRINT = "d009fa0a86e80684"  # synthetic_dataset()'s tensors, the same as before fingerprints existed


def rgb(seed: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    """A random RGB image of size (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gray(seed: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    return rgb(seed, size).convert("L")


def write_folder(root: Path, files: dict[str, Image.Image]) -> Path:
    """An ImageFolder from {"train/<class>/<file>": image}."""
    for relative, image in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative)
    return root


def two_by_two(tmp_path: Path, make=rgb, size: tuple[int, int] = (12, 10), ext: str = "png") -> Path:
    """Classes "a" and "b", two training and one test image each."""
    files = {f"{split}/{c}/{k}.{ext}": make(10 * i + k, size)
             for i, c in enumerate("ab") for split, n in (("train", 2), ("test", 1)) for k in range(n)}
    return write_folder(tmp_path / "set", files)


def one_line_error(*args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


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
    for ds in (a, b):
        assert (ds.channels, ds.image_size, ds.stats) == (3, (32, 32), "published")
        assert ds.classes == ["airplane", "automobile", "bird"]
        assert (ds.mean, ds.std) == data.STATS["cifar10"]


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


def test_other_name_without_an_image_folder_is_one_clear_line(tmp_path):
    message = one_line_error("mnist", tmp_path)
    assert "no data set 'mnist'" in message and str(tmp_path) in message
    assert "train/<class>" in message and "test/<class>" in message and "--data-dir" in message


def test_other_name_without_a_directory_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("SUITE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # ./data does not exist here
    message = one_line_error("flowers")
    assert "no data set 'flowers' in 'data'" in message and "SUITE_DATA_DIR" in message


def test_env_var_names_the_directory(two_layouts, monkeypatch):
    monkeypatch.setenv("SUITE_DATA_DIR", str(two_layouts[1]))
    assert len(load_dataset("cifar10").train) == 12


def test_any_name_loads_an_image_folder_and_the_record_says_that_name(tmp_path):
    root = two_by_two(tmp_path)
    ds = load_dataset("flowers", root)
    assert (ds.name, ds.source, ds.classes, ds.num_classes) == ("flowers", str(root.resolve()), ["a", "b"], 2)
    assert (ds.channels, ds.image_size, ds.stats) == (3, (10, 12), "computed")
    assert ds.train.images.shape == (4, 3, 10, 12) and ds.test.labels.tolist() == [0, 1]
    record = json.loads(json.dumps(ds.describe()))
    assert record == {
        "name": "flowers", "source": str(root.resolve()), "fingerprint": ds.fingerprint, "channels": 3,
        "image_size": [10, 12], "num_classes": 2, "stats": "computed", "mean": list(ds.mean),
        "std": list(ds.std), "train_size": 4, "test_size": 2,
    }
    assert len(ds.fingerprint) == 16 and int(ds.fingerprint, 16) >= 0


def test_image_folder_order_is_classes_then_files_by_name(tmp_path):
    files = {"train/b/1.png": gray(1), "train/a/2.png": gray(2), "train/a/10.png": gray(3),
             "test/a/0.png": gray(4), "test/b/0.png": gray(5)}
    ds = load_dataset("letters", write_folder(tmp_path / "set", files))
    expected = [files[f"train/{name}"] for name in ("a/10.png", "a/2.png", "b/1.png")]  # sorted as strings
    assert ds.train.labels.tolist() == [0, 0, 1]
    for k, image in enumerate(expected):
        assert torch.equal(ds.train.images[k, 0], torch.from_numpy(np.array(image)))


def test_grayscale_set_has_one_channel(tmp_path):
    root = two_by_two(tmp_path, make=gray)
    ds = load_dataset("gray", root)
    assert ds.channels == 1 and len(ds.mean) == len(ds.std) == 1
    assert ds.train.images.shape == (4, 1, 10, 12) and ds.test.images.shape == (2, 1, 10, 12)
    assert torch.equal(ds.train.images[1, 0], torch.from_numpy(np.array(gray(1))))


@pytest.mark.parametrize("mode", ["1", "I;16", "F"])
def test_other_grayscale_modes_have_one_channel(tmp_path, mode):
    values = np.array([[0, 257 * 100, 65535, 300]], dtype=np.uint16)
    image = {"1": gray(0).convert("1"), "I;16": Image.fromarray(values),
             "F": Image.fromarray(np.array([[0.0, 100.4, 255.0, 300.0]], dtype=np.float32))}[mode]
    assert image.mode == mode
    ext = "tif" if mode == "F" else "png"
    files = {f"{split}/a/0.{ext}": image for split in ("train", "test")}
    ds = load_dataset("modes", write_folder(tmp_path / "set", files))
    assert ds.channels == 1
    pixels = ds.train.images[0, 0]
    if mode == "I;16":  # scaled from 16 to 8 bits, not clipped at 255
        assert pixels.tolist() == [[0, 100, 255, 1]]
    elif mode == "F":  # read as 0..255 and clipped, as PIL converts
        assert pixels.tolist() == [[0, 100, 255, 255]]
    else:
        assert set(pixels.unique().tolist()) == {0, 255}


def test_grayscale_and_colour_mixed_give_three_channels(tmp_path):
    files = {"train/a/0.png": gray(0), "train/a/1.png": rgb(1), "train/b/0.png": gray(2), "test/a/0.png": gray(3),
             "test/b/0.png": gray(4)}  # test/ is all grayscale: it gets three channels with train/
    ds = load_dataset("mixed", write_folder(tmp_path / "set", files))
    assert ds.channels == 3 and ds.test.images.shape[1] == 3 and len(ds.mean) == 3
    for split, k, name in (("train", 0, "train/a/0.png"), ("train", 1, "train/a/1.png"), ("test", 1, "test/b/0.png")):
        expected = torch.from_numpy(np.array(files[name].convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(getattr(ds, split).images[k], expected)


def test_palette_and_rgba_are_converted_to_rgb(tmp_path):
    palette = rgb(0).quantize(colors=16)
    rgba = rgb(1).convert("RGBA")
    rgba.putalpha(7)
    files = {"train/a/p.png": palette, "train/a/rgba.png": rgba, "test/a/la.png": gray(2).convert("LA")}
    assert [im.mode for im in files.values()] == ["P", "RGBA", "LA"]
    ds = load_dataset("converted", write_folder(tmp_path / "set", files))
    assert ds.channels == 3
    decoded = [ds.train.images[0], ds.train.images[1], ds.test.images[0]]
    for image, pixels in zip(files.values(), decoded):  # PIL's conversion: alpha dropped, palette looked up
        assert torch.equal(pixels, torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))


def test_an_image_of_another_size_is_refused_by_name(tmp_path):
    root = two_by_two(tmp_path)
    rgb(9, (30, 28)).save(root / "train" / "b" / "1.png")
    message = one_line_error("sizes", root)
    assert str(root / "train" / "b" / "1.png") in message
    assert "30x28" in message and "expected 12x10" in message and "image_size" in message


def test_train_and_test_of_different_sizes_are_refused(tmp_path):
    files = {"train/a/0.png": rgb(0, (16, 16)), "test/a/0.png": rgb(1, (20, 20))}
    message = one_line_error("split-sizes", write_folder(tmp_path / "set", files))
    assert str(tmp_path / "set" / "test" / "a" / "0.png") in message and "20x20" in message and "16x16" in message


def test_image_size_resizes_only_the_images_of_another_size(tmp_path):
    files = {"train/a/0.png": rgb(0, (16, 16)), "train/a/1.png": rgb(1, (30, 20)), "train/b/0.png": gray(2, (8, 8)),
             "test/a/0.png": rgb(3, (64, 48)), "test/b/0.png": rgb(4, (16, 16))}
    ds = load_dataset("resized", write_folder(tmp_path / "set", files), image_size=16)
    assert ds.image_size == (16, 16) and ds.train.images.shape == (3, 3, 16, 16)
    assert ds.test.images.shape == (2, 3, 16, 16)
    assert torch.equal(ds.train.images[0], torch.from_numpy(np.array(files["train/a/0.png"])).permute(2, 0, 1))
    shrunk = files["test/a/0.png"].resize((16, 16), Image.Resampling.BILINEAR)
    assert torch.equal(ds.test.images[0], torch.from_numpy(np.array(shrunk)).permute(2, 0, 1))
    grown = files["train/b/0.png"].resize((16, 16), Image.Resampling.BILINEAR)
    assert torch.equal(ds.train.images[2], torch.from_numpy(np.array(grown)).expand(3, 16, 16))


def test_image_size_resizes_pickles_and_synthetic_data(two_layouts):
    pickles = two_layouts[1]
    ds = load_dataset("cifar10", pickles, image_size=16)
    assert ds.train.images.shape == (12, 3, 16, 16) and ds.image_size == (16, 16)
    same = load_dataset("cifar10", pickles, image_size=32)
    assert torch.equal(same.train.images, load_dataset("cifar10", pickles).train.images)
    assert load_dataset("synthetic", image_size=8).train.images.shape[2:] == (8, 8)
    with pytest.raises(DataError, match="image_size"):
        load_dataset("synthetic", image_size=0)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_a_truncated_image_is_named_in_one_line(tmp_path, ext):
    root = two_by_two(tmp_path, size=(64, 64), ext=ext)
    victim = root / "train" / "b" / f"1.{ext}"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    message = one_line_error("truncated", root)
    assert message.startswith(f"cannot read image {victim}: ")


def test_a_file_that_is_no_image_is_named(tmp_path):
    root = two_by_two(tmp_path)
    (root / "test" / "a" / "0.png").write_bytes(b"not an image")
    assert str(root / "test" / "a" / "0.png") in one_line_error("garbage", root)


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_class_folder_is_refused_by_name(tmp_path, split):
    root = two_by_two(tmp_path)
    for s in ("train", "test"):
        (root / s / "empty_class").mkdir()
    other = "test" if split == "train" else "train"
    rgb(7).save(root / other / "empty_class" / "0.png")
    (root / split / "empty_class" / "notes.txt").write_text("not an image")  # the folder has no image
    message = one_line_error("empty", root)
    assert "empty_class" in message and str(root / split) in message


def test_test_folder_must_hold_the_same_classes(tmp_path):
    root = two_by_two(tmp_path)
    (root / "train" / "c").mkdir()
    rgb(5).save(root / "train" / "c" / "0.png")
    (root / "test" / "d").mkdir()
    rgb(6).save(root / "test" / "d" / "0.png")
    message = one_line_error("classes", root)
    assert "missing from test/: c" in message and "only in test/: d" in message


def test_a_split_without_class_folders_is_one_line(tmp_path):
    root = two_by_two(tmp_path)
    for folder in (root / "test").iterdir():
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    assert str(root / "test") in one_line_error("nothing", root)


def test_published_statistics_need_three_channels(tmp_path):
    root = two_by_two(tmp_path, make=gray)
    message = one_line_error("cifar10", root)
    assert "1-channel" in message and "another name" in message


def test_computed_statistics_are_those_of_the_whole_training_split(tmp_path):
    files = {f"{split}/{c}/{k}.png": rgb(100 * i + k + (50 if split == "test" else 0))
             for i, c in enumerate("abc") for split in ("train", "test") for k in range(3)}
    ds = load_dataset("stats", write_folder(tmp_path / "set", files))
    x = ds.train.images.double() / 255
    torch.testing.assert_close(torch.tensor(ds.mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), rtol=1e-12, atol=0)
    direct_std = x.transpose(0, 1).reshape(3, -1).std(dim=1, correction=0)
    torch.testing.assert_close(torch.tensor(ds.std, dtype=torch.float64), direct_std, rtol=1e-12, atol=0)


def test_channel_stats_in_many_chunks_equal_a_direct_computation():
    images = torch.randint(0, 256, (5, 2, 1500, 1500), dtype=torch.uint8)  # > 4M values each: one per chunk
    mean, std = data.channel_stats(images)
    x = images.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), rtol=1e-12, atol=0)
    direct_std = x.transpose(0, 1).reshape(2, -1).std(dim=1, correction=0)
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), direct_std, rtol=1e-12, atol=0)


def test_statistics_and_fingerprint_come_from_the_cache(tmp_path, monkeypatch):
    root = two_by_two(tmp_path)
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / "c"))
    first = load_dataset("flowers", root)

    def fail(*args, **kwargs):
        raise AssertionError("decoded, hashed or averaged again although cached")

    for attr in ("_decode_split", "_decode_folder", "channel_stats", "_hash_entry"):
        monkeypatch.setattr(data, attr, fail)
    second = load_dataset("flowers", root)
    assert (second.mean, second.std, second.fingerprint) == (first.mean, first.std, first.fingerprint)
    assert torch.equal(first.test.images, second.test.images)


def test_the_cache_key_changes_with_image_size(tmp_path, monkeypatch):
    root = two_by_two(tmp_path)
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / "c"))
    assert load_dataset("flowers", root, image_size=6).image_size == (6, 6)
    assert load_dataset("flowers", root).image_size == (10, 12)
    assert len(list((tmp_path / "c").glob("*.pt"))) == 2


def test_fingerprint_is_stable_and_changes_with_one_files_bytes(tmp_path, monkeypatch):
    root = two_by_two(tmp_path)
    prints = []
    for run in range(2):
        monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / f"c{run}"))  # decoded afresh each time
        prints.append(load_dataset("flowers", root).fingerprint)
    assert prints[0] == prints[1] == load_dataset("flowers", root).fingerprint  # the last one cached
    victim = root / "test" / "b" / "0.png"
    changed = np.array(Image.open(victim))
    changed[0, 0, 0] ^= 1
    Image.fromarray(changed).save(victim)
    os.utime(victim, ns=(1, 1))  # another time too, as any rewrite gives: the cache must not answer
    assert load_dataset("flowers", root).fingerprint != prints[0]


def test_pickle_and_synthetic_fingerprints(two_layouts):
    pickles = two_layouts[1]
    first = load_dataset("cifar10", pickles).fingerprint
    assert load_dataset("cifar10", pickles).fingerprint == first and len(first) == 16
    batch = pickles / "cifar-10-batches-py" / "test_batch"
    content = pickle.loads(batch.read_bytes())
    content["data"][0, 0] ^= 1  # one pixel of one test image
    batch.write_bytes(pickle.dumps(content))
    assert load_dataset("cifar10", pickles).fingerprint != first
    synthetic = data.synthetic_dataset()
    assert (synthetic.stats, synthetic.channels, synthetic.image_size) == ("fixed", 3, (32, 32))
    # the generated tensors are those of every earlier version of the suite: their hash is pinned
    assert synthetic.fingerprint == data.synthetic_dataset().fingerprint == SYNTHETIC_FINGERPRINT


def test_digits_a_small_real_grayscale_set(digits_dir):
    ds = load_dataset("digits", digits_dir)
    assert (ds.channels, ds.image_size, ds.num_classes, ds.stats) == (1, (8, 8), 7, "computed")
    assert ds.classes == [str(c) for c in range(7)] and ds.describe()["name"] == "digits"
    assert torch.bincount(ds.train.labels).tolist() == [round(0.8 * n) for n in torch.bincount(
        torch.cat([ds.train.labels, ds.test.labels])).tolist()]
    aug = Augment(ds.mean, ds.std)
    batch = aug.normalise(ds.train.images[:16])
    assert batch.shape == (16, 1, 8, 8) and abs(float(aug.normalise(ds.train.images).mean())) < 1e-4
    assert aug(ds.train.images[:16], torch.Generator().manual_seed(0)).shape == (16, 1, 8, 8)
    torch.manual_seed(0)
    model = build_model("resnet8", ds.num_classes, in_channels=ds.channels)
    assert model(batch).shape == (16, 7)


def test_class_balanced_subset_is_balanced_and_fixed():
    ds = data.synthetic_dataset(n_train=1000)
    a = class_balanced_subset(ds.train, 100, seed=0)
    b = class_balanced_subset(ds.train, 100, seed=0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [10] * 10
    assert len(class_balanced_subset(ds.train, 0)) == 1000


def test_label_noise_makes_exactly_the_asked_fraction_wrong_spread_over_the_other_classes():
    ds = data.synthetic_dataset(n_train=2000)
    noisy = with_label_noise(ds.train, 0.4, 10, seed=0)
    wrong = noisy.labels != ds.train.labels
    assert int(wrong.sum()) == 800  # exactly round(0.4 * 2000), none "flipped" to its own class
    assert noisy.images is ds.train.images and ds.train.labels.max() < 10 and noisy.labels.max() < 10
    # the wrong labels are spread over the other nine classes (a uniform draw: each ~1/9 of 800)
    offsets = (noisy.labels[wrong] - ds.train.labels[wrong]) % 10
    assert set(offsets.tolist()) == set(range(1, 10)) and torch.bincount(offsets).max() < 2 * 800 / 9
    again = with_label_noise(ds.train, 0.4, 10, seed=0)
    assert torch.equal(again.labels, noisy.labels)  # the same noisy labels for every run
    assert not torch.equal(with_label_noise(ds.train, 0.4, 10, seed=1).labels, noisy.labels)
    assert with_label_noise(ds.train, 0.0, 10) is ds.train


def test_label_noise_reaches_the_training_split_only_and_is_checked():
    from suite.config import ConfigError, TrainConfig
    from suite.harness import subsets

    ds = data.synthetic_dataset(n_train=500, n_test=200)
    train, test = subsets(ds, TrainConfig(dataset="synthetic", train_subset=300, label_noise=0.5))
    clean_train, clean_test = subsets(ds, TrainConfig(dataset="synthetic", train_subset=300))
    assert int((train.labels != clean_train.labels).sum()) == 150
    assert torch.equal(train.images, clean_train.images) and torch.equal(test.labels, clean_test.labels)
    for bad in (-0.1, 1.0, float("nan"), "0.2"):
        with pytest.raises(ConfigError, match="label_noise"):
            TrainConfig(label_noise=bad)


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


def test_a_failed_download_leaves_no_data_directory_behind(tmp_path, monkeypatch):
    """torchvision makes the directory and a partial archive before the network fails: both go, so the
    next run does not find an empty ``data/`` (and the user's own files in it stay)."""
    import torchvision

    class Offline:
        def __init__(self, root, train, download):
            Path(root).mkdir(parents=True, exist_ok=True)
            (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
            (Path(root) / "cifar-10-batches-py").mkdir()
            raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUITE_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="could not download cifar10") as failed:
        load_dataset("cifar10", None, download=True)
    assert "\n" not in str(failed.value)
    # offline, the user is told both ways to name a copy (the environment reaches tox and Slurm jobs too)
    assert str(failed.value).endswith("name one with --data-dir or SUITE_DATA_DIR")
    assert not (tmp_path / "data").exists()
    nested = tmp_path / "deep" / "er"
    with pytest.raises(DataError):
        load_dataset("cifar10", nested, download=True)
    assert list(tmp_path.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(DataError):
        load_dataset("cifar10", mine, download=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


# ----- file names that are not valid UTF-8 (issue 26) ---------------------------------------------------------
ARCHIVE_NAME = b"caf\xe9\xff.png"  # Latin-1 bytes, as old archives have: not UTF-8


def with_a_latin1_name(tmp_path: Path) -> Path:
    """two_by_two's folder plus train/a/<ARCHIVE_NAME>, written through a bytes path; skipped where the file
    system refuses names that are not UTF-8 (macOS)."""
    root = two_by_two(tmp_path)
    buffer = io.BytesIO()
    rgb(99).save(buffer, format="PNG")
    try:
        fd = os.open(os.path.join(os.fsencode(root / "train" / "a"), ARCHIVE_NAME), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        pytest.skip(f"this file system refuses a name that is not UTF-8: {exc}")
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    return root


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    root = with_a_latin1_name(tmp_path)
    ds = load_dataset("archive", root)
    assert len(ds.train) == 5 and len(ds.test) == 2
    assert torch.equal(ds.train.images[2], torch.from_numpy(np.array(rgb(99))).permute(2, 0, 1))  # after 0, 1
    assert load_dataset("archive", root).fingerprint == ds.fingerprint  # from the cache: the same key
    streamed = load_dataset("archive", root, streaming=True, image_size=8)  # fingerprinted from the listing
    assert len(streamed.train) == 5 and streamed.fingerprint
    assert streamed.train.images[2].shape == (3, 8, 8)  # read from disk on demand


def test_ordinary_file_names_hash_as_before():
    """The names' bytes are hashed: for every name UTF-8 can encode, its UTF-8, as before (the fingerprints
    of recorded runs stay), and another's bytes on disk, which are never valid UTF-8."""
    import hashlib

    def old(name: str, raw: bytes) -> str:
        digest = hashlib.sha256()
        digest.update(name.encode() + b"\0" + len(raw).to_bytes(8, "little"))
        digest.update(raw)
        return digest.hexdigest()

    for name in ("train/a/0.png", "train/é/ü 1.JPG", "test/日本/x.jpeg"):
        digest = hashlib.sha256()
        data._hash_entry(digest, name, b"pixels")
        assert digest.hexdigest() == old(name, b"pixels")
    latin1, utf8 = hashlib.sha256(), hashlib.sha256()
    data._hash_entry(latin1, os.fsdecode(b"caf\xe9.png"), b"pixels")
    data._hash_entry(utf8, "café.png", b"pixels")
    assert latin1.hexdigest() != utf8.hexdigest()


def test_a_file_name_that_is_not_utf8_runs_from_the_command_line(tmp_path):
    from suite.cli import main

    root = with_a_latin1_name(tmp_path)
    profile = tmp_path / "tiny.toml"
    profile.write_text('seeds = 1\noptimizers = ["sgd"]\n[train]\ndataset = "archive"\nmodel = "resnet8"\n'
                       'epochs = 1\nbatch_size = 2\ndevice = "cpu"\n')
    assert main(["run", "--profile", str(profile), "--data-dir", str(root), "--results-dir", str(tmp_path / "out"),
                 "--no-progress", "--no-report"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs" / "tiny").glob("*.json")]
    assert len(records) == 1 and records[0]["metrics"]["status"] == "finished"
