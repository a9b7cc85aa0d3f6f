"""The view bank: fixed augmented views with the teacher's outputs, used instead of an online teacher."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from edge_distill.distill import KDConfig, TrainConfig, train
from edge_distill.distill import views as views_module
from edge_distill.distill.views import ViewBank, build_view_bank, draw_views
from edge_distill.errors import ConfigError
from edge_distill.models.cnn import ConvClassifier


def _data(n=96, side=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 1, side, side)).astype(np.float32) * 0.3
    x[np.arange(n), 0, y * 2, :] += 2.0  # class = which row is bright: learnable, and not flip-invariant
    return x, y.astype(np.int64)


_TRAINED: dict[str, ConvClassifier] = {}


def _teacher():
    """A small teacher trained on the task (KD from an untrained one would teach noise)."""
    if "t" not in _TRAINED:
        import tempfile
        from pathlib import Path

        x, y = _data(seed=1)
        torch.manual_seed(0)
        model = ConvClassifier(1, 8, 3, (8, 16))
        with tempfile.TemporaryDirectory() as tmp:
            train(model, x, y, x, y, TrainConfig(epochs=8, batch_size=16, lr=1e-2), KDConfig(loss="ce"), None, Path(tmp) / "t", "t")
        _TRAINED["t"] = model.eval()
    return _TRAINED["t"]


def test_view_zero_is_the_data_and_outputs_match_the_teacher():
    x, _ = _data()
    teacher = _teacher()
    bank = build_view_bank(teacher, x, views=3, shift=1, flip=True, background=0.0, with_maps=True, batch_size=40)
    assert bank.views == 3 and bank.x.shape == (3, *x.shape)
    np.testing.assert_array_equal(bank.x[0], x)
    assert not np.array_equal(bank.x[1], x) and not np.array_equal(bank.x[1], bank.x[2])
    with torch.no_grad():
        for view in range(3):
            np.testing.assert_allclose(bank.logits[view], teacher(torch.from_numpy(bank.x[view])).numpy(), rtol=1e-4, atol=1e-5)
    assert bank.maps is not None and bank.maps.dtype == np.float16 and bank.maps.shape[:3] == (3, len(x), 16)
    again = build_view_bank(teacher, x, views=3, shift=1, flip=True, background=0.0, with_maps=True, batch_size=40)
    np.testing.assert_array_equal(again.x, bank.x)  # seeded: a resumed build trains on the same views


def test_kept_logits_rebuild_the_same_bank_without_the_teacher():
    """A build's second and third students redraw the views from their seed and reuse the teacher's logits on them."""
    x, _ = _data()
    bank = build_view_bank(_teacher(), x, views=3, shift=1, flip=True, background=0.0, batch_size=40)

    class Absent(torch.nn.Module):
        def forward(self, xb):
            raise AssertionError("the teacher ran although its logits were given")

    again = build_view_bank(Absent(), x, views=3, shift=1, flip=True, background=0.0, batch_size=40, logits=bank.logits)
    np.testing.assert_array_equal(again.x, bank.x)
    np.testing.assert_array_equal(again.logits, bank.logits)


def test_teacher_processes_build_the_same_bank(monkeypatch):
    """workers=2 runs the teacher in two one-thread processes; the views and its outputs are the same as here."""
    monkeypatch.setattr(views_module, "PROCESSES_PAY_AFTER_S", 0.0)  # this tiny bank would otherwise stay here
    x, _ = _data()
    teacher = _teacher()
    here = build_view_bank(teacher, x, views=3, shift=1, flip=True, background=0.0, with_maps=True, batch_size=16)
    split = build_view_bank(teacher, x, views=3, shift=1, flip=True, background=0.0, with_maps=True, batch_size=16, workers=2)
    np.testing.assert_array_equal(split.x, here.x)
    np.testing.assert_allclose(split.logits, here.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split.maps.astype(np.float32), here.maps.astype(np.float32), rtol=1e-3, atol=1e-3)
    scripted = build_view_bank(torch.jit.script(teacher), x, views=2, shift=1, flip=True, background=0.0, batch_size=16, workers=2)
    np.testing.assert_allclose(scripted.logits, here.logits[:2], rtol=1e-5, atol=1e-6)  # does not pickle: run here


def test_a_bank_too_small_to_pay_for_processes_stays_here(monkeypatch):
    """Starting workers costs seconds; a bank the teacher makes in well under PROCESSES_PAY_AFTER_S (the test suite's
    builds) is made in this process whatever ``workers`` says."""

    def no_processes(*args, **kwargs):
        raise AssertionError("a bank of a few milliseconds started worker processes")

    monkeypatch.setattr(views_module, "_outputs_in_processes", no_processes)
    x, _ = _data()
    bank = build_view_bank(_teacher(), x, views=2, shift=1, flip=False, background=0.0, batch_size=16, workers=2)
    assert bank.logits.shape[:2] == (2, len(x))
    assert views_module._processes_pay(1.0, 31) and not views_module._processes_pay(1.0, 29)


def _perturbed(model, scale=0.1):
    """A copy of ``model`` that answers differently: a stand-in second ensemble member."""
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn_like(p))
    return other.eval()


@pytest.mark.parametrize("kind", ["flip", "ensemble"])
def test_an_averaged_teacher_banks_its_averaged_logits_and_its_first_networks_feature_map(kind):
    from edge_distill.distill.features import capture_features
    from edge_distill.models.teacher import Ensemble, FlipAveraged

    x, _ = _data()
    first = _teacher()
    torch.manual_seed(0)
    second = _perturbed(first)
    teacher = FlipAveraged(first, x.shape[-1]) if kind == "flip" else Ensemble([first, second])
    bank = build_view_bank(teacher.eval(), x, views=2, shift=1, flip=True, background=0.0, with_maps=True, batch_size=40)
    with torch.no_grad():
        xb = torch.from_numpy(bank.x[1])
        expected = (first(xb) + (first(xb.flip(-1)) if kind == "flip" else second(xb))) / 2
        with capture_features(first) as maps:
            alone = first(xb)
    np.testing.assert_allclose(bank.logits[1], expected.numpy(), rtol=1e-4, atol=1e-5)
    # The classes of _data are not mirror-symmetric and the members differ, so the average is not the first's logits.
    assert not np.allclose(bank.logits[1], alone.numpy(), atol=1e-3)
    np.testing.assert_allclose(bank.maps[1].astype(np.float32), maps[0].numpy(), rtol=1e-2, atol=1e-2)


def test_an_empty_ensemble_is_refused():
    from edge_distill.errors import TeacherError
    from edge_distill.models.teacher import Ensemble

    with pytest.raises(TeacherError, match="at least one member"):
        Ensemble([])


def test_draw_views_depends_only_on_seed_and_epoch():
    x, _ = _data()
    bank = build_view_bank(_teacher(), x, views=4, shift=1, flip=False, background=0.0)
    a, b = draw_views(bank, 0, 3), draw_views(bank, 0, 3)
    assert torch.equal(a, b) and not torch.equal(a, draw_views(bank, 0, 4))
    assert set(a.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("loss", ["ce", "logit", "fitnet", "attention", "hidden"])
def test_training_from_a_bank_learns_without_an_online_teacher(tmp_path, loss):
    x, y = _data()
    teacher = _teacher()
    bank = build_view_bank(teacher, x, views=2, shift=1, flip=False, background=0.0, with_maps=loss in ("fitnet", "attention", "hidden"))
    torch.manual_seed(0)
    student = ConvClassifier(1, 8, 3, (4, 8))
    result = train(student, x, y, x[:32], y[:32], TrainConfig(epochs=6, batch_size=16, lr=1e-2), KDConfig(loss=loss), None,
                   tmp_path / "ckpt", "s", views=bank)
    assert result.best_val_accuracy > 0.6  # chance is 1/3
    if loss in ("fitnet", "attention", "hidden"):
        assert all(h.feat > 0 for h in result.history)


def test_bad_banks_are_refused(tmp_path):
    x, y = _data()
    bank = build_view_bank(_teacher(), x, views=2, shift=1, flip=False, background=0.0)
    student = ConvClassifier(1, 8, 3, (4, 8))
    with pytest.raises(ConfigError, match="already holds the augmented views"):
        train(student, x, y, x, y, TrainConfig(epochs=1, augment_shift=1), KDConfig(), None, tmp_path / "a", "s", views=bank)
    with pytest.raises(ConfigError, match="feature maps"):
        train(student, x, y, x, y, TrainConfig(epochs=1), KDConfig(loss="fitnet"), None, tmp_path / "b", "s", views=bank)
    with pytest.raises(ConfigError, match="training split"):
        train(student, x[:50], y[:50], x, y, TrainConfig(epochs=1), KDConfig(), None, tmp_path / "c", "s", views=bank)
    with pytest.raises(ConfigError, match="disagree"):
        ViewBank(bank.x, bank.logits[:, :10])
    with pytest.raises(ConfigError, match="needs augmentation"):
        build_view_bank(_teacher(), x, views=2, shift=0, flip=False, background=0.0)


def test_a_main_script_without_the_guard_gets_no_bank_workers(monkeypatch, tmp_path):
    """Spawned workers import the main script again: one without the ``__main__`` guard would start its build again in
    each, so the bank stays in this process; a guarded script (the edge-distill command) gets one worker per core."""
    import sys
    import types

    for source, guarded in (("build()\n", False), ('if __name__ == "__main__":\n    build()\n', True)):
        script = tmp_path / f"user_script_{guarded}.py"
        script.write_text(source)
        main = types.ModuleType("__main__")
        main.__file__ = str(script)
        monkeypatch.setitem(sys.modules, "__main__", main)
        assert views_module.main_module_guarded() is guarded
        assert views_module.bank_workers() == (max(1, min(os.cpu_count() or 1, 8)) if guarded else 1)
