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
    for config in STUDENT_FAMILIES.get(family).candidates():
        out = build_student(config, SPEC)(torch.zeros(2, 1, 8, 8))
        assert out.shape == (2, 10)


def test_nothing_fits_names_the_smallest_candidate_and_the_budget():
    with pytest.raises(SizingError) as err:
        choose_student(SPEC, load_profile("rpi-zero-2w"), "cnn", teacher_params=400, min_compression=4)
    assert "parameters" in err.value.message and "budget 100" in err.value.message


def test_bad_student_config():
    with pytest.raises(Exception, match="width and depth"):
        StudentConfig("cnn", 0, 2)
