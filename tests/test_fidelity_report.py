"""The fidelity matrix in the report and on the command line, without a build: a made-up matrix with one divergent
cell drawn into report.md / report.html / the console, and `edge-distill fidelity`'s errors for bad input.
(A real build's matrix is checked in test_report.py, on that module's build.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_distill.bench.fidelity_matrix import FidelityMatrix, MatrixCell, divergence_verdict
from edge_distill.cli import main
from edge_distill.console import Console, set_console
from edge_distill.errors import ConfigError
from edge_distill.options import BuildOptions
from edge_distill.report.html import render_html
from edge_distill.report.writer import _fidelity_matrix_md
from edge_distill.serde import from_jsonable, to_jsonable
from edge_distill.stages.fidelity import FidelityMatrices, FileMatrix, announce, setup_hint

HOST = "host x86_64 (build machine, not the target device)"


def _cell(kernels: str, accuracy: float, agreement: float, divergent: bool = False, runtime: str = "converter") -> MatrixCell:
    version = "ai_edge_litert 2.1.0" if runtime == "converter" else "ai_edge_litert 2.3.0"
    return MatrixCell(runtime, kernels, version, HOST, 360, accuracy, agreement, 0.0 if agreement == 1 else 3.5, 0.02, 1, divergent)


def _matrices(divergent: bool) -> FidelityMatrices:
    cells = (_cell("xnnpack", 0.4, 0.45, True) if divergent else _cell("xnnpack", 0.86, 1.0), _cell("builtin", 0.86, 1.0),
             _cell("reference", 0.86, 1.0), _cell("xnnpack", 0.86, 1.0, runtime="litert==2.3.0"))
    failed = MatrixCell("tflite-runtime==2.14.0", "xnnpack", None, None, 0, None, None, None, None, None, False, "no wheel\nmore")
    m = FidelityMatrix("student_int8.tflite", "test_nhwc.npz", 2, 360, "converter / builtin", 0.99, 0.01,
                       ("converter", "litert==2.3.0", "tflite-runtime==2.14.0"), cells + (failed,))
    return FidelityMatrices((FileMatrix("tflite_int8", "student/student_int8.tflite", True, m),), setup_hint(()))


def test_the_verdict_names_each_divergent_cell_with_both_accuracies():
    m = _matrices(divergent=True).shipped.matrix
    assert divergence_verdict(m) == ("converter LiteRT 2.1.0 XNNPACK diverges from the reference (converter LiteRT 2.1.0 builtin "
                                     "kernels): accuracy 0.40 vs 0.86, top-1 agreement 45.0%. Could not run: "
                                     "tflite-runtime==2.14.0 / xnnpack.")
    assert divergence_verdict(_matrices(divergent=False).shipped.matrix).startswith("Every cell that ran agrees with the reference")


def test_markdown_html_and_console_mark_the_divergent_cell(tmp_path, capsys):
    matrices = _matrices(divergent=True)
    report = {"fidelity_matrix": json.loads(json.dumps(to_jsonable(matrices)))}
    assert from_jsonable(FidelityMatrices, report["fidelity_matrix"]) == matrices
    md = "\n".join(_fidelity_matrix_md(report["fidelity_matrix"]))
    assert "### `student/student_int8.tflite` (tflite_int8, ships)" in md and "**Verdict:** converter LiteRT 2.1.0 XNNPACK diverges" in md
    assert md.count("**DIVERGENT**") == 1
    html = render_html(report)
    rows = [row for row in html.split("<tr>") if 'class="divergent"' in row]
    assert len(rows) == 1 and "0.4000" in rows[0] and "xnnpack" in rows[0]
    assert 'class="fail">converter LiteRT 2.1.0 XNNPACK diverges' in html and "error: no wheel" in html
    set_console(Console(quiet=True, log_path=tmp_path / "log"))
    announce(matrices)
    err = capsys.readouterr().err  # quiet: the table goes only to the log, the warning is always shown
    assert "WARNING: the shipped file student/student_int8.tflite gives other answers" in err and "0.40 vs 0.86" in err
    assert "DIVERGENT" in (tmp_path / "log").read_text()


def test_setup_hint_names_the_commands():
    assert setup_hint(()) is None
    hint = setup_hint(("litert==2.3.0", "qemu-arm64"))
    assert "litert==2.3.0 (the runtime a device installs today), qemu-arm64" in hint
    assert "`edge-distill runner setup litert==2.3.0` and `edge-distill runner setup qemu-arm64`" in hint


@pytest.mark.parametrize("value, words", [("tensorflow", "Unknown runtime 'tensorflow'"), (",", "names no runtime"),
                                          ("converter,litert==2.2.0", "is not supported")])
def test_bad_fidelity_runtimes_fail_before_the_build(value, words):
    with pytest.raises(ConfigError, match=words) as info:
        BuildOptions(fidelity_runtimes=value)
    assert info.value.message.startswith("--fidelity-runtimes")
    assert BuildOptions(fidelity_runtimes=" converter , litert ").fidelity_runtime_list() == ("converter", "litert")
    assert BuildOptions().fidelity_runtime_list() is None


def _inputs(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"never parsed: the npz is checked first")
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 4), np.float32), y=np.zeros(3, np.int64))
    np.savez(tmp_path / "no_y.npz", x=np.zeros((3, 4), np.float32))
    np.savez(tmp_path / "float_y.npz", x=np.zeros((3, 4), np.float32), y=np.zeros(3))
    (tmp_path / "text.npz").write_text("x,y\n")
    (tmp_path / "m.onnx").write_bytes(b"")
    return model


@pytest.mark.parametrize("model, npz, words", [
    ("missing.tflite", "ok.npz", "Model file not found"),
    ("m.tflite", "missing.npz", "Test data file not found"),
    ("m.tflite", "text.npz", "is not a .npz file"),
    ("m.tflite", "no_y.npz", "lacks y (it has: x)"),
    ("m.tflite", "float_y.npz", "y must hold integer class labels"),
    ("m.onnx", "ok.npz", "is not a .tflite file"),
])
def test_fidelity_command_bad_input_is_a_message(tmp_path, capsys, model, npz, words):
    _inputs(tmp_path)
    assert main(["fidelity", str(tmp_path / model), "--npz", str(tmp_path / npz)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_fidelity_command_refuses_unknown_runtimes_and_a_file_no_runtime_can_read(tmp_path, capsys):
    model = _inputs(tmp_path)
    assert main(["fidelity", str(model), "--npz", str(tmp_path / "ok.npz"), "--runtimes", "converter,onnxruntime"]) == 2
    assert "Unknown runtime 'onnxruntime'" in capsys.readouterr().err
    assert main(["fidelity", str(model), "--npz", str(tmp_path / "ok.npz"), "--runtimes", "converter"]) == 2
    err = capsys.readouterr().err
    assert "No cell of the matrix ran; converter / xnnpack:" in err and "not a valid TFLite flatbuffer" in err


def test_runner_setup_help_names_the_device_runtimes(capsys):
    with pytest.raises(SystemExit):
        main(["runner", "setup", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "litert==2.3.0" in text and "tflite-runtime==2.14.0" in text and "$EDGE_DISTILL_RUNTIME_CACHE" in text


def test_a_large_test_split_is_sampled_uniformly_for_the_matrix(tmp_path):
    """A test split sorted by class must not give the matrix its first class only: a seeded uniform sample, named so."""
    import numpy as np

    from edge_distill.rundir import RunDir
    from edge_distill.stages.fidelity import _matrix_samples

    run = RunDir(tmp_path / "run")
    y = np.repeat(np.arange(5), 200)  # sorted by class, like WordNet's test split
    (tmp_path / "run" / "bench").mkdir(parents=True)
    np.savez(tmp_path / "run" / "bench" / "test.npz", x=np.arange(1000, dtype=np.float32)[:, None], y=y)
    sample = _matrix_samples(run, "bench/test.npz", 100)
    assert sample.name == "fidelity_sample_100_of_1000.npz"
    with np.load(sample) as npz:
        assert len(npz["y"]) == 100 and set(npz["y"].tolist()) == set(range(5))
        assert np.array_equal(npz["x"][:, 0].astype(int), np.sort(npz["x"][:, 0]).astype(int))  # rows keep their order
        assert np.array_equal(y[npz["x"][:, 0].astype(int)], npz["y"])  # each x still has its own label
    assert np.array_equal(np.load(_matrix_samples(run, "bench/test.npz", 100))["y"], np.load(sample)["y"])  # seeded
    assert _matrix_samples(run, "bench/test.npz", 1000) == run.path("bench/test.npz")
