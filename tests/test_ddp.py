"""Distributed distillation on real torch.distributed: gloo process groups, torchrun, real crashes.

Fast tests drive the library's DDP path with 2 CPU ranks on the digits data; the end-to-end CLI builds
(``--nproc 2`` and ``torchrun -m edge_distill build``) are marked slow.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edge_distill.cli import main
from edge_distill.data import Splits, prepare
from edge_distill.distill import KDConfig, TrainConfig, accuracy, ddp, predict_logits, train
from edge_distill.distill.worker import ModelRecipe, cache_teacher_logits, train_distributed
from edge_distill.errors import TrainingError
from edge_distill.models.students import StudentConfig, build_student
from edge_distill.models.teacher import builtin_teacher
from edge_distill.rundir import RunDir

STUDENT = StudentConfig("cnn", 16, 2)
CFG = TrainConfig(epochs=10, seed=0)
CE = KDConfig(loss="ce")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A run directory holding the digits splits, as the pipeline's data stage leaves it."""
    run = RunDir(tmp_path_factory.mktemp("ddp") / "run")
    spec, splits = prepare("digits", 0, 200)
    with run.atomic_path("data/splits.npz") as tmp:
        with open(tmp, "wb") as fh:
            splits.save(fh)
    return run, spec, splits


def _fresh_student(spec):
    torch.manual_seed(0)
    return build_student(STUDENT, spec)


@pytest.fixture(scope="module")
def single(digits):
    """The student trained in this process: the reference for the 2-rank runs."""
    run, spec, splits = digits
    model = _fresh_student(spec)
    result = train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, CFG, CE, None, run.path("single.ckpt"), "single")
    return model, result


# ---- sharding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 64, 1258])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_partition_the_rows_and_every_batch(n, size):
    bounds = [ddp.shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no overlap, no gap
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    batch = torch.randperm(n)
    shares = [ddp.batch_share(batch, r, size) for r in range(size)]
    assert sorted(torch.cat(shares).tolist()) == sorted(batch.tolist())


def _torchrun_summary(*failures):
    """torchrun's failure report (its format in torch 2.13), root cause last."""
    def entry(i, rank, code):
        return f"[{i}]:\n  time      : 2026-01-01_00:00:00\n  host      : localhost\n  rank      : {rank} (local_rank: {rank})\n  exitcode  : {code} (pid: 1)\n"
    *others, root = failures
    body = "".join(entry(i + 1, r, c) for i, (r, c) in enumerate(others))
    return f"edge_distill.distill.worker FAILED\n---\nFailures:\n{body}---\nRoot Cause (first observed failure):\n{entry(0, *root)}===\n"


@pytest.mark.parametrize(
    "failures, relayed, expected",
    [
        # torchrun's root cause has one-second resolution: a tie can name the survivor it SIGTERMed.
        ([(1, -9), (0, -15)], [], "rank 1 of 2 was killed by signal 9 (SIGKILL)"),
        ([(0, 1), (1, 1)], ["rank 0 (peer): RuntimeError: gloo: Connection closed by peer", "rank 1: ValueError: bad shape"], "rank 1 of 2: ValueError: bad shape"),
        ([(1, 1), (0, 1)], ["rank 1 (peer): RuntimeError: gloo timeout"], "rank 0 of 2 exited with code 1."),
        ([(0, 1)], ["rank 0 (peer): RuntimeError: gloo timeout"], "rank 0 of 2 lost contact with another rank"),
        ([], [], "torchrun exited with code 1."),
    ],
)
def test_failure_blames_the_rank_that_caused_it(failures, relayed, expected):
    log = _torchrun_summary(*failures) if failures else "no summary"
    assert expected in ddp.explain_failure(log, relayed, 1, "job", 2)


# ---- the loop is exactly data-parallel ---------------------------------------------------------


def _mlp() -> nn.Module:
    # No BatchNorm and no dropout: with them absent, DDP must reproduce single-process training exactly.
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# 1216 = 27·45 + 1: uneven shares in every batch, and a last batch of one sample that leaves rank 1 empty.
N_EXACT, EXACT_CFG = 1216, TrainConfig(epochs=3, batch_size=45, seed=0)


def _rank_main(rank, size, init_file, data_path, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    torch.set_num_threads(1)
    s = Splits.load(data_path)
    model = _mlp()
    # Inside an initialized group, training stays single-process unless asked: rank 0 of a torchrun build
    # trains small models alone (proxy sizing) while the other ranks wait.
    alone = _mlp()
    train(alone, s.x_train[:90], s.y_train[:90], s.x_val, s.y_val, TrainConfig(epochs=1, seed=0), CE, None, out_dir / f"alone{rank}.ckpt", "alone")
    result = train(
        model, s.x_train[:N_EXACT], s.y_train[:N_EXACT], s.x_val, s.y_val, EXACT_CFG, CE, None, out_dir / "mlp.ckpt", "mlp", distributed=True
    )
    torch.save(model.state_dict(), out_dir / f"rank{rank}.pt")
    (out_dir / f"rank{rank}.json").write_text(json.dumps([h.loss for h in result.history]))
    ddp.shutdown()  # the workers' teardown: a barrier, then leave (see its docstring)


def test_two_gloo_ranks_take_the_same_steps_as_one_process(digits, tmp_path):
    run, _, s = digits
    torch.multiprocessing.spawn(_rank_main, args=(2, tmp_path / "pg", run.path("data/splits.npz"), tmp_path), nprocs=2, join=True)
    model = _mlp()
    single = train(model, s.x_train[:N_EXACT], s.y_train[:N_EXACT], s.x_val, s.y_val, EXACT_CFG, CE, None, tmp_path / "single.ckpt", "mlp")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in model.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP keeps the ranks in lockstep
        torch.testing.assert_close(ranks[0][name], value, atol=1e-5, rtol=1e-4)  # and on the single-process path
    losses = json.loads((tmp_path / "rank0.json").read_text())  # all-reduced over both ranks' samples
    assert losses == pytest.approx([h.loss for h in single.history], rel=1e-5)
    assert torch.load(tmp_path / "mlp.ckpt", weights_only=True)["epoch"] == EXACT_CFG.epochs  # rank 0 saved it
    assert (tmp_path / "alone1.ckpt").exists()  # the undistributed call ran (and saved) on rank 1 by itself


# ---- torchrun: training, the logit cache, crashes ---------------------------------------------


def test_teacher_logits_are_computed_once_in_shards(digits):
    run, spec, splits = digits
    torch.manual_seed(1)
    teacher = builtin_teacher(spec).eval()
    with run.atomic_path("teacher/teacher.pt") as tmp:
        torch.save(teacher.state_dict(), tmp)
    cached = cache_teacher_logits(run, ModelRecipe("teacher", spec, "teacher/teacher.pt"), "data/splits.npz", "teacher/logits_train.npy", 2)
    assert cached.rows == len(splits.x_train) == 1258 and cached.rows_per_rank == (629, 629)  # each rank did half
    np.testing.assert_allclose(np.load(run.path("teacher/logits_train.npy")), predict_logits(teacher, splits.x_train), atol=1e-5)
    log = run.path("ddp/teacher_logits/torchrun.log").read_text()
    assert "rank 0 computed rows 0..628" in log and "rank 1 computed" not in log  # rank 1 is silent; rank 0 writes


def test_a_killed_rank_fails_clearly_then_resumes_to_single_process_accuracy(digits, single, monkeypatch):
    run, spec, splits = digits
    recipe = ModelRecipe("student", spec, student=STUDENT)
    monkeypatch.setenv(ddp.FAULT_ENV, "1:3")  # rank 1 SIGKILLs itself when epoch 4 starts
    with pytest.raises(TrainingError) as err:
        train_distributed(run, recipe, _fresh_student(spec), "data/splits.npz", CFG, CE, None, "ddp.ckpt", "ddp", 2)
    assert "rank 1 of 2 was killed by signal 9 (SIGKILL)" in err.value.message
    assert "resumes" in err.value.hint and "torchrun.log" in err.value.hint
    assert torch.load(run.path("ddp.ckpt"), weights_only=True)["epoch"] == 3  # rank 0 saved epochs 1-3
    assert not run.path("ddp/ddp/result.json").exists()

    monkeypatch.delenv(ddp.FAULT_ENV)
    model = _fresh_student(spec)
    result = train_distributed(run, recipe, model, "data/splits.npz", CFG, CE, None, "ddp.ckpt", "ddp", 2)
    log = run.path("ddp/ddp/torchrun.log").read_text()
    assert "ddp: resuming after epoch 3/10" in log and "ddp epoch 10/10" in log and "ddp epoch 3/10" not in log
    assert len(result.history) == CFG.epochs and result.best_val_accuracy == pytest.approx(accuracy(model, splits.x_val, splits.y_val))

    reference, reference_result = single
    acc_single, acc_ddp = accuracy(reference, splits.x_test, splits.y_test), accuracy(model, splits.x_test, splits.y_test)
    assert acc_single > 0.95 and acc_ddp > 0.95
    assert abs(acc_single - acc_ddp) <= 0.02  # within seed noise: 2 points = 7 of the 360 test digits
    assert result.best_val_accuracy == pytest.approx(reference_result.best_val_accuracy, abs=0.03)


@pytest.mark.slow  # the blame logic is covered fast above; this is the relay from a real torchrun child
def test_a_python_error_in_a_rank_is_one_line_not_a_traceback(digits):
    run, _, _ = digits
    with pytest.raises(TrainingError) as err:
        ddp.run_job({"kind": "nonsense", "run_dir": str(run.root), "job": {}}, run.path("ddp/bad"), 2, "bad job", "Fix it.")
    assert "Unknown distributed job kind 'nonsense'" in err.value.message and "Traceback" not in err.value.message


def test_nproc_must_be_positive(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path / "run"), "--nproc", "0"]) != 0
    err = capsys.readouterr().err
    assert "--nproc must be ≥ 1" in err and "Traceback" not in err


# ---- end to end (slow) -------------------------------------------------------------------------

FAST = ["--teacher-epochs", "4", "--student-epochs", "8", "--bench-warmup", "2", "--bench-runs", "20", "--quiet"]


def _report(out):
    return json.loads((out / "report.json").read_text())


def _test_accuracy(report, variant="torch_fp32"):
    return next(r for r in report["ledger"]["rows"] if r["variant"] == variant)["accuracy"]


@pytest.fixture(scope="module")
def cli_builds(tmp_path_factory):
    """The digits demo built in one process and on 2 ranks (--nproc 2)."""
    one, two = tmp_path_factory.mktemp("one") / "run", tmp_path_factory.mktemp("two") / "run"
    assert main(["build", "--profile", "rpi4", "--out", str(one), *FAST]) == 0
    assert main(["build", "--profile", "rpi4", "--out", str(two), *FAST, "--nproc", "2"]) == 0
    return one, two


@pytest.mark.slow
def test_cli_build_with_two_ranks_matches_one_and_reuses_the_logit_cache(cli_builds):
    one, two = cli_builds
    assert abs(_test_accuracy(_report(one)) - _test_accuracy(_report(two))) <= 0.02
    for job in ("teacher", "teacher_logits", "student_nokd", "student_kd"):
        assert (two / "ddp" / job / "torchrun.log").exists(), job
    assert "1258 logits computed in 2 shards [629, 629]" in (two / "build.log").read_text()
    cache = two / "teacher/logits_train.npy"
    mtime = cache.stat().st_mtime_ns
    logs = {p: p.stat().st_mtime_ns for p in (two / "ddp").rglob("torchrun.log")}
    assert main(["build", "--profile", "rpi4", "--out", str(two), *FAST, "--nproc", "2"]) == 0
    assert all(t["reused"] for t in _report(two)["stage_times"])
    assert cache.stat().st_mtime_ns == mtime  # the cache was not computed again...
    assert {p: p.stat().st_mtime_ns for p in (two / "ddp").rglob("torchrun.log")} == logs  # ...and no rank was started


@pytest.mark.slow
def test_cli_build_survives_a_rank_crash_by_resuming(cli_builds, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge_distill", "build", "--profile", "rpi4", "--out", str(out), *FAST, "--nproc", "2"]
    failed = subprocess.run(cmd, env={**os.environ, ddp.FAULT_ENV: "1:2"}, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "Distributed training 'teacher' failed: rank 1 of 2 was killed by signal 9 (SIGKILL)" in failed.stderr
    assert "Traceback" not in failed.stderr and "hint: Rerun the same command" in failed.stderr
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "teacher: resuming after epoch 2/4" in (out / "build.log").read_text()
    # The resumed build took the uninterrupted 2-rank build's steps: the same accuracy for every model.
    _, two = cli_builds
    accuracies = lambda out: {r["variant"]: r["accuracy"] for r in _report(out)["ledger"]["rows"]}  # noqa: E731
    assert accuracies(out) == accuracies(two)


@pytest.mark.slow
def test_torchrun_runs_the_whole_build_with_rank_zero_in_charge(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "edge_distill", "build", "--profile", "rpi4", "--out", str(out), *FAST]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("INT8 student") == 1  # only rank 0 reports
    log = (out / "build.log").read_text()
    assert "rank 0 computed rows 0..628 of 1258" in log and "1258 logits computed in 2 shards [629, 629]" in log
    assert not (out / "ddp" / "teacher" / "torchrun.log").exists()  # jobs ran inside the existing world, none launched
    assert _test_accuracy(_report(out)) > 0.9
