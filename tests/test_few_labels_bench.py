"""The few-label benchmarks' own logic (benchmarks/fashion_mnist_few_labels.py, text_few_labels.py): which labels each
arm may read, what a run's cache key holds, and how the targets read the comparisons.  The published numbers come
from these functions; the training they drive is the tool's own and is tested elsewhere."""

import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fashion_mnist_few_labels as few  # noqa: E402
import text_few_labels as text_few  # noqa: E402

from edge_distill.data.spec import UNLABELLED  # noqa: E402
from edge_distill.distill.views import ViewBank  # noqa: E402
from edge_distill.options import BuildOptions  # noqa: E402
from edge_distill.rundir import hash_inputs  # noqa: E402

Y = np.repeat(np.arange(10), 30)  # 300 training rows, 30 per class
PRUNED = {"label": "pruned(8-M-16)", "weights": "pruned.pt"}


def test_labelled_subsets_are_class_balanced_and_drawn_per_seed():
    a = few.labelled_subset(Y, 50, 0)
    assert len(a) == 50 and np.bincount(Y[a], minlength=10).tolist() == [5] * 10
    assert np.array_equal(a, few.labelled_subset(Y, 50, 0))
    assert not np.array_equal(a, few.labelled_subset(Y, 50, 1))


def test_each_arm_reads_only_the_labels_it_may():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1, 4, 4)).astype(np.float32)
    bank = ViewBank(rng.normal(size=(2, 300, 1, 4, 4)).astype(np.float32), rng.normal(size=(2, 300, 10)).astype(np.float32))
    splits = SimpleNamespace(x_train=x, y_train=Y.copy())
    labelled = few.labelled_subset(Y, 20, 0)
    transfer = np.setdiff1d(np.arange(300), labelled)

    x_lo, y_lo, views_lo, notes = few.arm_data(splits, bank, "labels_only", labelled)
    assert notes == {"repeats": 15} and len(y_lo) == 300  # tiled to the split's length: the same optimizer steps
    rows = np.tile(labelled, 15)
    assert np.array_equal(y_lo, Y[rows]) and np.array_equal(x_lo, x[rows]) and np.array_equal(views_lo.logits, bank.logits[:, rows])

    _, y_ps, _, notes = few.arm_data(splits, bank, "pseudo", labelled)
    top1 = bank.logits[0].argmax(1)  # view 0: the unaugmented image
    assert np.array_equal(y_ps[labelled], Y[labelled]) and np.array_equal(y_ps[transfer], top1[transfer])
    assert notes["pseudo_label_accuracy"] == pytest.approx(float((top1[transfer] == Y[transfer]).mean()))

    _, y_kd, views_kd, notes = few.arm_data(splits, bank, "kd", labelled)
    assert np.array_equal(y_kd[labelled], Y[labelled]) and (y_kd[transfer] == UNLABELLED).all() and notes == {"transfer": 280}
    assert views_kd is bank and np.array_equal(splits.y_train, Y)  # the split's own labels are left as they were


def test_only_the_kd_arms_key_holds_the_ce_average():
    batch, labelled = few.FULL, replace(few.FULL, ce_average="labelled")
    assert batch.ce_average == "batch"  # the tool's default
    for arm in ("labels_only", "pseudo", "prune+kd", "scratch+kd"):
        assert few.run_key(batch, Y, PRUNED, arm, 20, 0) == few.run_key(labelled, Y, PRUNED, arm, 20, 0)
    kd_batch, kd_labelled = few.run_key(batch, Y, PRUNED, "kd", 20, 0), few.run_key(labelled, Y, PRUNED, "kd", 20, 0)
    assert kd_batch["name"] != kd_labelled["name"]
    # kd runs cached before the average was a setting (they averaged over the labelled images) keep their names
    subset = few.subset_hash(few.labelled_subset(Y, 20, 0))
    before = hash_inputs("few-labels", few.arm_settings(labelled), "kd", 20, 0, subset, few.suite.student_config(labelled.suite).label())
    assert kd_labelled["name"] == f"few-kd-n20-s0-{before}"


def test_the_targets_read_the_comparisons_and_the_wall():
    comparisons = {"600": {"kd_minus_labels_only": {"points": 9.77}, "soft_minus_hard": {"points": 0.05}},
                   "3000": {"kd_minus_labels_only": {"points": 4.05}, "soft_minus_hard": {"points": -0.2}},
                   "prune_minus_scratch": {"points": 1.04}}
    deployed = {"kd_600": {"tflite_int8": {"test_accuracy": 0.9148}}, "prune+kd": {"tflite_int8": {"test_accuracy": 0.9243}}}
    t = few.targets((600, 3000), comparisons, deployed, 119 * 60, quick=False, cold_measured=False)
    assert t["int8_kd_student_600_labels"]["met"] and t["kd_gain_600_labels_points"]["met"]
    assert t["soft_minus_hard_600_labels_points"]["met"] and not t["soft_minus_hard_3000_labels_points"]["met"]
    assert t["prune_minus_scratch_points"]["met"] and not t["int8_pruned_student_accuracy"]["met"]
    assert t["wall_minutes"]["met"] and "estimated" in t["wall_minutes"]["target"]
    slow = few.targets((600, 3000), comparisons, deployed, 121 * 60, quick=False, cold_measured=True)["wall_minutes"]
    assert not slow["met"] and "measured" in slow["target"]
    assert not few.targets((600, 3000), comparisons, {}, 60, quick=True, cold_measured=True)["int8_kd_student_600_labels"]["met"]


def test_the_cold_estimate_adds_what_was_read_from_the_cache():
    teacher, bank, pruned = {"cached": True, "train_seconds": 2700.0}, {"cached": True, "seconds": 450.0}, {"cached": True, "seconds": 6.0}
    runs = [{"cached": True, "train_seconds": 300.0}] * 4 + [{"train_seconds": 320.0}]  # the fresh run is in the wall
    assert few.cold_cache_seconds(1000.0, teacher, bank, pruned, runs, jobs=2) == 1000 + 2700 + 450 + 6 + 600
    assert few.cold_cache_seconds(1000.0, {**teacher, "cached": False}, {"cached": True, "seconds": None}, {}, [], jobs=2) == 1000


def test_the_section_keeps_the_earlier_average_beside_the_new_one():
    rows = few.earlier_average_rows("batch")
    assert len(rows) == 1 and "0.9035" in rows[0] and "−1.16" in rows[0]
    assert few.earlier_average_rows("labelled") == []


def test_the_text_suite_keys_its_kd_runs_by_the_build_default_average():
    options = BuildOptions(task="text", data="wordnet-nouns")
    assert text_few.transfer_average_key(options, "kd") == ["batch"]
    assert text_few.transfer_average_key(options, "pseudo") == []
    assert text_few.transfer_average_key(replace(options, transfer_ce_average="labelled"), "kd") == []
