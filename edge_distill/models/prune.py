"""Structured pruning: a student cut out of the trained teacher instead of trained from scratch.

Whole output channels of the teacher's convolutions are removed, with everything that reads them: the
channel's BatchNorm entries, the matching input channels of the next convolution (or the head's inputs after the
last one).  The built-in teacher (``ConvClassifier``) is a plain chain -- conv, BN, ReLU, max-pool, global pool,
head -- with no residual or concatenating connection, so every channel has exactly one reader and no two layers
must keep the same channels.  The result is again a ``ConvClassifier``, only narrower per convolution, described
by a ``PrunedArch`` (JSON-friendly) so that a cached run rebuilds it with ``build_pruned`` and loads its
``state_dict`` with ``torch.load(weights_only=True)``.  Its conv/BN weights and head are the teacher's surviving
entries; only the BatchNorm running statistics are re-estimated (on the calibration batch).

Whole blocks are not removed: without a skip connection the conv after a removed block would read channels it was
never trained on, so none of its weights would still mean anything.  ``torch-pruning`` (1.6.1, checked to prune
this model under torch 2.13) is not used: it edits the module in place, our chain needs no dependency graph, and
the description that rebuilds the model would still have to be read back out of its result.

Measured on digits (one cnn and one vgg teacher, each cut to 1/4, 1/8 and 1/16 of its parameters; 360 test
images), before any fine-tuning: re-estimating the BatchNorm statistics is what keeps the cut model far above chance
(cnn at 1/4, "l1": 0.26 → 0.89 test accuracy); ``"activation"`` was the best criterion or within 5 points of it
in all six cases, where ``"l1"`` fell up to 37 points behind (vgg at 1/16) and ``"bn"`` up to 20 (cnn at 1/16);
removing the same fraction from every conv beat one global ranking across convs, which emptied vgg's last convs
(0.81 vs 0.90 at 1/4).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError, SizingError, TeacherError
from ..profiles import DeviceProfile
from ..sizing import Cost, check_budgets, measure_cost
from .cnn import ConvClassifier, count_params
from .pruned_arch import POOL, PrunedArch, build_pruned
from .student_config import PRUNED_FAMILY, StudentConfig
from .teacher import Ensemble, FlipAveraged

# How much the network loses without a channel, higher = keep:
# "activation": its mean activation on the calibration batch x the L1 norm of the weights that read it (the next
#   conv's input slice, or the head's column) -- what it actually adds to the next layer; needs ``calib_x``.
# "l1": the L1 norm of its filter with the BatchNorm folded in (the filter the INT8 file holds); the raw filter's
#   norm means little here, as the BatchNorm after it divides any scale away.  Data-free.
# "bn": |BatchNorm scale| (network slimming).  Data-free.
CRITERIA = ("activation", "l1", "bn")

# After the cut every cut conv is brought to a multiple of this many channels.  CPU kernels work on groups of
# channels (oneDNN's blocks of 8-16 on x86, XNNPACK's 4-16 on ARM), so a count between two multiples costs about
# what the next multiple does.  Measured on the 2-core build VM, two runs training at once on one thread each (batch
# 128, 28x28): pruned(19-M-38-39-M-76-76), 99,933 params, took 164-171 ms a step; pruned(16-M-40-40-M-72-72), 94,090
# params, 136-150 ms.  Removing whole groups of 8 at every step instead cut small convs far more than large ones
# (one group is 25 % of 32 channels, 6 % of 128): the fashion-mnist teacher became pruned(8-M-32-40-M-80-72), 0.37
# test accuracy after the cut against 0.70 channel by channel; so the steps stay per channel and only the result
# is rounded.
CHANNEL_MULTIPLE = 8


@dataclass(frozen=True)
class PruneStep:
    params: int  # after this step
    channels: tuple[int, ...]  # per convolution, after this step
    violations: tuple[str, ...]  # the budgets still broken after it; empty on the last step


@dataclass
class PrunedStudent:
    model: ConvClassifier  # eval mode; ``build_pruned(arch, spec)`` + its state_dict rebuilds it exactly
    arch: PrunedArch
    cost: Cost
    max_params: int  # the effective bound it was pruned to: min(profile budget, ``max_params``)
    teacher_params: int  # of the network that was pruned (one member of an ensemble)
    kept: tuple[tuple[int, ...], ...]  # per convolution, the teacher's channel indices that survive, in order
    criterion: str
    recalibrated: bool  # BatchNorm statistics re-estimated on the calibration batch
    source: str  # which network was pruned, e.g. "member 1 of a 3-model ensemble"
    steps: tuple[PruneStep, ...]
    channel_multiple: int = 1  # every cut conv was brought to a multiple of this many channels

    def config(self) -> StudentConfig:
        """The student's description for ``students.build_student``: width/depth are its first conv and conv count."""
        return StudentConfig(PRUNED_FAMILY, self.arch.convs[0], len(self.arch.convs), layers=self.arch.layers, dropout=self.arch.dropout)

    @property
    def compression(self) -> float:
        return self.teacher_params / max(self.cost.params, 1)

    def summary(self) -> str:
        return (f"{self.arch.label()} cut from {self.source}: {self.cost.params:,} params ({self.compression:.1f}x fewer, "
                f"bound {self.max_params:,}) in {len(self.steps)} steps by {self.criterion!r} importance"
                + (f", channels in multiples of {self.channel_multiple}" if self.channel_multiple > 1 else ""))


def arch_of(model: nn.Module) -> PrunedArch:
    """The description of a ``ConvClassifier`` made of plain 3x3 conv blocks; ``TeacherError`` for anything else."""
    if not isinstance(model, ConvClassifier):
        raise TeacherError(
            f"Only the built-in teacher architectures (ConvClassifier) can be pruned, not {type(model).__name__}.",
            "Prune the teacher trained with --teacher auto (--teacher-arch cnn or vgg); a teacher file's layers are unknown.",
        )
    layers: list[int | str] = []
    for i, block in enumerate(model.features):
        if isinstance(block, nn.MaxPool2d) and block.kernel_size in (2, (2, 2)) and block.stride in (2, (2, 2)):
            layers.append(POOL)
        elif _plain_block(block):
            layers.append(block[0].out_channels)
        else:
            raise TeacherError(
                f"Layer features.{i} ({type(block).__name__}) is not a 3x3 conv + BatchNorm + ReLU block or a 2x2 max-pool.",
                "Depthwise-separable (dscnn) blocks are not supported by the pruner; prune a cnn or vgg model.",
            )
    dropout = model.dropout.p if isinstance(model.dropout, nn.Dropout) else 0.0
    return PrunedArch(tuple(layers), dropout)


def _plain_block(block: nn.Module) -> bool:
    if not (isinstance(block, nn.Sequential) and len(block) == 3):
        return False
    conv, bn, relu = block
    return (isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.bias is None and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats and isinstance(relu, nn.ReLU))


def prunable_member(teacher: nn.Module) -> tuple[ConvClassifier, str]:
    """The single network to prune and a note saying which: a flip-averaged teacher's inner model (the student
    answers for the unflipped image alone), an ensemble's first member (the one ``features`` losses read; one
    network cannot be cut out of an average of several)."""
    source, suffix = "the teacher", ""
    if isinstance(teacher, FlipAveraged):
        teacher, suffix = teacher.model, " (without its flip averaging)"
    if isinstance(teacher, Ensemble):
        source, teacher = f"member 1 of a {len(teacher.members)}-model ensemble", teacher.members[0]
    arch_of(teacher)  # refuses anything else, saying why
    return teacher, source + suffix


def _conv_bns(model: ConvClassifier) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    return [(block[0], block[1]) for block in model.features if isinstance(block, nn.Sequential)]


@torch.no_grad()
def cut(member: ConvClassifier, kept: list[torch.Tensor], spec: DataSpec) -> ConvClassifier:
    """``member`` with only the output channels ``kept[i]`` of its i-th conv, and the readers of those channels."""
    arch, convs = arch_of(member), iter(kept)
    layers = tuple(v if v == POOL else len(next(convs)) for v in arch.layers)
    model = build_pruned(PrunedArch(layers, arch.dropout), spec)
    previous = None  # the first conv reads every image channel
    for (src, src_bn), (dst, dst_bn), keep in zip(_conv_bns(member), _conv_bns(model), kept):
        weight = src.weight[keep]
        dst.weight.copy_(weight if previous is None else weight[:, previous])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst_bn, name).copy_(getattr(src_bn, name)[keep])
        dst_bn.num_batches_tracked.copy_(src_bn.num_batches_tracked)
        previous = keep
    model.head.weight.copy_(member.head.weight[:, previous])
    model.head.bias.copy_(member.head.bias)
    return model.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics on ``x`` (exact averages, not momentum), model in eval mode.

    A conv that lost input channels computes a shifted, narrower distribution than the one its BatchNorm
    normalised in the teacher; fresh statistics undo most of the damage before any fine-tuning."""
    x = torch.as_tensor(x, dtype=torch.float32)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches
        bn.train()
    try:
        # Equal chunks, so that no last batch of one image leaves a 1x1 map with a single value per channel.
        for chunk in torch.tensor_split(x, math.ceil(len(x) / batch_size)):
            model(chunk)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()


@torch.no_grad()
def channel_importance(model: ConvClassifier, criterion: str = "activation",
                       calib_x: np.ndarray | torch.Tensor | None = None) -> list[torch.Tensor]:
    """One score per output channel of each conv, higher = keep (``CRITERIA`` says what each measures)."""
    convs = _conv_bns(model)
    if criterion == "activation":
        means = _mean_activations(model, calib_x)
        # Each reader's weights as (out, in, kh, kw): the next conv's, or the head's as a 1x1 conv after the pooling.
        readers = [conv.weight for conv, _ in convs[1:]] + [model.head.weight[:, :, None, None]]
        return [m * w.abs().sum((0, 2, 3)) for m, w in zip(means, readers)]
    scores = []
    for conv, bn in convs:
        scale = bn.weight.abs()
        if criterion == "l1":
            scale = scale * conv.weight.abs().sum((1, 2, 3)) / torch.sqrt(bn.running_var + bn.eps)
        scores.append(scale.clone())
    return scores


def _mean_activations(model: ConvClassifier, calib_x: np.ndarray | torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """Each conv block's mean (post-ReLU) output per channel over ``calib_x``."""
    x = torch.as_tensor(calib_x, dtype=torch.float32)
    blocks = [b for b in model.features if isinstance(b, nn.Sequential)]
    sums = [torch.zeros(b[0].out_channels) for b in blocks]

    def hook(i: int):
        def add(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            sums[i].add_(output.sum((0, 2, 3)) / output[0, 0].numel())  # returns None: the output stays as it is

        return add

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        for chunk in torch.split(x, batch_size):
            model.eval()(chunk)
    finally:
        for h in handles:
            h.remove()
    return [s / len(x) for s in sums]


def prune_to_budget(
    teacher: nn.Module,
    spec: DataSpec,
    profile: DeviceProfile,
    max_params: int | None = None,
    *,
    calib_x: np.ndarray | torch.Tensor | None,
    criterion: str = "activation",
    step_fraction: float = 0.1,
    min_channels: int = 4,
    channel_multiple: int = CHANNEL_MULTIPLE,
    progress: Callable[[str], None] | None = None,
) -> PrunedStudent:
    """Cut channels out of ``teacher`` until it meets ``profile``'s budgets as ``sizing.check_budgets`` judges them,
    with at most ``max_params`` parameters (the build passes teacher params / min compression).

    ``calib_x``: normalized NCHW training images (a few hundred; the calibration split will do).  After every step
    the BatchNorm statistics are re-estimated on them, and ``criterion="activation"`` scores channels with them;
    ``None`` prunes data-free (``"l1"`` or ``"bn"``), which leaves a model near chance until it is fine-tuned.
    Each step removes up to ``step_fraction`` of every conv's remaining channels, its least important first, never
    below ``min_channels``; of those it removes the fewest that meet the budgets, ranking across convs by score
    over that conv's mean score.  ``SizingError`` when every conv is at ``min_channels`` and a budget still breaks.
    Then every cut conv goes to the nearest multiple of ``channel_multiple`` channels (at least one multiple; 1 = as
    cut), restoring the teacher's most important channels or dropping the least, and while a budget breaks, the conv
    whose channels down to its next lower multiple matter least loses them (``_align_channels``).
    """
    _check_arguments(criterion, calib_x, step_fraction, min_channels, channel_multiple)
    member, source = prunable_member(teacher)
    member = copy.deepcopy(member).cpu().eval()  # a teacher trained on a GPU is cut on the CPU, and stays untouched
    reads = (_conv_bns(member)[0][0].in_channels, member.head.out_features)
    if reads != (spec.input_shape[0], spec.num_classes):
        raise ConfigError(f"The teacher reads {reads[0]}-channel images into {reads[1]} classes; dataset {spec.name!r} "
                          f"has {spec.input_shape[0]} channels and {spec.num_classes} classes.",
                          "Pass the DataSpec of the dataset the teacher was trained on.")
    bound = profile.budget.max_params if max_params is None else min(profile.budget.max_params, max_params)
    kept = [torch.arange(conv.out_channels) for conv, _ in _conv_bns(member)]
    floors = [min(min_channels, len(k)) for k in kept]
    steps: list[PruneStep] = []
    model = cut(member, kept, spec)  # a teacher that fits already is returned as it is, statistics included
    violations = check_budgets(measure_cost(model, spec, profile), profile, bound)
    # Scores of the teacher's own channels, for the alignment: which cut channels come back first.
    member_scores = channel_importance(model, criterion, calib_x) if violations and channel_multiple > 1 else None
    while violations:
        removals = _least_important(channel_importance(model, criterion, calib_x), kept, floors, step_fraction)
        if not removals:
            raise SizingError(
                f"Pruning {source} cannot meet profile {profile.name!r}: with every conv down to at most {min_channels} "
                f"channels it still breaks {'; '.join(violations)}.",
                "Raise the profile's budgets (edit a copy of its TOML), lower --min-compression, or allow fewer channels.",
            )
        kept = _fewest_that_fit(member, kept, removals, spec, profile, bound)
        model = _current(member, kept, spec, calib_x)
        violations = check_budgets(measure_cost(model, spec, profile), profile, bound)
        steps.append(PruneStep(count_params(model), tuple(len(k) for k in kept), violations))
        if progress:
            progress(f"prune step {len(steps)}: {steps[-1].params:,} params, channels {steps[-1].channels}"
                     + (f"; still {violations[0]}" if violations else "; fits"))
    if member_scores is not None:
        kept = _align_channels(member, kept, member_scores, spec, profile, bound, calib_x, criterion, channel_multiple, source)
        model = _current(member, kept, spec, calib_x)
        steps.append(PruneStep(count_params(model), tuple(len(k) for k in kept), ()))
        if progress:
            progress(f"aligned to multiples of {channel_multiple}: {steps[-1].params:,} params, channels {steps[-1].channels}; fits")
    return PrunedStudent(
        model, arch_of(model), measure_cost(model, spec, profile), bound, count_params(member),
        tuple(tuple(k.tolist()) for k in kept), criterion, calib_x is not None and bool(steps), source, tuple(steps),
        channel_multiple if member_scores is not None else 1,
    )


def _check_arguments(criterion: str, calib_x, step_fraction: float, min_channels: int, channel_multiple: int) -> None:
    if criterion not in CRITERIA:
        raise ConfigError(f"Unknown pruning criterion {criterion!r}.", f"Use one of: {', '.join(CRITERIA)}.")
    if criterion == "activation" and calib_x is None:
        raise ConfigError("The 'activation' pruning criterion needs calibration images (calib_x).",
                          "Pass a few hundred training images, or criterion='l1' to prune without data.")
    if calib_x is not None and len(calib_x) == 0:
        raise ConfigError("calib_x is empty.", "Pass a few hundred training images, or None to prune without data.")
    if not 0.0 < step_fraction <= 1.0 or min_channels < 1 or channel_multiple < 1:
        raise ConfigError(f"step_fraction must be in (0, 1], min_channels and channel_multiple ≥ 1; got {step_fraction}, "
                          f"{min_channels} and {channel_multiple}.")


def _current(member: ConvClassifier, kept: list[torch.Tensor], spec: DataSpec, calib_x) -> ConvClassifier:
    model = cut(member, kept, spec)
    if calib_x is not None:
        recalibrate_batchnorm(model, calib_x)
    return model


def _least_important(scores: list[torch.Tensor], kept: list[torch.Tensor], floors: list[int],
                     step_fraction: float) -> list[tuple[int, int]]:
    """(conv, position in ``kept[conv]``) of this step's candidates for removal, the least important first.

    The same fraction of every conv: one ranking across convs (tried, on scores over their conv's mean) emptied
    the last convs of vgg.  The ranking only orders the candidates, for the partial last step."""
    chosen = []
    for i, s in enumerate(scores):
        n = min(max(1, round(step_fraction * len(s))), len(s) - floors[i])
        relative = s / s.mean().clamp_min(1e-12)
        chosen += [(float(relative[j]), i, int(j)) for j in torch.argsort(s, stable=True)[:n]]
    return [(i, j) for _, i, j in sorted(chosen)]


def _without(kept: list[torch.Tensor], removals: list[tuple[int, int]]) -> list[torch.Tensor]:
    drop: list[set[int]] = [set() for _ in kept]
    for i, j in removals:
        drop[i].add(j)
    return [k[[j for j in range(len(k)) if j not in d]] for k, d in zip(kept, drop)]


def _fewest_that_fit(member, kept, removals, spec, profile, bound) -> list[torch.Tensor]:
    """``kept`` less the shortest prefix of ``removals`` that meets the budgets, or less all of them if none does.
    Every cost falls as channels go, so the prefixes are searched by bisection."""
    def fits(n: int) -> bool:
        return not check_budgets(measure_cost(cut(member, _without(kept, removals[:n]), spec), spec, profile), profile, bound)

    lo, hi = 1, len(removals)
    if not fits(hi):
        return _without(kept, removals)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return _without(kept, removals[:lo])


def _align_channels(member, kept: list[torch.Tensor], member_scores: list[torch.Tensor], spec, profile, bound, calib_x,
                    criterion: str, multiple: int, source: str) -> list[torch.Tensor]:
    """Every cut conv of ``kept`` at the nearest multiple of ``multiple`` channels (at least one multiple, at most what
    the teacher had): the teacher's most important removed channels come back, or the least important kept ones go,
    by ``member_scores``.  Rounding up can break a budget the cut met; then, one conv at a time, the conv whose
    channels down to its next lower multiple score lowest (over its conv's mean, in the aligned model) loses them,
    until the budgets hold."""
    aligned = [_rounded(k, scores, multiple) for k, scores in zip(kept, member_scores)]
    model = _current(member, aligned, spec, calib_x)
    while violations := check_budgets(measure_cost(model, spec, profile), profile, bound):
        candidates = []
        for i, scores in enumerate(channel_importance(model, criterion, calib_x)):
            drop = len(scores) % multiple or multiple
            if len(scores) - drop >= multiple:
                weakest = torch.argsort(scores, stable=True)[:drop]
                candidates.append((float((scores[weakest] / scores.mean().clamp_min(1e-12)).mean()), i, set(weakest.tolist())))
        if not candidates:
            raise SizingError(
                f"Pruning {source} cannot meet profile {profile.name!r} with channels in multiples of {multiple}: with every "
                f"conv down to {multiple} channels it still breaks {'; '.join(violations)}.",
                "Pass --prune-channel-multiple 1 (any channel count), raise the profile's budgets or lower --min-compression.",
            )
        _, i, drop = min(candidates, key=lambda c: c[:2])
        aligned[i] = aligned[i][[j for j in range(len(aligned[i])) if j not in drop]]
        model = _current(member, aligned, spec, calib_x)
    return aligned


def _rounded(kept: torch.Tensor, scores: torch.Tensor, multiple: int) -> torch.Tensor:
    """``kept`` (teacher channel indices, in order) at the nearest multiple of ``multiple`` channels, by the teacher's
    ``scores``; an uncut conv as it is."""
    full = len(scores)
    target = min(full, max(multiple, multiple * round(len(kept) / multiple)))
    if len(kept) == full or target == len(kept):
        return kept
    have = set(kept.tolist())
    ranked = [int(j) for j in torch.argsort(scores, descending=True, stable=True)]  # the teacher's channels, most important first
    if target < len(kept):
        chosen = [j for j in ranked if j in have][:target]
    else:
        chosen = sorted(have) + [j for j in ranked if j not in have][: target - len(kept)]
    return torch.tensor(sorted(chosen), dtype=kept.dtype)
