"""The data stage: a dataset name → a ``DataSpec`` and seeded train/val/test/calibration splits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .builtin import DATASETS
from .pixels import Pixels, pixel_stats
from .spec import DataSpec, Splits
from .splits import balanced_subset, stratified_split
from .user import check_array_options, is_user_data, load_test_data, load_user_data

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


@dataclass(frozen=True)
class DataResult:
    spec: DataSpec
    splits_path: str  # relative to the run directory
    n_train: int
    n_val: int
    n_test: int
    n_calib: int
    # Text builds (tasks/text.py): the raw texts of every split and the data stage's word tokenizer.
    texts_path: str = ""
    tokenizer_path: str = ""


def prepare(name: str, seed: int, calib_count: int, image_size: tuple[int, int] | None = None, channels: int | None = None,
            skip_bad_images: bool = False, test_data: str | None = None) -> tuple[DataSpec, Splits]:
    """Load a dataset, split it, normalize with training-split statistics, pick calibration samples.

    A dataset with an official test set — or a separate ``test_data`` (folder or .npz), which replaces it —
    keeps it as the test split and carves validation out of its training set; otherwise a seeded stratified
    split makes all three.  ``image_size`` (height, width), ``channels`` and ``skip_bad_images`` shape how a
    folder's image files are read (export/imageprep.py).
    """
    if is_user_data(name):
        raw = load_user_data(name, image_size, channels, skip_bad_images)
    else:
        loader = DATASETS.get(name)  # an unknown name lists the known ones first
        check_array_options(f"the built-in dataset {name!r}", image_size, channels)
        raw = loader()
    if test_data:
        test = load_test_data(test_data, raw, skip_bad_images)
        raw = dataclasses.replace(raw, test_images=test.images, test_labels=test.labels, resize=raw.resize or test.resize,
                                  skipped=raw.skipped + test.skipped, source=f"{raw.source}; test split: {test.source}")
    check_raw(raw.images, raw.labels, len(raw.class_names), name)
    if raw.test_images is not None:
        check_raw(raw.test_images, raw.test_labels, len(raw.class_names), f"{name} (test set)")
        idx = stratified_split(raw.labels, {"train": 0.9, "val": 0.1}, seed)
        images = np.concatenate([raw.images, raw.test_images])
        labels = np.concatenate([raw.labels, raw.test_labels])
        idx["test"] = np.arange(len(raw.labels), len(labels))
    else:
        idx = stratified_split(raw.labels, SPLIT_FRACTIONS, seed)
        images, labels = raw.images, raw.labels
    calib = idx["train"][balanced_subset(labels[idx["train"]], calib_count, seed + 1)]
    mean, std, xs = split_images(images, idx, calib, raw.pixel_scale)
    shape = images.shape[1:]
    del images  # the splits hold the only copy now (raw's arrays too, unless a test set was concatenated)
    spec = DataSpec(
        name=name,
        task="vision",
        input_shape=tuple(int(d) for d in shape),  # type: ignore[arg-type]
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
        pixel_scale=raw.pixel_scale,
        mean=mean,
        std=std,
        source=raw.source,
        resize=raw.resize,
        skipped_images=raw.skipped,
    )
    splits = Splits(
        x_train=xs["train"], y_train=labels[idx["train"]],
        x_val=xs["val"], y_val=labels[idx["val"]],
        x_test=xs["test"], y_test=labels[idx["test"]],
        x_calib=xs["calib"], y_calib=labels[calib],
    )
    return spec, splits


def split_images(images: np.ndarray, idx: dict[str, np.ndarray], calib: np.ndarray, pixel_scale: float) -> tuple[float, float, dict]:
    """(mean, std, the images of each split).  uint8 photos stay uint8 (``Pixels``, normalized per batch) and are
    split in place, so the build holds them once; other arrays become normalized float32 as always."""
    if images.dtype != np.uint8:
        scaled = images / np.float32(pixel_scale)
        mean, std = float(scaled[idx["train"]].mean()), float(scaled[idx["train"]].std())
        x = ((scaled - mean) / std).astype(np.float32)
        return mean, std, {**{s: x[idx[s]] for s in ("train", "val", "test")}, "calib": x[calib]}
    mean, std = pixel_stats(images, idx["train"], pixel_scale)
    order = np.concatenate([idx["train"], idx["val"], idx["test"]])
    if len(order) != len(images) or len(np.unique(order)) != len(order):  # splits that do not partition the data
        x = {s: images[idx[s]] for s in ("train", "val", "test")}
    else:
        permute_rows(images, order)
        ends = np.cumsum([len(idx["train"]), len(idx["val"])])
        x = dict(zip(("train", "val", "test"), np.split(images, ends)))
    x["calib"] = x["train"][np.searchsorted(idx["train"], calib)]
    return mean, std, {s: Pixels(v, pixel_scale, mean, std) for s, v in x.items()}


def permute_rows(x: np.ndarray, order: np.ndarray) -> None:
    """``x[:] = x[order]`` in place, one row of scratch memory: a copy of 1.5 GB of photos would double the peak."""
    done = np.zeros(len(order), bool)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        scratch, j = x[start].copy(), start
        while True:
            done[j] = True
            k = int(order[j])
            if k == start:
                x[j] = scratch
                break
            x[j] = x[k]
            j = k


def check_raw(images: np.ndarray, labels: np.ndarray, num_classes: int, name: str) -> None:
    if len(images) == 0:
        raise DataError(f"Dataset {name!r} is empty.", "Point the loader at a dataset with at least one image per class.")
    if images.ndim != 4:
        raise DataError(f"Dataset {name!r} images have shape {images.shape}; expected (N, C, H, W).", "Images must be 4-D.")
    if len(images) != len(labels):
        raise DataError(f"Dataset {name!r} has {len(images)} images but {len(labels)} labels.", "Give one label per image.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"Dataset {name!r} has labels out of range (e.g. {int(bad[0])}); expected 0..{num_classes - 1}.",
            "Labels must be class indices starting at 0.",
        )


__all__ = ["DATASETS", "DataResult", "DataSpec", "Splits", "prepare"]
