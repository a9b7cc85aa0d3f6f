import numpy as np
import pytest

from edge_distill.data import prepare
from edge_distill.data.splits import balanced_subset, stratified_split
from edge_distill.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits():
    return prepare("digits", seed=0, calib_count=200)


def test_digits_splits_are_disjoint_and_stratified(digits):
    spec, s = digits
    assert spec.input_shape == (1, 8, 8) and spec.num_classes == 10
    total = len(s.y_train) + len(s.y_val) + len(s.y_test)
    assert total == 1797
    # Every class appears in every split in roughly the same proportion.
    for y in (s.y_train, s.y_val, s.y_test):
        counts = np.bincount(y, minlength=10) / len(y)
        assert counts.min() > 0.07 and counts.max() < 0.13
    # No test image is also a training image (compare raw bytes).
    train = {row.tobytes() for row in s.x_train}
    overlap = sum(row.tobytes() in train for row in s.x_test)
    assert overlap <= 3  # digits has a handful of exact duplicate images; splits are by index


def test_normalization_uses_training_statistics(digits):
    _, s = digits
    assert abs(float(s.x_train.mean())) < 1e-4 and abs(float(s.x_train.std()) - 1) < 1e-3
    assert s.x_train.dtype == np.float32


def test_calibration_is_balanced_and_from_training_split(digits):
    _, s = digits
    assert len(s.y_calib) == 200
    assert np.all(np.bincount(s.y_calib) == 20)
    train = {row.tobytes() for row in s.x_train}
    assert all(row.tobytes() in train for row in s.x_calib)


def test_splits_are_seeded():
    a = stratified_split(np.repeat(np.arange(5), 20), {"a": 0.5, "b": 0.5}, seed=3)
    b = stratified_split(np.repeat(np.arange(5), 20), {"a": 0.5, "b": 0.5}, seed=3)
    c = stratified_split(np.repeat(np.arange(5), 20), {"a": 0.5, "b": 0.5}, seed=4)
    assert np.array_equal(a["a"], b["a"]) and not np.array_equal(a["a"], c["a"])


def test_too_few_calibration_samples_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than the 10 classes"):
        balanced_subset(np.repeat(np.arange(10), 5), 3, seed=0)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        prepare("imagenet", 0, 200)
    assert "digits" in err.value.hint


def _write_idx(path, array):
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_and_keeps_the_official_test_split(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train_y, test_y = np.repeat(np.arange(10), 30), np.repeat(np.arange(10), 5)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (300, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y)
    test_images = rng.integers(0, 256, (50, 28, 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    monkeypatch.setenv("EDGE_DISTILL_FASHION_MNIST", str(tmp_path))
    spec, s = prepare("fashion-mnist", 0, 100)
    assert spec.input_shape == (1, 28, 28) and spec.class_names[9] == "Ankle boot"
    assert np.array_equal(s.y_test, test_y)  # the official test set, in order, never mixed into training
    assert np.allclose(s.x_test[:, 0] * spec.std + spec.mean, test_images / 255.0, atol=1e-5)
    assert len(s.y_train) + len(s.y_val) == 300


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_DISTILL_FASHION_MNIST", str(tmp_path))
    with pytest.raises(DataError) as err:
        prepare("fashion-mnist", 0, 100)
    assert "dataset-fashion-mnist" in err.value.hint


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    from edge_distill.data.builtin import read_idx

    _write_idx(tmp_path / "x.gz", np.zeros((10, 4, 4)))
    import gzip

    data = gzip.open(tmp_path / "x.gz").read()[:-5]
    (tmp_path / "y").write_bytes(data)
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "y")
