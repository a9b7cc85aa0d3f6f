import pytest
import torch
import torch.nn.functional as F

from edge_distill.distill import LOSSES, KDConfig
from edge_distill.errors import ConfigError


@pytest.mark.parametrize("name", LOSSES.names())
def test_losses_return_named_parts_and_backprop(name):
    torch.manual_seed(0)
    s = torch.randn(8, 5, requires_grad=True)
    parts = LOSSES.get(name)(s, torch.randint(0, 5, (8,)), torch.randn(8, 5), KDConfig(loss=name))
    assert {"loss", "ce"} <= set(parts)
    parts["loss"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_logit_kd_matches_the_formula():
    torch.manual_seed(1)
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    cfg = KDConfig(temperature=3.0, alpha=0.3)
    parts = LOSSES.get("logit")(s, y, t, cfg)
    p_t = F.softmax(t / 3, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 3, 1))).sum(1).mean() * 9
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * kl
    assert torch.allclose(parts["loss"], expected, atol=1e-5)
    # Identical logits: no KD term at all.
    assert LOSSES.get("logit")(t, y, t, cfg)["kd"].abs() < 1e-6


def test_bad_kd_settings():
    with pytest.raises(ConfigError, match="temperature"):
        KDConfig(temperature=0)
    with pytest.raises(ConfigError, match="alpha"):
        KDConfig(alpha=1.5)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        LOSSES.register("logit")(lambda *a: {})
