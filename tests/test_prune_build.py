"""--init prune: the build cuts the KD student out of its built-in teacher and distills it, beside the same
architecture distilled from random weights (the digits demo, real training, conversion and ledger)."""

from __future__ import annotations

import json

import pytest
import torch

from edge_distill.cli import main
from edge_distill.errors import ConfigError
from edge_distill.models.students import build_student
from edge_distill.options import BuildOptions
from edge_distill.serde import from_jsonable
from edge_distill.sizing import SizingResult
from edge_distill.tasks import resolve_task

FAST = ["--teacher-epochs", "5", "--student-epochs", "4", "--bench-runs", "20", "--fidelity-runtimes", "converter", "--quiet"]


@pytest.fixture(scope="module")
def pruned_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "run"
    assert main(["build", "--profile", "rpi4", "--init", "prune", "--out", str(out), *FAST]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_the_shipped_student_is_cut_from_the_teacher_and_fits_the_bound(pruned_build):
    out, report = pruned_build
    sizing = from_jsonable(SizingResult, report["sizing"])
    assert sizing.chosen.family == "pruned" and sizing.pruning is not None
    bound = int(report["teacher"]["params"] / report["options"]["min_compression"])
    assert report["students"]["kd"]["params"] <= min(bound, report["profile"]["budget"]["max_params"])
    # The saved starting point rebuilds from the config alone and scores what the prune stage recorded.
    model = build_student(sizing.chosen, _spec(report))
    model.load_state_dict(torch.load(out / sizing.pruning.init_path, weights_only=True))
    assert sum(p.numel() for p in model.parameters()) == report["students"]["kd"]["params"]
    # Cut from a teacher at ~99 %, with fresh BatchNorm statistics: far above the 10 % of chance before any training.
    assert sizing.pruning.val_accuracy_at_cut > 0.6
    assert sizing.pruning.steps and sizing.pruning.steps[-1][0] == report["students"]["kd"]["params"]


def test_the_pruned_student_trains_from_the_cut_weights_and_its_scratch_twin_does_not(pruned_build):
    _, report = pruned_build
    pruned_first = report["students"]["kd"]["train"]["history"][0]["val_accuracy"]
    scratch_first = report["students"]["scratch_kd"]["train"]["history"][0]["val_accuracy"]
    cut = report["sizing"]["pruning"]["val_accuracy_at_cut"]
    # One epoch (20 steps) from the cut weights keeps most of what they knew; from random weights it is far lower.
    assert pruned_first >= cut - 0.15, (pruned_first, cut)
    assert pruned_first > scratch_first, (pruned_first, scratch_first)
    assert report["students"]["scratch_kd"]["label"] == report["students"]["kd"]["label"]  # same architecture


def test_ledger_and_report_show_both_distilled_students(pruned_build):
    out, report = pruned_build
    rows = {row["name"]: row for row in report["ledger"]["rows"]}
    assert {"student (pruned + KD)", "student (KD from scratch)", "student (no KD)"} <= set(rows)
    pr = report["pruning"]
    assert pr["test_accuracy"]["pruned_kd"] == pytest.approx(rows["student (pruned + KD)"]["accuracy"])
    assert pr["test_accuracy"]["scratch_kd"] == pytest.approx(rows["student (KD from scratch)"]["accuracy"])
    assert pr["val_gain_points"] == pytest.approx(100 * (pr["val_accuracy"]["pruned_kd"] - pr["val_accuracy"]["scratch_kd"]), abs=1e-3)
    md = (out / "report.md").read_text()
    assert "## Student cut from the teacher (--init prune)" in md and "KD from scratch" in md
    assert "Student cut from the teacher" in (out / "report.html").read_text()
    assert (out / report["conversion"]["files"][0]["path"]).exists()


def test_a_rerun_reuses_the_prune_and_every_student_stage(pruned_build):
    out, _ = pruned_build
    assert main(["build", "--profile", "rpi4", "--init", "prune", "--out", str(out), *FAST]) == 0
    reused = {t["stage"]: t["reused"] for t in json.loads((out / "report.json").read_text())["stage_times"]}
    for stage in ("prune", "baseline", "distill", "distill-pruned", "convert"):
        assert reused.get(stage) is True, (stage, reused)


@pytest.mark.parametrize("flags, says", [
    ({"teacher": "teacher.pt"}, "--teacher auto"),
    ({"student": "cnn"}, "Leave --student and --search out"),
    ({"search": "proxy"}, "Leave --student and --search out"),
    ({"nproc": 2}, "--nproc 1"),
])
def test_init_prune_refuses_what_it_cannot_prune(flags, says):
    with pytest.raises(ConfigError) as exc:
        BuildOptions(init="prune", **flags)
    assert says in str(exc.value) + (exc.value.hint or "")


def test_text_builds_refuse_init_prune():
    options = BuildOptions(data="wordnet-nouns", init="prune")
    with pytest.raises(ConfigError, match="text students are not pruned"):
        resolve_task(options.task, options.data).check_options(options)


def _spec(report):
    from edge_distill.data.spec import DataSpec

    return from_jsonable(DataSpec, report["data"]["spec"])
