"""The ELPV benchmark's own logic (benchmarks/elpv.py): the split, which earlier builds a resumed run keeps, and how
the KD-versus-fine-tuning target reads its seeds.  The builds it drives are the tool's own and are tested elsewhere."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import elpv  # noqa: E402


def _build(pretrained: float, kd: float) -> dict:
    return {"from_zero_kd_test": 0.80, "pretrained_test": pretrained, "pretrained_kd_test": kd, "shipped_int8_test": kd - 0.002,
            "est_latency_ms": 9.0, "int8_drop_points": 0.2, "stage_seconds": {"distill": 60.0}, "wall_seconds": 60.0}


def _kd_target(pairs: list[tuple[float, float]]) -> dict:
    builds = {f"rpi4-seed{s}": _build(p, k) for s, (p, k) in enumerate(pairs)}
    return elpv.assemble(elpv.FULL, False, {"seconds": 60.0}, builds, 100.0, 1969, 655)["targets"]["kd_over_fine_tuning_points"]


def test_the_split_is_75_25_within_every_class_and_cell_type():
    probs = np.array([0, 1 / 3, 2 / 3, 1] * 100)
    types = np.array(["mono", "poly"] * 200)
    train, test = elpv.split_75_25(probs, types)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 400
    for defect in (False, True):
        for kind in ("mono", "poly"):
            stratum = (probs >= 0.5) == defect
            stratum &= types == kind
            assert np.isin(np.flatnonzero(stratum), train).mean() == 0.75


def test_a_kd_gain_inside_its_error_bar_is_not_claimed():
    noisy = _kd_target([(0.844, 0.863), (0.849, 0.840), (0.834, 0.826)])  # +1.9, -0.9, -0.8: the measured ELPV seeds
    assert noisy["seeds"] == 3 and abs(noisy["value"] - 0.07) < 0.01 and not noisy["met"]
    steady = _kd_target([(0.84, 0.86), (0.84, 0.855), (0.84, 0.865)])
    assert steady["value"] > steady["standard_error"] > 0 and steady["met"]
    assert not _kd_target([(0.84, 0.86), (0.84, 0.86)])["met"], "two seeds are not enough, however large the gain"


def test_kept_builds_name_the_run_that_made_them_not_the_run_that_kept_them(tmp_path):
    path = tmp_path / "elpv.json"
    path.write_text(json.dumps({"run_date": "2026-12-07 20:27 UTC", "builds": {
        "rpi4-seed0": {"pretrained_test": 0.84, "from_earlier_run": "the run of 2026-12-01 10:00 UTC"},
        "rpi4-seed1": {"pretrained_test": 0.85}, "rpi4-seed2": {"pretrained_test": 0.83}}}))
    kept = elpv.earlier_builds(path, made_now={"rpi4-seed2"})
    assert set(kept) == {"rpi4-seed0", "rpi4-seed1"}
    assert kept["rpi4-seed0"]["from_earlier_run"] == "the run of 2026-12-01 10:00 UTC"
    assert kept["rpi4-seed1"]["from_earlier_run"] == "the run of 2026-12-07 20:27 UTC"
    assert elpv.earlier_builds(tmp_path / "absent.json", made_now=set()) == {}
