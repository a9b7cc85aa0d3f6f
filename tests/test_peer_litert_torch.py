"""The litert-torch peer (``--peer litert-torch``): a real conversion in litert-torch's own venv, scored on LiteRT.

The end-to-end test sets the peer venv up (pip: minutes, hence ``slow``); the fast ones that need it skip, saying
how to set it up, when it is not there yet.  Nothing is mocked: the tiny conv model is trained here on sklearn's
digits, litert-torch converts it, and the device runtime (or this environment's LiteRT) runs the files.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_distill.convert.peer_litert_torch import (PEER_FP32, PEER_INT8, PEER_VERSION, convert_with_litert_torch, names_peer,
                                                    peer_python, setup_peer)
from edge_distill.errors import ConfigError, DataError

torch = pytest.importorskip("torch")

NOT_SET_UP = (f"the litert-torch {PEER_VERSION} peer venv is not set up here: run `edge-distill runner setup litert-torch=={PEER_VERSION}` "
              "(pip, a few minutes) or `pytest -m slow tests/test_peer_litert_torch.py`")


class TinyConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def digits():
    """A TinyConv trained for a few epochs on sklearn's 8x8 digits: (model, x_train, x_test, y_test), NCHW float32."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))  # the file is ordered by writer; mix them
    x, y = ((x[order] / 16.0 - 0.3) / 0.4).astype(np.float32).reshape(-1, 1, 8, 8), y[order]
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains slower on several threads of a busy machine
    model, split = TinyConv(), 1400
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x[:split]), torch.from_numpy(y[:split]).long()
    for _ in range(25):
        for i in range(0, split, 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    torch.set_num_threads(threads)
    return model.eval(), x[:split], x[split:], y[split:]


def _logits(path, x):
    """The file's logits on the device runtime when it is set up (what the ledger uses), else this environment's LiteRT."""
    from edge_distill.bench.device_runtimes import DEFAULT_DEVICE_RUNTIME, device_runtime_python
    from edge_distill.convert.runtimes import run_tflite

    if device_runtime_python(DEFAULT_DEVICE_RUNTIME) is not None:
        from edge_distill.bench.device_scoring import device_logits

        return device_logits(DEFAULT_DEVICE_RUNTIME)[0](path, x, 1)
    return run_tflite(path, x, 1)


def _check_conversion(digits, tmp_path, python):
    from edge_distill.convert.model_info import model_file_info
    from edge_distill.rundir import RunDir

    model, x_train, x_test, y_test = digits
    with torch.no_grad():
        reference = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((reference.argmax(1) == y_test).mean())
    assert torch_acc > 0.85, f"the tiny model did not train ({torch_acc:.3f}): the test would prove nothing"
    result = convert_with_litert_torch(model, (1, 8, 8), x_train[:64], tmp_path / "student", python=python)
    assert not result.errors, result.describe()
    run = RunDir(tmp_path)
    fp32, int8 = (model_file_info(run, v, result.files[v], (1, 8, 8)) for v in (PEER_FP32, PEER_INT8))
    # Channels-last I/O: the peer's files take what our onnx2tf files take.
    assert fp32.input_layout == int8.input_layout == "NHWC" and tuple(int8.input_shape) == (1, 8, 8, 1), (fp32, int8)
    assert "int8" in int8.integer_description.lower(), int8.integer_description
    assert int8.bytes < fp32.bytes, (int8.bytes, fp32.bytes)
    fp32_logits, int8_logits = _logits(result.files[PEER_FP32], x_test), _logits(result.files[PEER_INT8], x_test)
    np.testing.assert_allclose(fp32_logits, reference, atol=1e-3)  # a float conversion changes nothing
    agreement = float((int8_logits.argmax(1) == reference.argmax(1)).mean())
    int8_acc = float((int8_logits.argmax(1) == y_test).mean())
    assert agreement > 0.95 and int8_acc > torch_acc - 0.03, (agreement, int8_acc, torch_acc)
    return result


@pytest.mark.slow
def test_litert_torch_peer_end_to_end(digits, tmp_path):
    """Sets the peer venv up when it is missing (pip), converts a trained model, and scores both files."""
    python = setup_peer(progress=print)
    result = _check_conversion(digits, tmp_path, python)
    assert result.versions["litert-torch"] == PEER_VERSION


def test_litert_torch_peer_converts_a_trained_model(digits, tmp_path):
    python = peer_python()
    if python is None:
        pytest.skip(NOT_SET_UP)
    _check_conversion(digits, tmp_path, python)


def test_a_model_the_peer_cannot_convert_is_reported_not_raised(tmp_path):
    """An operator litert-torch cannot lower: the result carries the converter's error text and no file."""
    python = peer_python()
    if python is None:
        pytest.skip(NOT_SET_UP)

    class Unlowerable(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft2(x).abs().flatten(1)[:, :10]  # complex intermediates: TFLite has no complex64 kernels

    result = convert_with_litert_torch(Unlowerable(), (1, 8, 8), np.zeros((4, 1, 8, 8), np.float32), tmp_path, python=python)
    assert set(result.errors) == {PEER_FP32, PEER_INT8} and not result.files, result
    assert all("fft" in e.lower() for e in result.errors.values()), result.errors  # the error names the operator
    assert "could not be converted" in result.describe()


def test_a_text_student_is_converted_on_its_int32_token_ids(tmp_path):
    """Token ids go in as they do to our text files (int32, no layout change), and the peer's fp32 file answers as torch does."""
    python = peer_python()
    if python is None:
        pytest.skip(NOT_SET_UP)
    from edge_distill.convert.runtimes import run_tflite

    class BagOfWords(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 4)

        def forward(self, ids):
            return self.head(torch.relu(self.embed(ids)).mean(1))

    torch.manual_seed(0)
    model = BagOfWords().eval()
    ids = np.random.default_rng(0).integers(0, 50, (32, 12))
    result = convert_with_litert_torch(model, (12,), ids, tmp_path, python=python)
    assert PEER_FP32 in result.files, result.errors
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(run_tflite(result.files[PEER_FP32], ids.astype(np.int32)), expected, atol=1e-4)
    with pytest.raises(DataError, match="integer token ids"):
        convert_with_litert_torch(model, (12,), ids.astype(np.float32), tmp_path, python=python)


def test_a_peer_that_cannot_be_set_up_leaves_a_ledger_row_for_each_of_its_files(tmp_path, monkeypatch):
    """No peer venv yet and a package index that has no litert-torch (an empty folder, so pip really runs and fails): the
    build goes on, and each peer variant comes back as an ``Unconverted`` that the ledger lists with pip's reason."""
    from edge_distill.convert.peer_litert_torch import peer_model_files
    from edge_distill.rundir import RunDir

    (tmp_path / "empty-index").mkdir()
    monkeypatch.setenv("EDGE_DISTILL_RUNTIME_CACHE", str(tmp_path / "runtimes"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "empty-index").as_uri())
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    files, failed, _ = peer_model_files(RunDir(tmp_path / "run"), TinyConv().eval(), (1, 8, 8), np.zeros((4, 1, 8, 8), np.float32))
    assert files == ()
    assert [f.variant for f in failed] == [PEER_FP32, PEER_INT8]
    assert all("not run" in f.reason and "litert-torch" in f.reason for f in failed), failed


def test_bad_input_is_refused_before_the_peer_runs(tmp_path):
    model = TinyConv().eval()
    with pytest.raises(DataError, match="expected"):
        convert_with_litert_torch(model, (1, 8, 8), np.zeros((4, 1, 9, 9), np.float32), tmp_path, python="/nonexistent")
    with pytest.raises(DataError, match="finite"):
        convert_with_litert_torch(model, (1, 8, 8), np.full((4, 1, 8, 8), np.nan, np.float32), tmp_path, python="/nonexistent")
    with pytest.raises(ConfigError, match="token-id students"):  # neither an image (C, H, W) nor token ids (L,)
        convert_with_litert_torch(model, (4, 16), np.zeros((4, 4, 16), np.float32), tmp_path, python="/nonexistent")


def test_the_peer_is_named_and_versioned():
    assert names_peer("litert-torch") and names_peer("litert_torch==0.10.0") and not names_peer("litert==2.3.0")
    with pytest.raises(ConfigError, match="0.10.0"):
        setup_peer(spec="litert-torch==0.9.0")


def test_peer_option_is_off_by_default_and_checked():
    from edge_distill.options import BuildOptions
    from edge_distill.stages.convert import ConvertSettings

    assert BuildOptions().peer == "none" and ConvertSettings.from_options(BuildOptions(peer="litert-torch")).peer == "litert-torch"
    with pytest.raises(ConfigError, match="--peer"):
        BuildOptions(peer="tflite-micro")
