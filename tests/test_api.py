"""The Python API (edge_distill.build / convert / bench) over in-memory objects: real builds on scikit-learn's digits
as numpy arrays, reruns reusing every stage, a changed array redoing them, nn.Module teachers and students, and the
same clear errors for bad objects as for bad files."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import edge_distill
from edge_distill import EdgeDistillError
from edge_distill.errors import ConfigError, ConversionError, DataError, TeacherError

FAST = dict(teacher_epochs=4, student_epochs=6, bench_warmup=2, bench_runs=20, quiet=True)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.images, d.target  # (1797, 8, 8) float64 in 0..16, int labels


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("api") / "run"
    return out, edge_distill.build(profile="rpi4", data=digits, out=out, **FAST)


def test_build_from_arrays_returns_the_shipped_file_and_the_ledger(built):
    out, b = built
    assert b.run_dir == out.resolve() and b.shipped == out.resolve() / "student" / "student_int8.tflite" and b.shipped.is_file()
    assert isinstance(b.ledger[0], edge_distill.LedgerRow)
    assert b.row("tflite_int8").accuracy >= b.row("torch_fp32").accuracy - 0.01
    assert b.report["ledger"]["n_test"] == 360 and b.options.student_epochs == 6
    assert not any(b.reused.values())  # a fresh run directory computed everything
    assert len(list((out / "inputs").glob("data-*.npz"))) == 1


def test_a_rerun_with_the_same_arrays_reuses_every_stage(built, digits):
    out, first = built
    x, y = digits
    again = edge_distill.build(profile="rpi4", data=(x.copy(), y.copy()), out=out, **FAST)  # equal content, other objects
    assert again.reused and all(again.reused.values()), again.reused
    assert again.row("tflite_int8") == first.row("tflite_int8")


def test_bench_on_the_shipped_file(built):
    out, b = built
    result = edge_distill.bench(b.shipped, runner="local", threads=1, warmup=2, runs=20, data=out / "bench" / "test_nhwc.npz")
    assert isinstance(result, edge_distill.BenchResult)
    assert 0 < result.p50_ms <= result.p99_ms and result.n_eval == 360
    assert result.accuracy == pytest.approx(b.row("tflite_int8").accuracy, abs=0.01)


def _error(tmp_path, **kwargs) -> EdgeDistillError:
    with pytest.raises(EdgeDistillError) as info:
        edge_distill.build(out=tmp_path / "run", **{**FAST, **kwargs})
    return info.value


def test_bad_arrays_get_the_file_loaders_errors(tmp_path, digits):
    from edge_distill.api.inputs import Arrays, arrays_key

    x, y = digits
    flat = _error(tmp_path, data=(x.reshape(len(x), -1), y))
    assert isinstance(flat, DataError) and "data=(x, y)" in flat.message and "x.reshape(-1, 8, 8)" in flat.hint
    assert "labels" in _error(tmp_path, data=(x, y[:-1])).message
    assert "dtype object" in _error(tmp_path, data=(x.astype(object), y)).message
    assert "out of range" in _error(tmp_path, data=(x, y - 1)).message  # a label of -1
    assert "y has shape" in _error(tmp_path, data=(x, y.reshape(-1, 1))).message
    assert isinstance(_error(tmp_path, data=[1, 2, 3]), DataError)
    test = _error(tmp_path, data=(x, y), test_data=(x[:30], y[:30] + 20))
    assert test.message.startswith("test_data=(x, y) has 30 label(s) out of range")
    assert "the training data's are (1, 8, 8)" in _error(tmp_path, data=(x, y), test_data=(x[:30, :4], y[:30])).message
    assert _error(tmp_path, data=(x, y), unlabelled=x.reshape(len(x), -1)).message.startswith("unlabelled=ndarray: images have shape")
    assert [p.name for p in (tmp_path / "run" / "inputs").glob("*.npz")] == [f"data-{arrays_key(Arrays(x, y))}.npz"]  # only the good data


def test_bad_options_are_refused_by_name(tmp_path, digits):
    typo = _error(tmp_path, data=digits, student_epoch=3)
    assert isinstance(typo, ConfigError) and "'student_epochs'" in typo.hint
    assert "expected int" in _error(tmp_path, data=digits, student_epochs="3").message


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("this teacher is broken")


def test_bad_modules_are_refused_before_anything_trains(tmp_path, digits):
    broken = _error(tmp_path, data=digits, teacher=Raises())
    assert isinstance(broken, TeacherError) and "this teacher is broken" in broken.message and "(4, 1, 8, 8)" in broken.message
    classes = _error(tmp_path, data=digits, teacher=nn.Sequential(nn.Flatten(), nn.Linear(64, 5)))
    assert "(4, 5)" in classes.message and "(4, 10)" in classes.message
    student = _error(tmp_path, data=digits, student=nn.Sequential(nn.Flatten(), nn.Linear(63, 10)))
    assert isinstance(student, ConfigError) and "student module fails" in student.message
    assert isinstance(_error(tmp_path, data=digits, teacher=42), TeacherError)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_torch_dataset_becomes_the_same_arrays(tmp_path, digits):
    from edge_distill.api.inputs import arrays_key, to_arrays

    x, y = digits
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    assert arrays_key(to_arrays(dataset, "data", labelled=True)) == arrays_key(to_arrays((x, y), "data", labelled=True))
    assert to_arrays(TensorDataset(torch.from_numpy(x)), "unlabelled", labelled=False).y is None


def test_module_keys_follow_weights_and_code():
    from edge_distill.api.inputs import module_key

    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    b = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert module_key(a) == module_key(a) != module_key(b)  # other weights
    c = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh())
    c.load_state_dict(a.state_dict())
    assert module_key(c) != module_key(a)  # the same weights, another graph


def _trained_classifier(x, y, width=8, epochs=8):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(width * 16, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for i in range(0, len(xs), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[i : i + 64]), ys[i : i + 64]).backward()
            opt.step()
    return model.eval()


def test_convert_a_trained_module_with_its_hop_ledger(tmp_path, digits):
    x, y = digits
    x = ((x / 16.0 - 0.5) / 0.5).astype(np.float32)[:, None]  # the model's own normalization
    model = _trained_classifier(x[:1400], y[:1400])
    done = edge_distill.convert(model, (x[:200], y[:200]), check=(x[1400:], y[1400:]), out=tmp_path / "conv")
    assert [h.hop for h in done.ledger] == ["torch->onnx", "onnx->tflite_fp32", "tflite_fp32->tflite_int8"]
    assert all(h.passed for h in done.ledger)
    assert done.shipped == done.files["tflite_int8"] and done.shipped.is_file()
    assert done.gate.deploy_variant == "tflite_int8" and done.gate.reference_accuracy > 0.8
    with pytest.raises(ConversionError, match="fails on a batch"):
        edge_distill.convert(model, x[:10, :, :4, :4], out=tmp_path / "bad")


@pytest.mark.slow
def test_a_changed_array_redoes_the_data_stage(built, digits, tmp_path):
    import shutil

    out, _ = built
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    x, y = digits
    x = x.copy()
    x[0, 0, 0] += 1.0  # one pixel of one image
    again = edge_distill.build(profile="rpi4", data=(x, y), out=copy, **FAST)
    assert again.reused["data"] is False and again.reused["teacher"] is False
    assert len(list((copy / "inputs").glob("data-*.npz"))) == 1  # the old arrays' file is gone


@pytest.mark.slow
def test_an_nn_module_teacher_and_student(tmp_path, digits):
    x, y = digits
    teacher = _trained_classifier((x / 16.0).astype(np.float32)[:, None], y, width=32, epochs=6)  # trained on [0, 1] pixels
    student = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    kwargs = dict(profile="rpi4", data=(x, y), teacher=teacher, teacher_input="unit", student=student, out=tmp_path / "run", **FAST)
    b = edge_distill.build(**kwargs)
    assert b.report["teacher"]["input_contract"] == "unit" and b.row("teacher_torch_fp32").accuracy > 0.9
    assert "your own student module Sequential" in b.report["sizing"]["reason"]
    assert b.row("torch_fp32").params == sum(p.numel() for p in student.parameters())
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())  # the user's module is not trained in place
    assert all(edge_distill.build(**kwargs).reused.values())


@pytest.mark.slow
def test_a_student_over_budget_is_built_with_a_warning(tmp_path, digits):
    x, y = digits
    wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 10))  # 300k params: > teacher / 4
    b = edge_distill.build(profile="rpi4", data=(x, y), student=wide, out=tmp_path / "run", **{**FAST, "student_epochs": 2})
    assert b.report["sizing"]["reason"].startswith("WARNING") and "parameters" in b.report["sizing"]["reason"]
    assert b.shipped.is_file()


def test_a_student_module_is_measured_against_the_budgets_not_searched():
    from edge_distill.api import register_student
    from edge_distill.data import prepare
    from edge_distill.models.students import auto_families, family_names
    from edge_distill.profiles import load_profile
    from edge_distill.sizing import choose_student

    spec, _ = prepare("digits", 0, 200)
    small = register_student(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)))
    wide = register_student(nn.Sequential(nn.Flatten(), nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 10)))
    assert small.startswith("user-") and small not in family_names("vision") and small not in auto_families(spec)
    fits = choose_student(spec, load_profile("rpi4"), small, teacher_params=100_000, min_compression=4.0)
    assert fits.cost.params == 5210 and "as given: it fits" in fits.reason
    breaks = choose_student(spec, load_profile("rpi4"), wide, teacher_params=100_000, min_compression=4.0)
    assert breaks.reason.startswith("WARNING") and "parameters 307,210 > budget 25,000" in breaks.reason
