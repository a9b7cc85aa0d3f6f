"""The CLI through its entry point: the embedded demo end to end, resume, and clear errors."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from edge_distill.cli import main
from edge_distill.convert import run_tflite

FAST = ["--teacher-epochs", "4", "--student-epochs", "6", "--bench-warmup", "2", "--bench-runs", "20", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "rpi4"
    assert main(["build", "--profile", "rpi4", "--out", str(out), *FAST]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_demo_ledger_int8_within_one_point_of_fp32(demo):
    out, report = demo
    rows = {r["variant"]: r for r in report["ledger"]["rows"]}
    assert set(rows) >= {"teacher_torch_fp32", "nokd_torch_fp32", "torch_fp32", "onnx_fp32", "tflite_fp32", "tflite_int8"}
    assert rows["tflite_int8"]["accuracy"] >= rows["torch_fp32"]["accuracy"] - 0.01
    assert rows["tflite_fp32"]["agreement"] >= 0.99
    assert rows["teacher_torch_fp32"]["accuracy"] > 0.9 and rows["torch_fp32"]["accuracy"] > 0.85
    assert rows["tflite_int8"]["bytes"] < rows["tflite_fp32"]["bytes"]
    assert report["ledger"]["n_test"] == 360


def test_demo_files_exist_and_the_int8_file_is_fully_integer(demo):
    out, report = demo
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(out / "student/student_int8.tflite"), num_threads=1)
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    assert list(interp.get_input_details()[0]["shape"]) == [1, 8, 8, 1]  # NHWC after onnx2tf
    # Recompute the ledger's INT8 accuracy independently of the verify stage.
    splits = np.load(out / "data/splits.npz")
    acc = float((run_tflite(out / "student/student_int8.tflite", splits["x_test"]).argmax(1) == splits["y_test"]).mean())
    assert acc == pytest.approx(next(r for r in report["ledger"]["rows"] if r["variant"] == "tflite_int8")["accuracy"])
    for name in ("report.md", "manifest.json", "build.log", "teacher/teacher.onnx", "student/student_fp32.tflite"):
        assert (out / name).exists(), name


def test_demo_bench_ran_in_a_separate_process_and_says_where(demo):
    _, report = demo
    bench = report["bench"]
    assert len(bench["results"]) >= 3  # the teacher and every TFLite variant
    for b in bench["results"]:
        assert 0 < b["p50_ms"] <= b["p90_ms"] <= b["p99_ms"]
        assert b["threads"] == min(4, report["bench"]["threads"])
        assert "host" in b["where"] and "not the target device" in b["where"]
        assert b["peak_rss_mb"] > 0
    # The agent's own accuracy on the test set agrees with the ledger.
    int8 = next(b for label, b in zip(bench["labels"], bench["results"]) if "int8" in label)
    assert int8["accuracy"] == pytest.approx(next(r for r in report["ledger"]["rows"] if r["variant"] == "tflite_int8")["accuracy"])


def test_rerun_reuses_every_stage_quickly(demo):
    out, _ = demo
    t0 = time.perf_counter()
    assert main(["build", "--profile", "rpi4", "--out", str(out), *FAST]) == 0
    assert time.perf_counter() - t0 < 10
    report = json.loads((out / "report.json").read_text())
    assert all(t["reused"] for t in report["stage_times"])


def test_changed_kd_settings_redo_only_what_depends_on_them(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    assert main(["build", "--profile", "rpi4", "--out", str(copy), *FAST, "--temperature", "2"]) == 0
    times = {t["stage"]: t["reused"] for t in json.loads((copy / "report.json").read_text())["stage_times"]}
    assert times["data"] and times["teacher"] and times["size"] and times["baseline"]
    assert not times["distill"] and not times["convert"]
    # The KD checkpoint of the old temperature must not be resumed under the new one.
    new_lines = (copy / "build.log").read_text().split("--temperature")[-1] if False else (copy / "build.log").read_text()
    assert new_lines.count("student_kd: resuming") == 0


def _rebuild_a_copy(demo, copy, args):
    """Build again in a copy of the demo's run directory with ``args`` added; the copy's report."""
    subprocess.run(["cp", "-r", str(demo[0]), str(copy)], check=True)
    assert main(["build", "--profile", "rpi4", "--out", str(copy), *FAST, *args]) == 0
    return json.loads((copy / "report.json").read_text())


def test_vgg_teacher_and_view_bank(demo, tmp_path):
    copy = tmp_path / "views"
    report = _rebuild_a_copy(demo, copy, ["--teacher-arch", "vgg", "--teacher-views", "2", "--augment-shift", "1"])
    times = {t["stage"]: t["reused"] for t in report["stage_times"]}
    assert times["data"] and not times["teacher"] and not times["baseline"] and not times["distill"]
    log = (copy / "build.log").read_text()
    assert "built-in vgg teacher" in log and "teacher on 2 views" in log
    # No online teacher: the views and the teacher's outputs on them came from the bank.
    assert "vgg" in report["teacher"]["source"]
    assert report["students"]["kd"]["test_accuracy"] > 0.9 and report["students"]["baseline"]["test_accuracy"] > 0.9


def test_an_ensemble_of_two_flip_averaged_teachers(demo, tmp_path):
    """Mechanics through the whole build (digits are not mirror-symmetric, so --augment-flip costs accuracy here)."""
    from edge_distill.stages.teacher import TeacherResult
    from edge_distill.tasks.vision_teacher import load_vision_teacher
    from edge_distill.rundir import RunDir

    copy = tmp_path / "ensemble"
    report = _rebuild_a_copy(demo, copy, ["--teacher-members", "2", "--teacher-flip-average", "--augment-flip", "--teacher-views", "2"])
    teacher = report["teacher"]
    assert "ensemble of 2, flip-averaged" in teacher["source"] and teacher["members"] == 2 and teacher["flip_average"]
    log = (copy / "build.log").read_text()
    assert "teacher 1/2" in log and "teacher 2/2" in log
    # The saved teacher is the averaged one: reloaded, it scores what the build recorded, and its members differ.
    from edge_distill.data import prepare
    from edge_distill.distill import accuracy

    spec, splits = prepare("digits", 0, 200)  # the build's data: seed 0, 200 calibration images (the defaults)
    record = TeacherResult(**{**teacher, "member_test_accuracy": tuple(teacher["member_test_accuracy"])})
    model = load_vision_teacher(RunDir(copy), record, spec)
    first, second = model.model.members
    assert not torch.equal(first.head.weight, second.head.weight)
    assert accuracy(model, splits.x_test, splits.y_test) == pytest.approx(teacher["test_accuracy"])
    assert len(teacher["member_test_accuracy"]) == 2
    assert report["students"]["kd"]["test_accuracy"] > 0.85


@pytest.mark.parametrize(
    "args, words",
    [
        (["--teacher-views", "3"], ["needs augmentation", "--augment-shift"]),
        (["--teacher-views", "-1"], ["--teacher-views must be ≥ 0"]),
        (["--teacher-arch", "resnet"], ["invalid choice", "vgg"]),
        (["--teacher-members", "0"], ["--teacher-members must be ≥ 1"]),
        (["--init", "prune", "--prune-channel-multiple", "0"], ["--prune-channel-multiple must be ≥ 1", "(any count)"]),
        (["--teacher-flip-average"], ["never learns", "--augment-flip"]),
        (["--teacher-members", "2", "--teacher", "mine.pt"], ["built-in teacher", "--teacher auto"]),
    ],
)
def test_bad_teacher_options(tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) if "--teacher-arch" in args else _no_raise():
        code = main(["build", "--out", str(tmp_path / "run"), *args, *FAST])
        assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err


def _no_raise():
    import contextlib

    return contextlib.nullcontext()


def test_teacher_from_a_torchscript_file(demo, tmp_path):
    from edge_distill.models.teacher import builtin_teacher
    from edge_distill.data import prepare
    from edge_distill.stages.teacher import TeacherResult
    from edge_distill.tasks.vision_teacher import load_vision_teacher
    from edge_distill.rundir import RunDir
    from edge_distill.serde import from_jsonable

    out, report = demo
    spec, _ = prepare("digits", 0, 200)
    teacher = load_vision_teacher(RunDir(out), from_jsonable(TeacherResult, report["teacher"]), spec)
    path = tmp_path / "teacher.pt"
    torch.jit.save(torch.jit.script(teacher), str(path))
    run = tmp_path / "run"
    assert main(["build", "--profile", "rpi4", "--out", str(run), "--teacher", str(path), *FAST]) == 0
    got = json.loads((run / "report.json").read_text())["teacher"]
    assert got["source"] == str(path) and got["test_accuracy"] == pytest.approx(report["teacher"]["test_accuracy"])


@pytest.mark.parametrize(
    "args, words",
    [
        (["--profile", "rpi9"], ["Unknown profile 'rpi9'", "rpi4"]),
        (["--data", "imagenet"], ["Unknown dataset 'imagenet'", "digits"]),
        (["--teacher", "/nonexistent/teacher.pt"], ["neither 'auto' nor an existing file"]),
        (["--student", "resnet"], ["Unknown student family 'resnet'", "cnn"]),
    ],
)
def test_bad_input_gives_a_message_not_a_traceback(tmp_path, capsys, args, words):
    code = main(["build", "--out", str(tmp_path / "run"), *args, *FAST])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    for w in words:
        assert w in err


def test_unreadable_teacher_file(tmp_path, capsys):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    assert main(["build", "--out", str(tmp_path / "run"), "--teacher", str(bad), *FAST]) != 0
    err = capsys.readouterr().err
    assert "not a TorchScript or torch.export archive" in err and "Traceback" not in err


def test_pickled_teacher_is_refused_without_opt_in(tmp_path, capsys):
    path = tmp_path / "teacher.pt"
    torch.save(torch.nn.Linear(64, 10), path)
    assert main(["build", "--out", str(tmp_path / "run"), "--teacher", str(path), *FAST]) != 0
    assert "could execute arbitrary code" in capsys.readouterr().err


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["build", "--out", str(blocker / "run"), *FAST]) != 0
    assert "Cannot write to the run directory" in capsys.readouterr().err


def test_help_is_instant_and_does_not_import_heavy_libraries():
    code = "import sys; from edge_distill.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\nprint(sorted(m for m in ('torch', 'tensorflow', 'onnx2tf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_profiles_commands(capsys):
    assert main(["profiles", "list"]) == 0
    assert "rpi-zero-2w" in capsys.readouterr().out
    assert main(["profiles", "show", "rpi4"]) == 0
    assert json.loads(capsys.readouterr().out)["throughput"]["int8_gmacs"] == 17.6
