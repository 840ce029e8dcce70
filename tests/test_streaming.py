"""Streaming an ImageFolder from disk (issue 14, item 5) on a small generated folder: the data stays on disk,
test images are resized and center-cropped, training crops depend on the run's seed alone (not on the
number of workers or processes), the input pipeline's share of the time is recorded, and the command
runs a streamed profile."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ddp_worker import spawn
from helpers import refused_in_one_line, run_config

from suite import build, harness, streaming
from suite.config import TrainConfig
from suite.data import DataError, load_dataset

SIDE = 32
TRAIN = TrainConfig(dataset="tinyfolder", model="resnet8", epochs=2, batch_size=8, eval_batch_size=6, device="cpu",
                    crop_padding=0, cutout=0, streaming=True, image_size=SIDE, loader_workers=2)


def make_folder(root, per_class=(8, 4), classes=3):
    """Images of assorted sizes (36-63 pixels a side), PNG and JPEG, class-coloured so a model can learn."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(36, 64, size=2)
                pixels = (rng.random((h, w, 3)) * 80 + c * 60).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("tinyfolder"))


def load(folder):
    return load_dataset("tinyfolder", folder, False, image_size=SIDE, streaming=True)


def test_the_folder_stays_on_disk(folder, tmp_path):
    data = load(folder)
    assert isinstance(data.train.images, streaming.FolderImages) and len(data.train) == 24 and len(data.test) == 12
    assert data.train.images.shape == (24, 3, SIDE, SIDE) and data.image_size == (SIDE, SIDE)
    assert (data.mean, data.std) == (streaming.IMAGENET_MEAN, streaming.IMAGENET_STD)
    assert data.stats == "imagenet (streaming)"
    subset = build.subsets(data, dataclasses.replace(TRAIN, train_subset=9))[0]
    assert isinstance(subset.images, streaming.FolderImages) and subset.labels.bincount().tolist() == [3, 3, 3]
    # the fingerprint: the same folder reads the same, a file more changes it
    other = make_folder(tmp_path / "copy")
    assert load(other).fingerprint == data.fingerprint
    (other / "train" / "class0" / "0.png").rename(other / "train" / "class0" / "extra.png")
    assert load(other).fingerprint != data.fingerprint


def test_a_directory_that_is_no_image_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(DataError, match="streaming reads an ImageFolder"):
        load_dataset("tinyfolder", tmp_path, False, streaming=True)
    profile = tmp_path / "p.toml"
    profile.write_text('description = "d"\noptimizers = ["sgd"]\n[train]\ndataset = "x"\nstreaming = true\n'
                       'device = "cpu"\n')
    refused_in_one_line(capsys, ["run", "--profile", str(profile), "--data-dir", str(tmp_path)],
                        "streaming reads an ImageFolder", tmp_path / "out")


def test_test_images_are_resized_then_center_cropped(folder):
    """ImageNet's evaluation transform at this side: the shorter side to round(32 * 256 / 224) = 37, then
    the central 32 x 32, computed here with torchvision's functional ops on the decoded file."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    data = load(folder)
    for i in (0, 5):  # a PNG and a JPEG
        with Image.open(data.test.images.files[i]) as img:
            raw = F.pil_to_tensor(img.convert("RGB"))
        expected = F.center_crop(F.resize(raw, [37], antialias=True), [SIDE, SIDE])
        assert torch.equal(data.test.images[i], expected)
    assert torch.equal(torch.cat(list(data.test.images.batches(5, workers=2))), data.test.images[:])


def test_training_crops_depend_on_the_seed_alone(folder):
    images = load(folder).train.images
    batches = [torch.tensor([3, 1, 4, 1]), torch.tensor([5, 1, 2, 6])]
    seeds = [torch.tensor([10, 11, 12, 13]), torch.tensor([14, 11, 16, 17])]
    by_main = list(images.train_batches(batches, seeds, workers=0))
    by_workers = list(images.train_batches(batches, seeds, workers=2))
    assert all(a.shape == (4, 3, SIDE, SIDE) and a.dtype == torch.uint8 for a in by_main)
    assert all(torch.equal(a, b) for a, b in zip(by_main, by_workers))  # whichever worker took which example
    assert torch.equal(by_main[0][1], by_main[1][1])  # example 1 under seed 11, in two batches: one crop
    assert not torch.equal(by_main[0][1], by_main[0][3])  # example 1 under seeds 11 and 13: two crops


def test_a_streamed_run_is_the_same_run_with_any_number_of_workers(folder):
    data = load(folder)
    records = [harness.run(run_config("ssam-f-unstructured-explicit", dataclasses.replace(TRAIN, loader_workers=w),
                                      fisher_samples=4, fisher_data="train"), data, progress=False)
               for w in (0, 2)]
    strip = [{k: v for k, v in e.items() if k != "train_seconds"} for r in records for e in r["epochs"]]
    assert strip[:2] == strip[2:] and all(e["train_loss"] is not None for e in strip)
    for r in records:
        m = r["metrics"]
        assert m["status"] == "finished" and m["steps"] == 6 and 0 < m["data_share"] < 1 and m["data_seconds"] > 0
        assert r["config"]["train"]["streaming"] is True and r["data"]["stats"] == "imagenet (streaming)"


def test_two_processes_stream_their_slices_of_the_batches_one_process_reads(folder, tmp_path, monkeypatch):
    """SGD on a network without BatchNorm: each process loads only its half of every batch (with the seeds
    one process would give those examples), and the run is the one-process run, up to floating point."""
    monkeypatch.setenv("SUITE_TEST_FOLDER", str(folder))
    train = dataclasses.replace(TRAIN, model="tiny-nobn", replicas=2, loader_workers=0)  # workers: tested above
    two = spawn([run_config("sgd", train)], tmp_path)[0]["sgd"]
    _, state = harness.fit(run_config("sgd", dataclasses.replace(train, replicas=1)), load(folder), progress=False)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(two["params"], state.model.parameters()))
    assert two["record"]["metrics"]["forward_samples_per_step"] == 8.0


def test_the_run_command_streams_a_profile(folder, tmp_path, capsys):
    from suite.cli import main

    profile = tmp_path / "streamed.toml"
    profile.write_text('description = "d"\nseeds = 1\noptimizers = ["sgd", "sam"]\n[train]\ndataset = "tinyfolder"\n'
                       'model = "resnet8"\nstreaming = true\nimage_size = 32\nloader_workers = 2\nbatch_size = 8\n'
                       'eval_batch_size = 6\ncrop_padding = 0\ncutout = 0\ndevice = "cpu"\n')
    out = tmp_path / "out"
    assert main(["run", "--profile", str(profile), "--data-dir", str(folder), "--results-dir", str(out),
                 "--no-progress", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert err.count("waiting for data") == 2
    assert len(list((out / "runs" / "streamed").glob("*.json"))) == 2
