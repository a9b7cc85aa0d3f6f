import pytest
import torch
from torch import nn

from edge_distill.data import DataSpec
from edge_distill.errors import SizingError
from edge_distill.models.students import STUDENT_FAMILIES, StudentConfig, build_student
from edge_distill.profiles import builtin_names, load_profile
from edge_distill.sizing import choose_student, measure_cost

SPEC = DataSpec("digits", "vision", (1, 8, 8), 10, tuple("0123456789"), 16.0, 0.3, 0.37, "test")


def test_macs_are_counted_from_the_layers():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    cost = measure_cost(model, SPEC, load_profile("rpi4"))
    assert cost.macs == 8 * 8 * 4 * 9 + 4 * 10
    assert cost.params == sum(p.numel() for p in model.parameters())
    # Largest live input+output pair: the conv (64 in + 256 out int8 bytes).
    assert cost.arena_bytes == 64 + 256
    assert cost.act_elems == 256 + 4 + 10  # conv, pool and linear outputs


@pytest.mark.parametrize("family", STUDENT_FAMILIES.names())
@pytest.mark.parametrize("profile", builtin_names())
def test_every_profile_gets_a_student_within_its_budgets(family, profile):
    prof = load_profile(profile)
    result = choose_student(SPEC, prof, family, teacher_params=100_000, min_compression=4)
    cost = result.cost
    assert cost.params <= min(prof.budget.max_params, 25_000)
    assert cost.model_bytes <= prof.budget.model_bytes
    assert cost.arena_bytes <= prof.budget.arena_bytes
    assert cost.latency_ms <= prof.budget.latency_ms
    assert all(c.cost.params <= cost.params for c in result.candidates if c.fits)


@pytest.mark.parametrize("family", STUDENT_FAMILIES.names())
def test_candidates_build_and_run(family):
    for config in STUDENT_FAMILIES.get(family).candidates(SPEC):
        out = build_student(config, SPEC)(torch.zeros(2, 1, 8, 8))
        assert out.shape == (2, 10)


def test_nothing_fits_names_the_smallest_candidate_and_the_budget():
    with pytest.raises(SizingError) as err:
        choose_student(SPEC, load_profile("rpi-zero-2w"), "cnn", teacher_params=400, min_compression=4)
    assert "parameters" in err.value.message and "budget 100" in err.value.message


def test_bad_student_config():
    with pytest.raises(Exception, match="width and depth"):
        StudentConfig("cnn", 0, 2)


def test_rate_fit_recovers_known_rates_from_exact_timings():
    from edge_distill.calibrate import ProbePoint, fit_rates

    int8, fp32, per_op, per_elem = 12.0, 20.0, 5.0, 2.0  # GMAC/s, GMAC/s, us, ns
    shapes = [(10_000, 6, 900), (2_000_000, 8, 20_000), (40_000_000, 9, 90_000), (300_000, 12, 50_000), (80_000, 7, 4_000)]
    points = [
        ProbePoint(f"p{i}", prec, macs, ops, elems,
                   macs / ((int8 if prec == "int8" else fp32) * 1e9) * 1e3 + ops * per_op / 1e3 + elems * per_elem / 1e6)
        for i, (macs, ops, elems) in enumerate(shapes)
        for prec in ("int8", "fp32")
    ]
    got = fit_rates(points)
    assert got == pytest.approx((int8, fp32, per_op, per_elem), rel=1e-6)


def test_smaller_device_gets_a_smaller_or_equal_student():
    # A CIFAR-sized task and a huge teacher, so the device budgets (not the teacher) bound the student.
    spec = DataSpec("cifar-like", "vision", (3, 32, 32), 10, tuple("0123456789"), 255.0, 0.5, 0.25, "test")
    sizes = {}
    for name in ("rpi-zero-2w", "rpi4", "rpi5"):
        result = choose_student(spec, load_profile(name), "dscnn", teacher_params=50_000_000, min_compression=4)
        sizes[name] = (result.cost.params, result.cost.macs)
    assert sizes["rpi-zero-2w"] <= sizes["rpi4"] <= sizes["rpi5"]
    assert sizes["rpi-zero-2w"] < sizes["rpi5"]  # the budgets really bind: the profiles differ


def test_full_resolution_beats_its_half_resolution_twin():
    spec = DataSpec("mnist-like", "vision", (1, 28, 28), 10, tuple("0123456789"), 255.0, 0.3, 0.3, "test")
    result = choose_student(spec, load_profile("host"), "cnn", teacher_params=50_000_000, min_compression=4)
    assert result.chosen.resolution == 0
    halves = [c for c in result.candidates if c.config.resolution == 14]
    assert halves and all(h.cost.macs < 0.5 * next(c.cost.macs for c in result.candidates if c.config == type(h.config)("cnn", h.config.width, h.config.depth)) for h in halves)
