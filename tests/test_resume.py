"""Kill a real build (SIGKILL, mid-training) and rerun it: finished stages are reused, training resumes
after the last saved epoch, nothing half-written was recorded as finished, and the resumed student is
bit-identical to one trained without interruption.

The default test kills the build twice (mid-training, then right after the resumed stage finished) so
it never pays for conversion and benchmarks; the slow test lets the resumed build run to the report.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from edge_distill.rundir import RunDir, sha256_file

EPOCHS = 3


def build_cmd(out):
    return [sys.executable, "-m", "edge_distill", "build", "--profile", "rpi4", "--out", str(out), "--teacher-epochs", "1",
            "--student-epochs", str(EPOCHS), "--max-int8-drop", "100", "--bench-warmup", "1", "--bench-runs", "5", "--quiet"]


def stages(out):
    path = out / "manifest.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def run_until(cmd, ready, log, timeout=300):
    """Start a build, poll until ``ready()`` holds, then SIGKILL it (no handler runs, nothing is cleaned up)."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"the build ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the build never got to the point where it should be killed"
            time.sleep(0.02)
        proc.kill()
        proc.wait()


def assert_recorded_stages_are_intact(out):
    run = RunDir(out)
    for name, entry in stages(out).items():
        assert run.finished_stage(name, entry["key"]) is not None, name
        for rel, digest in entry["files"].items():
            assert sha256_file(out / rel) == digest, rel


def uninterrupted_baseline(out, tmp_path):
    """The no-KD student trained in one go, in this process, from the run's own splits and sizing."""
    from edge_distill.data import Splits
    from edge_distill.data.spec import DataSpec
    from edge_distill.distill import KDConfig, TrainConfig, train
    from edge_distill.models.students import build_student
    from edge_distill.serde import from_jsonable
    from edge_distill.sizing import SizingResult

    recorded = stages(out)
    torch.set_num_threads(os.cpu_count() or 1)  # as the pipeline does: the thread count can change float summation order
    sizing = from_jsonable(SizingResult, recorded["size"]["result"])
    spec = from_jsonable(DataSpec, recorded["data"]["result"]["spec"])
    splits = Splits.load(out / "data" / "splits.npz")
    torch.manual_seed(0)  # the pipeline seeds the same way before building a student
    model = build_student(sizing.chosen, spec)
    train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, TrainConfig(epochs=EPOCHS, seed=0),
          KDConfig(loss="ce"), None, tmp_path / "reference.ckpt", "reference")
    return model, splits


def kill_mid_training_then_resume(tmp_path):
    out = tmp_path / "run"
    ckpt = out / "distill" / "student_nokd.ckpt"
    # The baseline's checkpoint appears after its first epoch: the build is then mid-training.
    run_until(build_cmd(out), ckpt.exists, tmp_path / "first.err")
    assert set(stages(out)) == {"data", "teacher", "size"}  # the interrupted stage is not recorded
    assert_recorded_stages_are_intact(out)
    assert not (out / "distill" / "student_nokd.pt").exists()
    saved_epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < EPOCHS
    return out, saved_epoch


def test_killed_build_resumes_from_the_last_stage_and_epoch(tmp_path):
    out, saved_epoch = kill_mid_training_then_resume(tmp_path)

    # Rerun; stop it (SIGKILL again) as soon as the resumed stage is recorded.
    run_until(build_cmd(out), lambda: "baseline" in stages(out), tmp_path / "second.err")
    assert_recorded_stages_are_intact(out)
    log = (out / "build.log").read_text()
    second = log.split("---- ")[-1]  # the second invocation's part of the log (each starts with a header)
    assert log.count("---- ") == 2
    for stage in ("data", "teacher", "size"):
        assert f"[{stage}] reused (inputs unchanged" in second
    assert f"student_nokd: resuming after epoch {saved_epoch}/{EPOCHS}" in second
    assert "teacher epoch" not in second  # no teacher epoch was trained again
    history = stages(out)["baseline"]["result"]["train"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))

    model, _ = uninterrupted_baseline(out, tmp_path)
    resumed = torch.load(out / "distill" / "student_nokd.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resumed[name]), f"{name} differs after resuming"


@pytest.mark.slow
def test_resumed_build_finishes_with_the_same_numbers_as_an_uninterrupted_one(tmp_path):
    from edge_distill.distill import accuracy

    out, saved_epoch = kill_mid_training_then_resume(tmp_path)
    done = subprocess.run(build_cmd(out), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    reused = {t["stage"]: t["reused"] for t in report["stage_times"]}
    assert reused["data"] and reused["teacher"] and reused["size"] and not reused["baseline"]
    model, splits = uninterrupted_baseline(out, tmp_path)
    row = next(r for r in report["ledger"]["rows"] if r["variant"] == "nokd_torch_fp32")
    assert row["accuracy"] == pytest.approx(accuracy(model, splits.x_test, splits.y_test), abs=1e-6)
    assert f"resuming after epoch {saved_epoch}/{EPOCHS}" in (out / "build.log").read_text()


def test_console_logs_everything_it_shows_and_quiet_hides_only_chatter(tmp_path, capsys):
    import warnings

    from edge_distill.console import Console, get_console, set_console

    previous = get_console()
    for quiet in (False, True):
        log = tmp_path / f"quiet-{quiet}.log"
        console = Console(quiet=quiet, log_path=log)
        set_console(console)
        try:
            console.stage("data", "splitting")
            assert list(console.progress(range(3), 3, "epoch 1/1")) == [0, 1, 2]
            console.warn("calibration set is small")
            warnings.warn(f"a library warning (quiet={quiet})")  # a new text each time: Python shows a repeat only once
            console.error("it broke", "do this instead")
            console.result("INT8 student 0.99")
        finally:
            set_console(previous)
        shown = capsys.readouterr()
        text = log.read_text()
        for line in ("[data] splitting", "epoch 1/1: started (3 steps)", "epoch 1/1: done in", "WARNING: calibration set is small",
                     f"a library warning (quiet={quiet})", "error: it broke | hint: do this instead", "INT8 student 0.99"):
            assert line in text, line
        assert ("[data] splitting" in shown.err) is not quiet  # --quiet hides info lines ...
        assert "error: it broke" in shown.err and "hint: do this instead" in shown.err  # ... never errors
        assert "WARNING: calibration set is small" in shown.err and shown.out.strip() == "INT8 student 0.99"
