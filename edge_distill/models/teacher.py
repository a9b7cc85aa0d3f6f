"""Teachers: the built-in CNN trained on the task, or a user's model file.

Accepted teacher sources (``--teacher``):
- ``auto``: train the built-in CNN on the training split (cached in the run directory by input hash);
- a TorchScript file (``torch.jit.save``) or a ``torch.export`` program (``.pt2``).  Neither format
  unpickles arbitrary Python objects, which is why a plain pickled ``nn.Module`` is refused unless the
  user passes ``--trust-pickle``.
A teacher file reads the input it was trained on: ``teacher_input.py`` adapts the build's input to it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError, TeacherError, with_article
from .archs import TEACHER_ARCHS
from .cnn import ConvClassifier
from .teacher_input import TeacherInput


# The built-in teacher architectures (``--teacher-arch``).  ``cnn`` is sized for tiny inputs such as the 8x8
# digits; ``vgg`` is the deeper recipe for 28x28-class images (Fashion-MNIST): a one-conv stem at full
# resolution, then two convs per pooled stage — 4x the parameters of ``cnn`` for ~1.3x its training time.


def builtin_teacher(spec: DataSpec, arch: str = "cnn") -> nn.Module:
    """A built-in teacher; both are plain CNNs that train on 2 CPU cores within minutes (cnn) or ~30 min (vgg)."""
    c, h, _ = spec.input_shape
    if arch == "cnn":
        return ConvClassifier(c, h, spec.num_classes, (32, 64, 128), blocks_per_stage=1, dropout=0.2)
    if arch == "vgg":
        return ConvClassifier(c, h, spec.num_classes, (32, 64, 128), blocks_per_stage=2, first_stage_blocks=1, dropout=0.2)
    raise TeacherError(f"Unknown built-in teacher architecture {arch!r}.", f"Use one of: {', '.join(TEACHER_ARCHS)}.")


class FlipAveraged(nn.Module):
    """A trained image model that answers with the mean of its logits on the image and its mirror image.

    Test-time flip averaging: a cheap ensemble for data whose classes are left-right symmetric (clothes,
    most photos).  Measured on Fashion-MNIST with the 20-epoch ``vgg`` teacher: test 0.9334 alone, 0.9363
    averaged.  For a *teacher* the doubled inference cost is paid once, when its outputs are cached (view
    bank, cached logits), and its soft targets are smoother.  ``features`` is the wrapped model's, so
    feature losses read the map of the first (unflipped) pass.

    The mirror is a Gather of the columns in reverse order, not ``torch.flip``: onnx2tf turned the ONNX
    Slice with step -1 that ``torch.flip`` exports into a TFLite graph that disagreed with ONNX Runtime
    (max|Δ| 4.7 on the logits; the hop check caught it).
    """

    def __init__(self, model: nn.Module, width: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("reversed_columns", torch.arange(width - 1, -1, -1), persistent=False)

    @property
    def features(self) -> nn.Module:
        return self.model.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(x.index_select(-1, self.reversed_columns))) * 0.5


class Ensemble(nn.Module):
    """The mean of the logits of several trained models of the same task: a stronger teacher than any member.

    Members trained from different seeds make partly independent mistakes, so their average is more accurate
    than each (measured on Fashion-MNIST in benchmarks/BENCHMARKS.md).  Like ``FlipAveraged``, the extra cost
    is paid once per cached output, not at every student step.  ``features`` is the first member's, so
    feature losses match one real network's map rather than an average of unrelated ones.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise TeacherError("An ensemble teacher needs at least one member model.", "Pass the trained members.")
        self.members = nn.ModuleList(members)

    @property
    def features(self) -> nn.Module:
        return self.members[0].features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total * (1.0 / len(self.members))


def averaged_teacher(members: list[nn.Module], flip_average: bool, width: int) -> nn.Module:
    """The teacher that answers for ``members``: the one model, or their ``Ensemble``; ``FlipAveraged`` on top
    when ``flip_average``.  Its state_dict is the single member's when there is one member and no mirror."""
    model = members[0] if len(members) == 1 else Ensemble(members)
    return FlipAveraged(model, width) if flip_average else model


def load_teacher_file(path: Path, spec: DataSpec, trust_pickle: bool = False, contract: TeacherInput | None = None) -> nn.Module:
    """Load a teacher file behind the adapter for its input ``contract`` (default: the build's normalized NCHW input)
    and check that it maps one input of ``spec.input_shape`` to ``num_classes`` logits."""
    if not path.exists():
        raise TeacherError(
            f"Teacher file {path} does not exist.",
            "Pass --teacher auto to train the built-in teacher, or the path of a TorchScript (.pt) or torch.export (.pt2) file.",
        )
    model = adapt_teacher(_load(path, trust_pickle), contract or TeacherInput(), spec.pixel_scale, spec.mean, spec.std)
    check_teacher(model, spec, str(path))
    return model


def _load(path: Path, trust_pickle: bool) -> nn.Module:
    if not zipfile.is_zipfile(path):
        raise TeacherError(
            f"Teacher file {path} is not a TorchScript or torch.export archive (it is not even a zip file; corrupted or wrong format).",
            "Save the teacher with torch.jit.save(torch.jit.script(model), path) or torch.export.save(torch.export.export(model, (x,)), path).",
        )
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    try:
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return torch.jit.load(str(path), map_location="cpu").eval()
        if any("serialized_exported_program" in n or n.endswith("models/model.json") for n in names):
            return torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises many types for damaged archives
        raise TeacherError(f"Teacher file {path} could not be loaded: {exc}".split("\n")[0], "Check that the file is complete and was saved by torch.jit.save or torch.export.save.") from None
    # A plain torch.save(model) pickle can run arbitrary code when loaded.
    if not trust_pickle:
        raise TeacherError(
            f"Teacher file {path} is a pickled checkpoint; loading it could execute arbitrary code, so it is refused.",
            "Export the teacher with torch.jit.save or torch.export.save, or pass --trust-pickle if you trust this file.",
        )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TeacherError(f"Teacher file {path} could not be unpickled: {exc}".split("\n")[0], "Check the file.") from None
    if not isinstance(model, nn.Module):
        raise TeacherError(
            f"Teacher file {path} holds {with_article(type(model).__name__)}, not a model (a state_dict has no architecture).",
            "Save the whole model with torch.jit.save or torch.export.save.",
        )
    return model.eval()


def check_teacher(model: nn.Module, spec: DataSpec, origin: str) -> None:
    x = torch.zeros((2, *spec.input_shape))
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise TeacherError(
            f"Teacher {origin} fails on an input of shape (batch, {', '.join(map(str, spec.input_shape))}): {exc}".split("\n")[0],
            f"The teacher must take float32 images of shape {spec.input_shape} (NCHW) for dataset {spec.name!r}; a teacher that "
            "takes NHWC, or was trained at another image size, says so with --teacher-input (e.g. unit,nhwc or unit,size=128).",
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, spec.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TeacherError(
            f"Teacher {origin} returns {shape} for a batch of 2; expected logits of shape (2, {spec.num_classes}).",
            f"Dataset {spec.name!r} has {spec.num_classes} classes; the teacher must output one logit per class.",
        )


def adapt_teacher(model: nn.Module, contract: TeacherInput, pixel_scale: float, mean: float, std: float) -> nn.Module:
    """``model`` behind an ``InputAdapter``: the build's normalized NCHW input in, the teacher's logits out."""
    if contract == TeacherInput():
        return model  # the build's own input: nothing to convert, and the graph stays what it was
    adapter = InputAdapter(model, contract, pixel_scale, mean, std)
    # A TorchScript teacher inside a plain module cannot be traced for ONNX export; scripted whole, it can.
    return torch.jit.script(adapter) if isinstance(model, torch.jit.ScriptModule) else adapter


class InputAdapter(nn.Module):
    """Resizes to the teacher's own image size (when its contract has one), undoes the build's normalization, applies
    the teacher's own, then its layout: one multiply-add per channel.

    The teacher's ``features`` (for FitNets / attention KD) are found through ``self.model`` like any wrapper's.
    """

    def __init__(self, model: nn.Module, contract: TeacherInput, pixel_scale: float, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.nhwc = contract.layout == "nhwc"
        # The teacher's own image size, 0 x 0 = the build's (two ints, so a TorchScript teacher's adapter scripts too).
        self.height, self.width = contract.size or (0, 0)
        # x_build = (p / pixel_scale - mean) / std, so unit = x_build * std + mean; the teacher reads a * unit + b.
        if contract.scale == "normalized":
            a, b = [1.0 / std], [-mean / std]
        elif contract.scale == "unit":
            a, b = [1.0], [0.0]
        elif contract.scale == "raw":
            a, b = [pixel_scale], [0.0]
        else:
            n = max(len(contract.mean), len(contract.std))
            means = contract.mean * n if len(contract.mean) == 1 else contract.mean
            stds = contract.std * n if len(contract.std) == 1 else contract.std
            if len(means) != len(stds):
                raise ConfigError(f"Teacher input mean {contract.mean} and std {contract.std} have different lengths.",
                                  "Give one value, or one per channel for both.")
            a, b = [1.0 / s for s in stds], [-m / s for m, s in zip(means, stds)]
        self.register_buffer("gain", torch.tensor([ai * std for ai in a], dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor([ai * mean + bi for ai, bi in zip(a, b)], dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.height and (x.shape[-2] != self.height or x.shape[-1] != self.width):
            # The teacher sees images at the size it was trained at, whatever size the students compute at.
            x = nn.functional.interpolate(x, size=[self.height, self.width], mode="bilinear", align_corners=False)
        x = x * self.gain + self.offset
        if self.nhwc:
            x = x.permute(0, 2, 3, 1)
        return self.model(x)


def score_input_contracts(path: Path, spec: DataSpec, trust_pickle: bool, contracts: list[TeacherInput], x, y) -> list[tuple[float | None, str]]:
    """The teacher file's accuracy on ``(x, y)`` (the build's normalized NCHW input) under each contract; a contract it
    cannot run on (an NHWC reading of an NCHW model, say) gives ``(None, the error's first line)``."""
    model = _load(path, trust_pickle)
    results = []
    for contract in contracts:
        adapted = adapt_teacher(model, contract, spec.pixel_scale, spec.mean, spec.std)
        try:
            correct = 0
            with torch.no_grad():
                for i in range(0, len(x), 256):
                    out = adapted(torch.from_numpy(x[i : i + 256]))
                    if tuple(out.shape) != (len(x[i : i + 256]), spec.num_classes):
                        raise ValueError(f"returns shape {tuple(out.shape)}")
                    correct += int((out.argmax(1).numpy() == y[i : i + 256]).sum())
            results.append((round(correct / max(len(y), 1), 6), ""))
        except Exception as exc:  # any shape/dtype failure of a foreign model on this reading of the input
            results.append((None, str(exc).split("\n")[0][:200]))
    return results
