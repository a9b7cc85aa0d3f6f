"""Photos held as uint8 (issue #37): the split file stores bytes, every reader gets the float path's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_distill.data import Splits, prepare
from edge_distill.data.pixels import Pixels, normalize, pixel_stats
from edge_distill.data.user import load_folder


def stripe_photos(root: Path, per_class: int = 20, size: tuple[int, int] = (30, 40)) -> Path:
    rng = np.random.default_rng(0)
    for label in (0, 1):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(per_class):
            ramp = np.sin(np.arange(size[label]) * 0.4 + i)
            stripes = np.repeat(ramp[:, None], size[1], 1) if label == 0 else np.repeat(ramp[None, :], size[0], 0)
            img = np.clip(128 + 80 * stripes[:, :, None] + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"c{label}" / f"{i}.jpg")
    return root


def float_path(images: np.ndarray, train: np.ndarray, pixel_scale: float):
    """The data stage's float32 path before photos stayed uint8 (the reference numbers)."""
    scaled = images.astype(np.float32) / np.float32(pixel_scale)
    mean, std = float(scaled[train].mean()), float(scaled[train].std())
    return mean, std, ((scaled - mean) / std).astype(np.float32)


def test_split_file_holds_uint8_and_reads_as_the_float_path(tmp_path):
    folder = stripe_photos(tmp_path / "photos")
    spec, splits = prepare(str(folder), seed=0, calib_count=6, image_size=(24, 24))
    assert isinstance(splits.x_train, Pixels) and splits.x_train.raw.dtype == np.uint8
    splits.save(tmp_path / "splits.npz")
    with np.load(tmp_path / "splits.npz") as npz:
        assert all(npz[f"x_{s}"].dtype == np.uint8 for s in ("train", "val", "test", "calib"))
    loaded = Splits.load(tmp_path / "splits.npz")
    # ~1 byte a pixel, not 4, and mapped from the file: a stage pays only for the splits it reads
    assert loaded.x_train.nbytes == int(np.prod(loaded.x_train.shape))
    assert isinstance(loaded.x_train.raw, np.memmap) and loaded.x_train.raw.dtype == np.uint8

    raw = load_folder(folder, (24, 24))
    assert raw.images.dtype == np.uint8
    labels = raw.labels
    # The same rows, in the same order, as indexing the float array with the split's indices.
    from edge_distill.data import SPLIT_FRACTIONS
    from edge_distill.data.splits import stratified_split

    idx = stratified_split(labels, SPLIT_FRACTIONS, 0)
    mean, std, x = float_path(raw.images, idx["train"], 255.0)
    assert spec.mean == pytest.approx(mean, rel=1e-6) and spec.std == pytest.approx(std, rel=1e-6)
    # Given the statistics, every value is bit-identical to the float path's.
    for s in ("train", "val", "test"):
        ref = ((raw.images[idx[s]].astype(np.float32) / np.float32(255.0) - spec.mean) / spec.std).astype(np.float32)
        got = getattr(loaded, f"x_{s}")
        assert got[:].dtype == np.float32
        np.testing.assert_array_equal(got[:], ref)
        np.testing.assert_array_equal(np.asarray(got), ref)  # the whole array, as np.savez or onnxruntime read it
        np.testing.assert_array_equal(got[np.array([len(ref) - 1, 0])], ref[[len(ref) - 1, 0]])
        np.testing.assert_array_equal(getattr(loaded, f"y_{s}"), labels[idx[s]])
    assert abs(float(np.asarray(loaded.x_train).mean())) < 1e-3  # normalized, never raw 0..255


def test_pixel_stats_and_normalize_match_numpy():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    idx = np.sort(rng.choice(50, 30, replace=False))
    mean, std = pixel_stats(raw, idx, 255.0, chunk=7)
    ref = raw[idx].astype(np.float64) / 255.0
    assert mean == pytest.approx(ref.mean(), rel=1e-12) and std == pytest.approx(ref.std(), rel=1e-12)
    px = Pixels(raw, 255.0, mean, std)
    np.testing.assert_array_equal(px.rows(idx)[:], normalize(raw[idx], 255.0, mean, std))
    assert px.reshape(50, -1).shape == (50, 192)  # ndarray attributes work on the normalized array
    with pytest.raises(TypeError):
        Pixels(raw.astype(np.float32), 255.0, mean, std)


def test_old_float32_split_files_still_load(tmp_path):
    x = np.random.default_rng(2).normal(size=(10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10) % 2
    old = Splits(x, y, x, y, x, y, x, y)
    old.save(tmp_path / "old.npz")
    loaded = Splits.load(tmp_path / "old.npz")
    assert isinstance(loaded.x_train, np.ndarray) and loaded.x_train.dtype == np.float32
    np.testing.assert_array_equal(loaded.x_test, x)


def test_training_on_uint8_photos_equals_training_on_their_float_array(tmp_path):
    """The training loop and inference normalize each batch: the same weights and logits as the float32 array."""
    import torch

    from edge_distill.distill import KDConfig, TrainConfig
    from edge_distill.distill.train import predict_logits, train

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    y = (raw.reshape(40, -1).mean(1) > 127).astype(np.int64)
    px = Pixels(raw, 255.0, 0.5, 0.29)

    def trained(x, name):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
        train(model, x, y, x, y, TrainConfig(epochs=2, seed=0, batch_size=8), KDConfig(loss="ce"), None, tmp_path / name, name)
        return predict_logits(model, x)

    np.testing.assert_array_equal(trained(px, "uint8.ckpt"), trained(np.asarray(px), "float.ckpt"))
