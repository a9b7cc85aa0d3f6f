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
