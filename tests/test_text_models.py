"""Text students: registered families → trained on real glosses → full-INT8 TFLite with integer token input.

Real tools only: onnx2tf, TensorFlow's converter, LiteRT, ONNX Runtime and the device agent in a subprocess.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_distill.convert import convert_student
from edge_distill.tasks import input_contract
from edge_distill.data.text import prepare_text
from edge_distill.distill import KDConfig, TrainConfig, accuracy, train
from edge_distill.errors import ConfigError
from edge_distill.models.students import StudentConfig, build_student, family_names
from edge_distill.models.text import student_inputs
from edge_distill.profiles import load_profile
from edge_distill.rundir import RunDir
from edge_distill.sizing import choose_student
from system_packages import require_wordnet

AGENT = Path(__file__).resolve().parents[1] / "export" / "agent.py"
TEXT_FAMILIES = family_names("text")


@pytest.fixture(scope="module")
def data():
    require_wordnet()
    return prepare_text("wordnet-nouns", seed=0, calib_count=100)


def test_text_families_are_registered_and_sized_within_budget(data):
    assert set(TEXT_FAMILIES) == {"textcnn", "tiny-transformer"}
    for family in TEXT_FAMILIES:
        result = choose_student(data.spec, load_profile("android-midrange"), family, teacher_params=22_713_216, min_compression=20)
        chosen = result.chosen
        assert result.cost.params <= 22_713_216 / 20 and chosen.seq_len <= data.spec.input_shape[0] and chosen.vocab <= data.spec.vocab_size
        model = build_student(chosen, data.spec)
        assert sum(p.numel() for p in model.parameters()) == result.cost.params
        # Every knob is turned: the candidates differ in width, depth, length and vocabulary.
        configs = [c.config for c in result.candidates]
        assert all(len({getattr(c, k) for c in configs}) > 1 for k in ("width", "depth", "seq_len", "vocab"))


def test_a_vision_family_is_refused_for_text(data):
    with pytest.raises(ConfigError, match="takes token ids"):
        build_student(StudentConfig("textcnn", 32, 1, seq_len=8, vocab=100), _vision_spec())


def _vision_spec():
    from edge_distill.data import prepare

    return prepare("digits", 0, 50)[0]


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_student_converts_to_full_int8_with_int32_ids(family, data, tmp_path):
    torch.manual_seed(0)
    config = StudentConfig(family, 32, 1, seq_len=24, vocab=4096)
    s = data.splits
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(s.y_train), 6000, replace=False))  # a random real subset: all 25 classes
    x_train, x_val = student_inputs(config, s.x_train[pick]), student_inputs(config, s.x_val[:1000])
    model = build_student(config, data.spec)
    train(model, x_train, s.y_train[pick], x_val, s.y_val[:1000], TrainConfig(epochs=5, seed=0), KDConfig(loss="ce"), None,
          tmp_path / "ckpt", family)
    check_x, check_y = student_inputs(config, s.x_test[::40]), s.y_test[::40]  # 411 real test glosses, spread over the file
    fp32 = accuracy(model, check_x, check_y)
    assert fp32 > 0.2  # well above the 1/25 of chance: it learned from the text

    run = RunDir(tmp_path / "run")
    result = convert_student(model, (24,), student_inputs(config, s.x_calib), check_x, run, check_y=check_y, calib_y=s.y_calib,
                             contract=input_contract(data.spec), variants=(), layer_analysis=False, threads=1)
    checks = {c.hop: c for c in result.checks}
    assert checks["torch->onnx"].passed and checks["onnx->tflite_fp32"].passed
    int8 = result.file("tflite_int8")
    assert "int32 input" in int8.integer_description and "int8 weights and int8 activations" in int8.integer_description

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(run.path(int8.path)), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.int32 and list(inp["shape"]) == [1, 24] and out["dtype"] == np.int8
    # Plain full INT8 stays within a few points of fp32 on these samples (the gate measured it on the same ones).
    plain = result.attempts[0]
    assert plain.variant == "tflite_int8" and plain.drop_points is not None and plain.drop_points <= 3.0, plain

    # The device agent scores the INT8 model on integer ids in a separate process, as on a phone.
    npz = tmp_path / "test_ids.npz"
    np.savez(npz, x=check_x, y=check_y)
    proc = subprocess.run([sys.executable, str(AGENT), str(run.path(int8.path)), "--npz", str(npz), "--runs", "3", "--warmup", "1"],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report
    assert report["input_dtype"] == "int32" and report["n_eval"] == len(check_y)
    assert abs(report["accuracy"] - fp32) <= 0.03


def test_the_transformer_reads_real_tokens_only():
    """[PAD] keys get a -8 bias and the sentence vector averages the real tokens: what sits in the [PAD] rows
    barely moves the logits, and the pooled vector is the plain mean of the real rows."""
    from edge_distill.models.text import PAD_BIAS, RealTokenMean, TinyTransformer

    torch.manual_seed(0)
    model = TinyTransformer(vocab=50, seq_len=12, width=32, depth=2, num_classes=5).eval()
    ids = torch.tensor([[5, 9, 23, 7, 0, 0, 0, 0, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0]])
    before = model(ids)
    with torch.no_grad():
        model.embed.weight[0] = 10 * torch.randn(32)  # a wildly different [PAD] row
    after = model(ids)
    assert (before - after).abs().max() < 0.05 * before.abs().max()
    with torch.no_grad():
        model.embed.weight[5] += 3 * torch.randn(32)  # the same kind of change to a real word does move them
    assert (model(ids) - after).abs().max() > 0.2 * before.abs().max()

    x = torch.randn(2, 12, 32)
    bias = torch.where(ids == 0, PAD_BIAS, 0.0)
    pooled = RealTokenMean()(x, bias)
    real = (ids != 0).float().unsqueeze(-1)
    assert torch.allclose(pooled, (x * real).sum(1) / real.sum(1), atol=0.02)
