"""The training loop with an online teacher, augmentation and feature distillation (real training, digits)."""

import numpy as np
import pytest
import torch

from edge_distill.console import Console, set_console
from edge_distill.data import prepare
from edge_distill.distill import KDConfig, TrainConfig, accuracy, train
from edge_distill.errors import ConfigError
from edge_distill.models.students import StudentConfig, build_student
from edge_distill.models.teacher import builtin_teacher


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    set_console(Console(quiet=True))
    spec, s = prepare("digits", 0, 100)
    torch.manual_seed(0)
    teacher = builtin_teacher(spec)
    train(teacher, s.x_train, s.y_train, s.x_val, s.y_val, TrainConfig(epochs=4), KDConfig(loss="ce"), None,
          tmp_path_factory.mktemp("t") / "teacher.ckpt", "teacher")
    return spec, s, teacher


# A 1-pixel shift is a lot on an 8x8 digit, so the augmented run gets a lower bar; the untrained baseline is 0.1.
@pytest.mark.parametrize("loss, shift, bar", [("logit", 1, 0.6), ("fitnet", 0, 0.8), ("attention", 0, 0.8)])
def test_online_teacher_trains_a_useful_student(setup, tmp_path, loss, shift, bar):
    spec, s, teacher = setup
    torch.manual_seed(0)
    student = build_student(StudentConfig("cnn", 16, 2), spec)
    cfg = TrainConfig(epochs=6, augment_shift=shift, background=spec.background)
    result = train(student, s.x_train, s.y_train, s.x_val, s.y_val, cfg, KDConfig(loss=loss, beta=1.0), None,
                   tmp_path / "s.ckpt", loss, teacher=teacher)
    assert accuracy(student, s.x_test, s.y_test) > bar
    if loss != "logit":
        assert all(h.feat > 0 for h in result.history)
    # Resuming a finished run changes nothing and trains no further epoch.
    again = train(student, s.x_train, s.y_train, s.x_val, s.y_val, cfg, KDConfig(loss=loss), None, tmp_path / "s.ckpt", loss, teacher=teacher)
    assert again.history == result.history


def test_augmentation_with_cached_logits_only_is_refused(setup, tmp_path):
    spec, s, _ = setup
    student = build_student(StudentConfig("cnn", 8, 2), spec)
    with pytest.raises(ConfigError, match="online"):
        train(student, s.x_train, s.y_train, s.x_val, s.y_val, TrainConfig(epochs=1, augment_shift=1), KDConfig(loss="logit"),
              torch.zeros(len(s.y_train), 10).numpy(), tmp_path / "x.ckpt", "x")


def test_length_buckets_keep_every_sample_once_and_cut_padding():
    from edge_distill.distill.train import bucket_by_length

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (1_000,), generator=gen)
    order = torch.randperm(1_000, generator=gen)
    bucketed = bucket_by_length(order, lengths, 32, torch.Generator().manual_seed(1), window_batches=8)
    assert sorted(bucketed.tolist()) == list(range(1_000))
    assert torch.equal(bucketed, bucket_by_length(order, lengths, 32, torch.Generator().manual_seed(1), window_batches=8))

    def padded_work(o):  # tokens a trimming model computes: every batch padded to its longest text
        return sum(int(lengths[o[i : i + 32]].max()) * len(o[i : i + 32]) for i in range(0, len(o), 32))

    assert padded_work(bucketed) < 0.75 * padded_work(order)


def test_length_ordered_inference_returns_logits_in_the_callers_order():
    from edge_distill.distill.train import predict_logits

    class Trimming(torch.nn.Module):  # like the HF teachers: cuts each batch to its longest text
        trim, pad_id = True, 0

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 3, padding_idx=0)  # padding adds nothing, as masked models do

        def forward(self, ids):
            ids = ids[:, : max(1, int((ids != 0).sum(1).max()))]
            return self.embed(ids).sum(1)

    torch.manual_seed(0)
    model = Trimming()
    lengths = torch.randint(1, 12, (40,))
    x = torch.zeros(40, 12, dtype=torch.long)
    for row, n in enumerate(lengths):
        x[row, :n] = torch.randint(1, 50, (int(n),))
    expected = model(x).detach().numpy()
    assert np.allclose(predict_logits(model, x.numpy(), batch_size=7), expected, atol=1e-6)


def test_image_inference_runs_channels_last_and_leaves_the_models_layout_as_it_was(setup):
    from edge_distill.distill import predict_logits

    spec, s, teacher = setup
    x = s.x_val[:300]
    with torch.no_grad():
        expected = teacher(torch.from_numpy(x)).numpy()
    conv = [p for p in teacher.parameters() if p.ndim == 4][-1]  # 64 input channels: its layout is unambiguous
    for layout in (torch.contiguous_format, torch.channels_last):
        teacher.to(memory_format=layout)
        np.testing.assert_allclose(predict_logits(teacher, x), expected, rtol=1e-4, atol=1e-4)
        # train() keeps its model channels-last while it validates every epoch; inference must not undo that.
        assert conv.is_contiguous(memory_format=layout)
    teacher.to(memory_format=torch.contiguous_format)


def test_keep_last_returns_the_last_epoch_even_when_validation_prefers_an_earlier_one(setup, tmp_path):
    """For a model trained on its validation split: selection by validation accuracy would be in-sample."""
    spec, s, _ = setup
    wrong_val = (s.y_val + 1) % 10  # labels a learning model gets ever more wrong: validation prefers epoch 1
    results = {}
    for keep_last in (False, True):
        torch.manual_seed(0)
        student = build_student(StudentConfig("cnn", 8, 2), spec)
        cfg = TrainConfig(epochs=3, keep_last=keep_last)
        results[keep_last] = train(student, s.x_train, s.y_train, s.x_val, wrong_val, cfg, KDConfig(loss="ce"), None,
                                   tmp_path / f"k{keep_last}.ckpt", "k")
        last = torch.load(tmp_path / f"k{keep_last}.ckpt", weights_only=True)["model"]
        returned_is_last = all(torch.equal(v, last[k]) for k, v in student.state_dict().items())
        assert returned_is_last == keep_last
    assert results[False].best_epoch < 3  # the control: without keep_last an earlier epoch wins
    assert results[True].best_epoch == 3 and results[True].best_val_accuracy == results[True].history[-1].val_accuracy


def test_training_written_to_a_file_is_one_line_per_epoch_not_a_bar_per_batch(setup, tmp_path, capsys):
    """Under nohup or a pipe a tqdm bar is thousands of carriage-return fragments; there an epoch is one line."""
    spec, s, _ = setup
    x_train, y_train, x_val, y_val = s.x_train[:512], s.y_train[:512], s.x_val, s.y_val
    set_console(Console(quiet=False))  # pytest's captured stderr is not a terminal, as a log file is not
    try:
        model = build_student(StudentConfig("cnn", 8, 2), spec)
        train(model, x_train, y_train, x_val, y_val, TrainConfig(epochs=3, batch_size=32), KDConfig(loss="ce"), None,
              tmp_path / "ck.pt", "student")
    finally:
        set_console(Console(quiet=True))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith(f"student epoch {i + 1}/3: loss") for i, line in enumerate(lines)), lines


def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_is_refused_with_the_fix(setup, tmp_path):
    from edge_distill.distill.devices import resolve_device, select_training_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto is cuda here (checked on GPU runners)")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert "sees no CUDA GPU" in err.value.message and torch.__version__ in err.value.message and "--device" in err.value.hint
    assert select_training_device("auto", 2) == f"cpu (torch {torch.__version__}), 2 threads"
    spec, s, _ = setup
    result = train(build_student(StudentConfig("cnn", 8, 2), spec), s.x_train[:256], s.y_train[:256], s.x_val, s.y_val,
                   TrainConfig(epochs=1), KDConfig(loss="ce"), None, tmp_path / "ck.pt", "student")
    assert result.device == f"cpu (torch {torch.__version__})"


def test_build_with_device_cuda_on_a_cpu_torch_stops_before_training(tmp_path, capsys):
    from edge_distill.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["build", "--profile", "rpi4", "--device", "cuda", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code != 0 and "sees no CUDA GPU" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "teacher").exists()


def test_a_batch_too_large_for_memory_is_trained_in_micro_batches_with_the_same_step(tmp_path, monkeypatch):
    """Large photos: each batch runs in pieces whose gradients add up to the whole batch's, so without BatchNorm the
    weights after an epoch are the ones one piece would give, and every input value of a piece fits the budget."""
    import torch

    import importlib

    train_module = importlib.import_module("edge_distill.distill.train")  # the module, not the function the package exports

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    idx = torch.arange(32)
    assert len(train_module.micro_batches(idx, (3, 16, 16))) == 1  # 24 K values: one piece
    monkeypatch.setattr(train_module, "TRAIN_BATCH_VALUES", 3 * 16 * 16 * 10)
    pieces = train_module.micro_batches(idx, (3, 16, 16))
    assert [len(p) for p in pieces] == [8, 8, 8, 8] and torch.equal(torch.cat(pieces), idx)

    def trained(budget):
        monkeypatch.setattr(train_module, "TRAIN_BATCH_VALUES", budget)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 3))
        train(model, x, y, x[:8], y[:8], TrainConfig(epochs=1, batch_size=32), KDConfig(loss="ce"), None, tmp_path / f"{budget}.ckpt", "t")
        return [p.detach().clone() for p in model.parameters()]

    whole, in_pieces = trained(1 << 30), trained(3 * 16 * 16 * 10)
    for a, b in zip(whole, in_pieces):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
