import pytest
import torch
from torch import nn

from edge_distill.data import DataSpec
from edge_distill.errors import SizingError
from edge_distill.models.students import STUDENT_FAMILIES, StudentConfig, build_student, family_names
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


@pytest.mark.parametrize("family", family_names("vision"))
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


@pytest.mark.parametrize("family", family_names("vision"))
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

    # GMAC/s dense int8, dense fp32, depthwise; us/op; ns/element; ns/conv position
    int8, fp32, dw, per_op, per_elem, per_pos = 12.0, 20.0, 3.0, 5.0, 2.0, 7.0
    shapes = [  # (MACs, of which depthwise, ops, activation elements, conv positions)
        (10_000, 0, 6, 900, 100), (2_000_000, 0, 8, 20_000, 900), (40_000_000, 0, 9, 90_000, 2_000),
        (300_000, 60_000, 12, 50_000, 4_000), (80_000, 20_000, 7, 4_000, 800), (5_000_000, 400_000, 15, 150_000, 9_000),
        (1_000_000, 0, 4, 3_000, 20_000),
    ]

    def exact_ms(macs, dw_macs, ops, elems, pos, prec):
        rate = int8 if prec == "int8" else fp32
        return ((macs - dw_macs) / (rate * 1e9) + dw_macs / (dw * 1e9)) * 1e3 + ops * per_op / 1e3 + elems * per_elem / 1e6 + pos * per_pos / 1e6

    points = [
        ProbePoint(f"p{i}", prec, macs, ops, elems, exact_ms(macs, dw_macs, ops, elems, pos, prec), dw_macs=dw_macs, conv_positions=pos)
        for i, (macs, dw_macs, ops, elems, pos) in enumerate(shapes)
        for prec in ("int8", "fp32")
    ]
    got = fit_rates(points)
    assert (got.int8_gmacs, got.fp32_gmacs, got.dw_gmacs, got.per_op_us, got.act_ns_per_elem, got.ns_per_position) == pytest.approx(
        (int8, fp32, dw, per_op, per_elem, per_pos), rel=1e-4)


def test_a_fit_without_depthwise_probes_leaves_the_depthwise_rate_unmodelled():
    from edge_distill.calibrate import ProbePoint, fit_rates

    points = [ProbePoint(f"p{i}", "int8", macs, 5, 1_000, macs / 10e9 * 1e3 + 0.005) for i, macs in enumerate((1e4, 1e6, 1e7, 1e8))]
    assert fit_rates(points).dw_gmacs == 0.0  # 0 = use the dense rate, never "infinitely fast"


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
