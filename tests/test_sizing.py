import dataclasses
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

import edge_distill.profiles as edge_distill_profiles
from edge_distill.data import DataSpec
from edge_distill.errors import SizingError
from edge_distill.models.students import STUDENT_FAMILIES, StudentConfig, build_student, family_names
from edge_distill.profiles import builtin_names, load_profile
from edge_distill.sizing import choose_student, measure_cost

SPEC = DataSpec("digits", "vision", (1, 8, 8), 10, tuple("0123456789"), 16.0, 0.3, 0.37, "test")
# The mobile families take images of 32 px and more (models/mobile.py); they are sized on small photos.
PHOTO = DataSpec("photos", "vision", (1, 64, 64), 2, ("ok", "defect"), 255.0, 0.5, 0.25, "test")


def spec_for(family: str) -> DataSpec:
    return SPEC if STUDENT_FAMILIES.get(family).candidates(SPEC) else PHOTO


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
    teacher_params = 100_000 if spec_for(family) is SPEC else 2_000_000  # a mobile student needs a photo-sized teacher
    result = choose_student(spec_for(family), prof, family, teacher_params=teacher_params, min_compression=4)
    cost = result.cost
    assert cost.params <= min(prof.budget.max_params, teacher_params // 4)
    assert cost.model_bytes <= prof.budget.model_bytes
    assert cost.arena_bytes <= prof.budget.arena_bytes
    assert cost.latency_ms <= prof.budget.latency_ms
    assert all(c.cost.params <= cost.params for c in result.candidates if c.fits)


@pytest.mark.parametrize("family", family_names("vision"))
def test_candidates_build_and_run(family):
    spec = spec_for(family)
    candidates = STUDENT_FAMILIES.get(family).candidates(spec)
    assert candidates
    for config in candidates:
        out = build_student(config, spec)(torch.zeros(2, *spec.input_shape))
        assert out.shape == (2, spec.num_classes)


def test_nothing_fits_names_the_smallest_candidate_and_the_budget():
    with pytest.raises(SizingError) as err:
        choose_student(SPEC, load_profile("rpi-zero-2w"), "cnn", teacher_params=400, min_compression=4)
    assert "parameters" in err.value.message and "budget 100" in err.value.message


def test_bad_student_config():
    with pytest.raises(Exception, match="width and depth"):
        StudentConfig("cnn", 0, 2)


def test_rate_fit_recovers_each_precisions_own_rates_from_exact_timings():
    from edge_distill.profiles.rates import ProbePoint, fit_rates

    # Per precision: GMAC/s dense, depthwise; us/op; ns/element; ns/conv position.  The two precisions get
    # different overheads, as int8 and fp32 kernels have on a real host, and each must come back as its own.
    truth = {"int8": (12.0, 3.0, 5.0, 2.0, 7.0), "fp32": (20.0, 9.0, 2.5, 0.5, 3.0)}
    shapes = [  # (MACs, of which depthwise, ops, activation elements, conv positions)
        (10_000, 0, 6, 900, 100), (2_000_000, 0, 8, 20_000, 900), (40_000_000, 0, 9, 90_000, 2_000),
        (300_000, 60_000, 12, 50_000, 4_000), (80_000, 20_000, 7, 4_000, 800), (5_000_000, 400_000, 15, 150_000, 9_000),
        (1_000_000, 0, 4, 3_000, 20_000),
    ]

    def exact_ms(macs, dw_macs, ops, elems, pos, prec):
        rate, dw, per_op, per_elem, per_pos = truth[prec]
        return ((macs - dw_macs) / (rate * 1e9) + dw_macs / (dw * 1e9)) * 1e3 + ops * per_op / 1e3 + elems * per_elem / 1e6 + pos * per_pos / 1e6

    points = [
        ProbePoint(f"p{i}", prec, macs, ops, elems, exact_ms(macs, dw_macs, ops, elems, pos, prec), dw_macs=dw_macs, conv_positions=pos)
        for i, (macs, dw_macs, ops, elems, pos) in enumerate(shapes)
        for prec in ("int8", "fp32")
    ]
    fits = fit_rates(points)
    for prec, expected in truth.items():
        got = fits[prec]
        assert (got.gmacs, got.overheads.dw_gmacs, got.overheads.per_op_us, got.overheads.act_ns_per_elem,
                got.overheads.ns_per_position) == pytest.approx(expected, rel=1e-4)


def test_a_fit_without_depthwise_probes_leaves_the_depthwise_rate_unmodelled():
    from edge_distill.profiles.rates import ProbePoint, fit_rates

    points = [ProbePoint(f"p{i}", "int8", macs, 5, 1_000, macs / 10e9 * 1e3 + 0.005) for i, macs in enumerate((1e4, 1e6, 1e7, 1e8))]
    assert fit_rates(points)["int8"].overheads.dw_gmacs == 0.0  # 0 = use the dense rate, never "infinitely fast"


def test_a_precision_override_changes_only_that_precisions_estimate(tmp_path):
    from edge_distill.profiles.rates import ProbePoint, RateMeasurement, profile_toml
    from edge_distill.profiles import Overheads

    host = load_profile("host")
    fp32_terms = Overheads(per_op_us=0.5, act_ns_per_elem=0.1, dw_gmacs=9.0, ns_per_position=3.0)
    throughput = dataclasses.replace(host.throughput, fp32=fp32_terms)
    path = tmp_path / "measured.toml"
    path.write_text(profile_toml(host, RateMeasurement(throughput, (ProbePoint("p", "int8", 1, 1, 1, 1.0, 1.1),), host.threads, "test")))
    measured = load_profile(path)  # the written TOML round-trips through the strict parser
    assert measured.throughput.fp32 == fp32_terms and measured.throughput.int8 is None
    args = (3_000_000, 20, 40_000, "int8", 100_000, 5_000)
    assert measured.estimate_latency_ms(*args) == pytest.approx(host.estimate_latency_ms(*args))
    fp32_args = (*args[:3], "fp32", *args[4:])
    expected = (2_900_000 / (host.throughput.fp32_gmacs * 1e9) + 100_000 / 9e9) * 1e3 + 20 * 0.5e-3 + 40_000 * 0.1e-6 + 5_000 * 3e-6
    assert measured.estimate_latency_ms(*fp32_args) == pytest.approx(expected)


def test_an_override_table_with_an_unknown_key_names_it():
    from edge_distill.errors import ProfileError
    from edge_distill.profiles import parse_profile

    raw = tomllib.loads((Path(edge_distill_profiles.__file__).parent / "host.toml").read_text())
    raw["throughput"]["int8"] = {"per_op_us": 1.0, "act_ns_per_elem": 0.1, "per_op": 3}
    with pytest.raises(ProfileError, match=r"throughput\.int8\.per_op"):
        parse_profile(raw)


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


def test_the_resolution_knob_averages_like_avg_pool_and_stays_fixed_in_training():
    from edge_distill.models.students import AveragingDownsample

    spec = DataSpec("rgb", "vision", (3, 32, 32), 10, tuple("0123456789"), 255.0, 0.5, 0.25, "test")
    model = build_student(StudentConfig("cnn", 8, 2, 16), spec)
    down = model[0]
    assert isinstance(down, AveragingDownsample)
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(down(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    model(x).sum().backward()
    opt.step()
    assert torch.allclose(down(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)  # not trained, not decayed


def test_probe_timing_runs_the_device_agent_in_rounds(tmp_path):
    """`profiles measure` and the cost-model benchmarks time converted models through median_p50s (a real agent process)."""
    import numpy as np

    from edge_distill.convert import convert_student
    from edge_distill.profiles.rates import median_p50s
    from edge_distill.rundir import RunDir

    torch.manual_seed(0)
    model = build_student(StudentConfig("cnn", 4, 2), SPEC).eval()
    x = np.random.default_rng(0).standard_normal((48, *SPEC.input_shape)).astype(np.float32)
    run = RunDir(tmp_path)
    conv = convert_student(model, SPEC.input_shape, x[:32], x[32:], run, int8_min_agreement=0.01, escalate=False, variants=(),
                           layer_analysis=False)
    (p50,) = median_p50s([run.path(conv.file("tflite_int8").path)], threads=1, runs=5, repeats=2)
    assert 0 < p50 < 50
