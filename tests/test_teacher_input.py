"""A user's teacher file trained on its own preprocessing: the build must feed it that, or stop and say so.

The teacher here is a small residual CNN trained on the digits of the build's own training split, with pixels in
[0, 1] (``p / 16``) — not the build's normalization.  Fed the build's normalized pixels it scores far below itself;
that must be a clear error naming ``--teacher-input``, never a student distilled from a broken teacher.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from edge_distill.cli import main
from edge_distill.data import prepare
from edge_distill.errors import ConfigError, QualityGateError, TeacherError
from edge_distill.models.teacher import load_teacher_file, score_input_contracts
from edge_distill.models.teacher_input import (
    InputCandidate,
    TeacherInput,
    candidate_contracts,
    contract_from_metadata,
    parse_teacher_input,
    size_candidates,
    vet_teacher_input,
)
from edge_distill.verify import Scored, build_ledger, check_against_nokd, choose_shipped_student

FAST = ["--profile", "rpi4", "--teacher-epochs", "1", "--student-epochs", "6", "--bench-warmup", "1", "--bench-runs", "5", "--quiet"]


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class UnitDigitsNet(nn.Module):
    """Trained on pixels in [0, 1]; ``nhwc=True`` makes it read (N, H, W, C) like a Keras-born model."""

    def __init__(self, nhwc: bool = False) -> None:
        super().__init__()
        self.nhwc = nhwc
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), Residual(32), Residual(32),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        return self.net(x)


@pytest.fixture(scope="module")
def digits():
    spec, splits = prepare("digits", 0, 200)
    unit = lambda x: (x * spec.std + spec.mean).astype(np.float32)  # noqa: E731 - the teacher's own preprocessing
    return spec, splits, unit


@pytest.fixture(scope="module")
def teachers(digits, tmp_path_factory):
    """The [0, 1] teacher trained on the build's training split, saved three ways."""
    spec, splits, unit = digits
    torch.manual_seed(0)
    model = UnitDigitsNet()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(unit(splits.x_train)), torch.from_numpy(splits.y_train)
    for _ in range(40):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    d = tmp_path_factory.mktemp("teachers")
    plain, tagged, nhwc = d / "teacher.ts.pt", d / "tagged.ts.pt", d / "nhwc.pt2"
    torch.jit.save(torch.jit.script(model), str(plain))
    torch.jit.save(torch.jit.script(model), str(tagged), _extra_files={"edge_distill.json": json.dumps({"input": "unit"})})
    keras_like = UnitDigitsNet(nhwc=True)
    keras_like.load_state_dict(model.state_dict())
    keras_like.eval()
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(keras_like, (torch.zeros(2, 8, 8, 1),), dynamic_shapes={"x": {0: batch}}), str(nhwc))
    with torch.no_grad():
        own = float((model(torch.from_numpy(unit(splits.x_test))).argmax(1).numpy() == splits.y_test).mean())
    return {"plain": plain, "tagged": tagged, "nhwc": nhwc, "own_test_accuracy": own}


def test_contract_syntax_round_trips_and_bad_values_name_the_syntax():
    for text in ("normalized", "unit", "raw,nhwc", "mean=0.485/0.456/0.406,std=0.229/0.224/0.225", "mean=0.5,std=0.25,nhwc",
                 "unit,size=128", "mean=0.5,std=0.25,nhwc,size=160x128"):
        assert parse_teacher_input(parse_teacher_input(text).text()) == parse_teacher_input(text)
    assert parse_teacher_input("UNIT, NHWC") == TeacherInput("unit", layout="nhwc")
    for bad, words in (("unit,raw", "two scalings"), ("mean=0.5", "both mean= and std="), ("mean=a,std=1", "numbers"),
                       ("bgr", "not understood"), ("mean=0.5,std=0", "> 0"), ("unit,size=big", "size=big")):
        with pytest.raises(ConfigError, match=words) as err:
            parse_teacher_input(bad)
        assert "normalized | unit | raw" in err.value.hint or "std" in err.value.hint or "size=128" in err.value.hint
    assert parse_teacher_input("unit,size=160x128").size == (128, 160)  # width x height, as --image-size


def test_a_teacher_trained_at_another_size_is_fed_that_size_and_the_folder_is_prepared_at_it(digits, tmp_path):
    """A fixed-size teacher (a linear layer over 16x16 pixels) loads only with its size declared; the adapter resizes
    the build's 8x8 images for it, and an image folder built with it is prepared at 16 px without --image-size."""
    from edge_distill.options import BuildOptions
    from edge_distill.tasks.vision import declared_teacher_size

    spec, splits, _ = digits
    torch.manual_seed(0)
    fixed = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, spec.num_classes)).eval())
    path = tmp_path / "t16.pt"
    torch.jit.save(fixed, str(path), _extra_files={"edge_distill.json": json.dumps({"input": "normalized,size=16"})})
    with pytest.raises(TeacherError, match="fails on an input") as err:
        load_teacher_file(path, spec)
    assert "size=128" in err.value.hint
    contract = contract_from_metadata(path)
    assert contract.size == (16, 16)
    model = load_teacher_file(path, spec, contract=contract)
    x = torch.from_numpy(splits.x_val[:4])
    up = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(model(x).detach().numpy(), fixed(up).detach().numpy(), atol=1e-5)
    folder = tmp_path / "photos"
    folder.mkdir()
    assert declared_teacher_size(BuildOptions(data=str(folder), teacher=str(path))) == (16, 16)
    assert declared_teacher_size(BuildOptions(data=str(folder), teacher=str(path), teacher_input="unit,size=32x24")) == (24, 32)
    assert declared_teacher_size(BuildOptions(data="digits", teacher=str(path))) is None  # arrays keep their size


def test_an_exported_teacher_with_a_fixed_input_shape_sets_the_folder_size(tmp_path):
    """A torch.export program keeps its input shape: without --image-size or a declared size, the folder is prepared at
    it; a TorchScript file keeps none, so it says nothing (its size must be declared)."""
    from edge_distill.models.teacher_input import exported_input_size
    from edge_distill.options import BuildOptions
    from edge_distill.tasks.vision import declared_teacher_size

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    exported = tmp_path / "t.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 40, 48),)), str(exported))
    assert exported_input_size(exported) == (40, 48)
    folder = tmp_path / "photos"
    folder.mkdir()
    assert declared_teacher_size(BuildOptions(data=str(folder), teacher=str(exported))) == (40, 48)
    scripted = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 40, 48)), str(scripted))
    assert exported_input_size(scripted) is None
    dynamic = tmp_path / "dynamic.pt2"
    height, width = torch.export.Dim("height", min=8, max=512), torch.export.Dim("width", min=8, max=512)
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 40, 48),), dynamic_shapes=({2: height, 3: width},)), str(dynamic))
    assert exported_input_size(dynamic) is None


def test_the_adapter_feeds_each_contract_exactly_its_pixels(digits):
    spec, splits, unit = digits
    x = splits.x_test[:4]
    seen = []

    class Spy(nn.Module):
        def forward(self, inp):
            seen.append(inp.clone())
            return torch.zeros(len(inp), spec.num_classes)

    def fed(contract: str) -> np.ndarray:
        from edge_distill.models.teacher import adapt_teacher

        adapt_teacher(Spy(), parse_teacher_input(contract), spec.pixel_scale, spec.mean, spec.std)(torch.from_numpy(x))
        return seen[-1].numpy()

    np.testing.assert_allclose(fed("unit"), unit(x), atol=1e-5)
    np.testing.assert_allclose(fed("raw"), unit(x) * 16, atol=1e-4)  # digits pixels are 0..16
    np.testing.assert_allclose(fed("normalized"), x, atol=1e-6)
    np.testing.assert_allclose(fed("mean=0.2,std=0.5,nhwc"), ((unit(x) - 0.2) / 0.5).transpose(0, 2, 3, 1), atol=1e-5)


def test_scores_under_each_scaling_find_the_teachers_input(digits, teachers):
    spec, splits, _ = digits
    contracts = candidate_contracts(1)
    scores = dict(zip((c.text() for c in contracts),
                      score_input_contracts(teachers["plain"], spec, False, contracts, splits.x_val, splits.y_val)))
    assert scores["unit"][0] >= 0.97 and scores["normalized"][0] < scores["unit"][0] - 0.1
    nhwc = dict(zip((c.text() for c in contracts), score_input_contracts(teachers["nhwc"], spec, False, contracts, splits.x_val, splits.y_val)))
    assert nhwc["unit,nhwc"][0] == scores["unit"][0]  # the same weights, reading NHWC
    assert nhwc["unit"][0] is None and nhwc["unit"][1]  # an NCHW reading of an NHWC program fails, with the reason kept
    # The metadata inside the archive is read; a file without it declares nothing.
    assert contract_from_metadata(teachers["tagged"]) == TeacherInput("unit") and contract_from_metadata(teachers["plain"]) is None
    model = load_teacher_file(teachers["tagged"], spec, contract=contract_from_metadata(teachers["tagged"]))
    with torch.no_grad():
        assert float((model(torch.from_numpy(splits.x_val)).argmax(1).numpy() == splits.y_val).mean()) == scores["unit"][0]


def test_vetting_rules():
    good, bad = InputCandidate("unit", "pixels in [0, 1]", 0.99), InputCandidate("normalized", "the build's normalization", 0.60)
    with pytest.raises(TeacherError, match="60.0 %.*99.0 %") as err:
        vet_teacher_input((bad, good), "default", 0.1, "t.pt")
    assert "--teacher-input unit" in err.value.hint and "<- used" in err.value.message
    vet_teacher_input((bad, good), "--teacher-input", 0.1, "t.pt")  # declared: the user's word stands (the baseline check remains)
    with pytest.raises(TeacherError, match="most frequent class"):
        vet_teacher_input((InputCandidate("unit", "u", 0.12), InputCandidate("raw", "r", 0.11)), "--teacher-input", 0.10, "t.pt")
    # Declared scaling, but far better on the images resized: the size is named, even for a declared contract.
    at_128 = InputCandidate("unit,size=128x128", "u at 128", 0.89)
    with pytest.raises(TeacherError, match="trained at another size") as err:
        vet_teacher_input((InputCandidate("unit", "u", 0.726), InputCandidate("raw", "r", 0.70), at_128), "--teacher-input", 0.685, "t.pt")
    assert "--teacher-input unit,size=128x128" in err.value.hint and "--image-size out" in err.value.hint
    sizes = [c.size for c in size_candidates(TeacherInput("unit"), (128, 128))]
    assert (128, 128) not in sizes and (224, 224) in sizes and size_candidates(TeacherInput("unit", size=(96, 96)), (64, 64)) == []


def test_undeclared_unit_teacher_stops_the_build_and_the_flag_fixes_it(teachers, tmp_path, capsys):
    """The case from the issue: without the flag a clear error (nothing ships); with it, the teacher is itself again."""
    out = tmp_path / "run"
    code = main(["build", *FAST, "--teacher", str(teachers["plain"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "--teacher-input unit" in err and "pixels in [0, 1]" in err
    assert not (out / "student").exists() and not (out / "bundle").exists()  # stopped at the teacher stage

    assert main(["build", *FAST, "--teacher", str(teachers["plain"]), "--teacher-input", "unit", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    teacher = report["teacher"]
    assert teacher["input_contract"] == "unit" and teacher["input_source"] == "--teacher-input"
    assert teacher["test_accuracy"] == pytest.approx(teachers["own_test_accuracy"], abs=1e-6) and teacher["test_accuracy"] >= 0.98
    # 6 scalings (3 x 2 layouts) + the contract in use at the 4 usual training sizes
    assert teacher["input_candidates"][0]["contract"] == "unit" and len(teacher["input_candidates"]) == 6 + 4
    assert "Teacher input: pixels in [0, 1]" in (out / "report.md").read_text()
    ledger = {r["variant"]: r for r in report["ledger"]["rows"]}
    assert ledger["teacher_torch_fp32"]["accuracy"] == teacher["test_accuracy"]
    assert report["ledger"]["nokd_drop_points"] is not None


def test_teacher_below_the_no_kd_student_stops_the_build(digits, teachers, tmp_path, capsys):
    """Declared, but wrong (raw pixels for a [0, 1] teacher): it runs, scores under the no-KD student, and the build stops."""
    out = tmp_path / "run"
    code = main(["build", *FAST, "--teacher", str(teachers["plain"]), "--teacher-input", "raw", "--out", str(out)])
    err = capsys.readouterr().err
    if code == 0:
        pytest.fail("a teacher fed raw pixels passed the checks:\n" + err)
    assert ("below the no-KD student" in err or "most frequent class" in err) and "--teacher-input" in err
    assert not (out / "bundle").exists()


def test_a_text_build_refuses_teacher_input():
    from edge_distill.options import BuildOptions

    with pytest.raises(ConfigError, match="teacher file"):
        BuildOptions(teacher_input="unit")  # --teacher auto


def test_kd_that_loses_to_its_baseline_ships_the_baseline_or_fails():
    choice = choose_shipped_student(kd_val=0.90, nokd_val=0.95, tolerance_points=1.0, policy="ship-baseline")
    assert choice.shipped == "nokd" and "5.00 points lost" in choice.note and "no-KD student ships" in choice.note
    assert choose_shipped_student(0.945, 0.95, 1.0, "ship-baseline").shipped == "kd"  # within the tolerance
    with pytest.raises(QualityGateError, match="distillation made the student worse") as err:
        choose_shipped_student(0.90, 0.95, 1.0, "fail")
    assert "--if-kd-loses ship-baseline" in err.value.hint


def test_the_gate_holds_the_shipped_file_to_the_no_kd_student():
    y = np.arange(100) % 4
    onehot = lambda pred: np.eye(4)[pred]  # noqa: E731
    right, wrong = y.copy(), y.copy()
    wrong[:5] = (wrong[:5] + 1) % 4  # 5 points worse
    scored = [Scored("student (no KD)", "nokd_torch_fp32", "torch", onehot(right), None, 1, "f"),
              Scored("student (KD)", "torch_fp32", "torch", onehot(wrong), None, 1, "f"),
              Scored("student int8", "tflite_int8", "litert", onehot(wrong), 10, 1, "i")]
    result = build_ledger(scored, y, "torch_fp32", "tflite_int8", 1.0, baseline_variant="nokd_torch_fp32")
    assert result.gated_drop_points == 0 and result.nokd_drop_points == 5.0 and result.passed  # INT8 itself lost nothing
    warning = check_against_nokd(result, "ship-baseline")  # chosen on validation: said, not re-chosen on the test split
    assert "5.00 accuracy points below the student trained without the teacher" in warning and "--if-kd-loses fail" in warning
    with pytest.raises(QualityGateError, match="5.00 accuracy points below"):
        check_against_nokd(result, "fail")
    level = build_ledger(scored[:1] + [dataclasses.replace(s, logits=onehot(right)) for s in scored[1:]], y, "torch_fp32", "tflite_int8", 1.0,
                         baseline_variant="nokd_torch_fp32")
    assert level.nokd_drop_points == 0 and check_against_nokd(level, "fail") is None
