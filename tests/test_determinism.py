"""Same seed and inputs → same student.  What is bit-identical (see README, "Determinism"):

- the data splits and calibration set (numpy's seeded generator);
- every trained weight of the teacher and both students, on the same machine and thread count
  (training seeds shuffling and dropout from (seed, epoch), so a resumed run matches too — test_resume);
- hence every accuracy in the ledger, and the ONNX, TFLite fp32 and INT8 files byte for byte between two
  build processes (slow test; within one process TensorFlow's name counters change tensor names, not numbers).

Not identical: timings (latency, stage times), timestamps, and the bytes of torch's ``.pt`` files —
torch names the archive's inner folder after the temporary file it writes to; the tensors inside are equal.
"""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge_distill.data import prepare
from edge_distill.distill import KDConfig, TrainConfig, accuracy, predict_logits, train
from edge_distill.models.cnn import ConvClassifier


@pytest.fixture(scope="module")
def digits():
    # One thread: the bit-identity claim holds per thread count, and one thread is fastest for these tiny models.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield prepare("digits", seed=0, calib_count=100)
    torch.set_num_threads(threads)


def test_data_splits_are_bit_identical_for_a_seed(digits):
    spec, a = digits
    _, b = prepare("digits", seed=0, calib_count=100)
    _, c = prepare("digits", seed=1, calib_count=100)
    for name in ("x_train", "y_train", "x_val", "x_test", "y_test", "x_calib"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.y_test.tobytes() != c.y_test.tobytes() or a.x_test.tobytes() != c.x_test.tobytes()
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == len(c.y_train) + len(c.y_val) + len(c.y_test)


def _student(spec, seed):
    torch.manual_seed(seed)
    return ConvClassifier(spec.input_shape[0], spec.input_shape[1], spec.num_classes, (8, 16), dropout=0.1)


def _train(digits, tmp_path, seed, teacher_logits=None, tag="a"):
    spec, s = digits
    model = _student(spec, seed)
    kd = KDConfig(loss="logit" if teacher_logits is not None else "ce", temperature=4.0, alpha=0.5)
    train(model, s.x_train, s.y_train, s.x_val, s.y_val, TrainConfig(epochs=2, seed=seed), kd, teacher_logits,
          tmp_path / f"{tag}.ckpt", tag)
    return model


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_is_bit_identical_for_a_seed(digits, tmp_path):
    a = _train(digits, tmp_path, 0, tag="a")
    b = _train(digits, tmp_path, 0, tag="b")
    c = _train(digits, tmp_path, 1, tag="c")
    assert _same(a, b)
    assert not _same(a, c)
    _, s = digits
    assert accuracy(a, s.x_test, s.y_test) == accuracy(b, s.x_test, s.y_test)


def test_distillation_is_bit_identical_for_a_seed(digits, tmp_path):
    _, s = digits
    teacher = _train(digits, tmp_path, 5, tag="teacher")
    logits = predict_logits(teacher, s.x_train)
    a = _train(digits, tmp_path, 0, logits, tag="kd_a")
    b = _train(digits, tmp_path, 0, logits, tag="kd_b")
    assert _same(a, b)
    assert np.array_equal(predict_logits(a, s.x_test), predict_logits(b, s.x_test))


@pytest.mark.slow
def test_two_builds_with_the_same_seed_write_the_same_artifacts(tmp_path):
    args = ["--teacher-epochs", "3", "--student-epochs", "5", "--bench-warmup", "0", "--bench-runs", "5", "--quiet"]
    # Separate processes, as two users' builds would be: inside one process TensorFlow numbers its graph names
    # (model_1/..., model_3/...), so a second conversion there differs in tensor names, not in any number.
    for run in ("a", "b"):
        cmd = [sys.executable, "-m", "edge_distill", "build", "--profile", "rpi4", "--out", str(tmp_path / run), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)

    def digest(run, rel):
        return hashlib.sha256((tmp_path / run / rel).read_bytes()).hexdigest()

    for rel in ("data/splits.npz", "teacher/logits_train.npy", "teacher/teacher.onnx", "student/student.onnx",
                "student/student_fp32.tflite", "student/student_int8.tflite"):
        assert digest("a", rel) == digest("b", rel), rel
    for rel in ("teacher/teacher.pt", "distill/student_nokd.pt", "distill/student_kd.pt"):
        a, b = (torch.load(tmp_path / run / rel, weights_only=True) for run in ("a", "b"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    ra, rb = (json.loads((tmp_path / run / "report.json").read_text()) for run in ("a", "b"))
    assert untimed(ra["ledger"]) == untimed(rb["ledger"])  # every accuracy, agreement, size: all but timings
    assert [r["accuracy"] for r in ra["bench"]["results"]] == [r["accuracy"] for r in rb["bench"]["results"]]


def untimed(value):
    """``value`` without its timing fields (``*_ms``, ``*seconds``): the only numbers a rerun may change."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not (k.endswith("_ms") or k.endswith("seconds"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value
