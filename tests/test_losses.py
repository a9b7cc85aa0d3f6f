import pytest
import torch
import torch.nn.functional as F

from edge_distill.distill import LOSSES, KDConfig
from edge_distill.distill.features import HiddenProjection, HintProjection, attention_map, hidden_loss
from edge_distill.distill.losses import KDBatch
from edge_distill.errors import ConfigError


def _batch(with_maps: bool):
    torch.manual_seed(0)
    s = torch.randn(8, 5, requires_grad=True)
    maps = (torch.randn(8, 16, 4, 4, requires_grad=True), torch.randn(8, 32, 2, 2)) if with_maps else (None, None)
    return KDBatch(s, torch.randint(0, 5, (8,)), torch.randn(8, 5), *maps)


@pytest.mark.parametrize("name", LOSSES.names())
def test_losses_return_named_parts_and_backprop(name):
    spec = LOSSES.get(name)
    batch = _batch(spec.needs_features)
    module = spec.make_module(16, 32) if spec.make_module else None
    parts = spec.fn(batch, KDConfig(loss=name), module)
    assert {"loss", "ce"} <= set(parts)
    if spec.needs_features:
        assert "feat" in parts and parts["feat"] > 0
    parts["loss"].backward()
    assert batch.student.grad is not None and torch.isfinite(batch.student.grad).all()
    if spec.needs_features:
        assert batch.student_map.grad is not None and batch.student_map.grad.abs().sum() > 0


def test_logit_kd_matches_the_formula():
    torch.manual_seed(1)
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    cfg = KDConfig(temperature=3.0, alpha=0.3)
    parts = LOSSES.get("logit").fn(KDBatch(s, y, t), cfg, None)
    p_t = F.softmax(t / 3, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 3, 1))).sum(1).mean() * 9
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * kl
    assert torch.allclose(parts["loss"], expected, atol=1e-5)
    # Identical logits: no KD term at all.
    assert LOSSES.get("logit").fn(KDBatch(t, y, t), cfg, None)["kd"].abs() < 1e-6


def test_attention_transfer_is_zero_for_proportional_maps_and_scale_free():
    f = torch.rand(4, 8, 5, 5)
    assert LOSSES.get("attention").fn(KDBatch(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4, 3), f, 3 * f), KDConfig(), None)["feat"] < 1e-10
    assert torch.allclose(attention_map(f).norm(dim=1), torch.ones(4))


def test_fitnet_projection_maps_student_channels_to_teacher_channels():
    proj = HintProjection(16, 32)
    assert proj(torch.randn(2, 16, 4, 4)).shape == (2, 32, 4, 4)


def test_hidden_state_loss_is_a_cosine_distance_on_pooled_vectors():
    torch.manual_seed(0)
    identity = HiddenProjection(6, 6)
    with torch.no_grad():
        identity.proj.weight.copy_(torch.eye(6))
        identity.proj.bias.zero_()
    s = torch.randn(4, 6)
    assert float(hidden_loss(s, 3 * s, identity)) == pytest.approx(0.0, abs=1e-6)  # scale-free: direction only
    assert float(hidden_loss(s, -s, identity)) == pytest.approx(2.0, abs=1e-6)
    # Image maps are average-pooled first: a (B, C, H, W) map that is constant per channel pools to that constant.
    maps = s[:, :, None, None].expand(4, 6, 3, 3)
    assert float(hidden_loss(maps, s, identity)) == pytest.approx(0.0, abs=1e-6)


def test_bad_kd_settings():
    with pytest.raises(ConfigError, match="temperature"):
        KDConfig(temperature=0)
    with pytest.raises(ConfigError, match="alpha"):
        KDConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="beta"):
        KDConfig(beta=-1)


def test_kd_without_teacher_logits_is_a_clear_error():
    with pytest.raises(ConfigError, match="teacher"):
        LOSSES.get("logit").fn(KDBatch(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)), KDConfig(), None)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        LOSSES.register("logit")(LOSSES.get("logit"))
