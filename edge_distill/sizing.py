"""The size stage: a device profile + a dataset → the student configuration that fits the device.

For every candidate of the student family we measure, from the model itself rather than by guess:
parameters, INT8 file bytes, multiply-accumulates (counted by running one input through the model's
layers), the peak activation arena (largest pair of live input/output tensors of any operator — the
model is a chain, so that is the largest live set), and a latency estimate from the profile's rates.
The winner is the highest-capacity candidate that fits every budget (most parameters, then most MACs,
so a full-resolution candidate beats its half-resolution twin).  With ``search="proxy"`` the top-k
fitting candidates are instead trained briefly and the best on the validation split wins.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data.spec import DataSpec
from .errors import SizingError
from .models.resize import BilinearResize
from .models.students import STUDENT_FAMILIES, StudentConfig, auto_families, build_student
from .profiles import DeviceProfile

# What a .tflite file costs beyond one byte per int8 weight: int32 biases, per-channel scales, the
# flatbuffer's tensor and operator tables.  Measured on converted students: about 2.5 kB + 8 B per channel.
TFLITE_FIXED_BYTES = 2_500
BYTES_PER_CHANNEL = 8


@dataclass(frozen=True)
class Cost:
    params: int
    model_bytes: int
    macs: int
    arena_bytes: int
    n_ops: int
    act_elems: int  # activation elements written by all operators (memory traffic)
    latency_ms: float  # estimated on the profile, not measured
    dw_macs: int = 0  # the part of ``macs`` done by depthwise convolutions
    conv_positions: int = 0  # output spatial positions summed over the convolutions


@dataclass(frozen=True)
class Candidate:
    config: StudentConfig
    cost: Cost
    fits: bool
    violations: tuple[str, ...]  # one line per broken budget, with the numbers


@dataclass(frozen=True)
class PruneRecord:
    """--init prune: how the student was cut out of the teacher (models/prune.py)."""

    source: str  # which network was cut, e.g. "member 1 of a 2-model ensemble"
    teacher_params: int  # of that network
    criterion: str
    steps: tuple[tuple[int, tuple[int, ...]], ...]  # (params, channels per conv) after each step
    init_path: str  # the cut weights in the run directory, the KD student's starting point
    val_accuracy_at_cut: float  # before any training: BatchNorm statistics re-estimated, nothing else


@dataclass(frozen=True)
class SizingResult:
    chosen: StudentConfig
    cost: Cost
    candidates: tuple[Candidate, ...]
    reason: str
    max_params: int  # the effective parameter bound: min(profile budget, teacher params / compression)
    proxy: tuple["ProxyTrial", ...] = ()  # brief training runs, when search="proxy"
    pruning: PruneRecord | None = None  # --init prune: the chosen student was cut out of the teacher


@dataclass(frozen=True)
class ProxyTrial:
    config: StudentConfig
    params: int
    epochs: int
    val_accuracy: float
    seconds: float


_COUNTED = (nn.Conv2d, nn.Conv1d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
# Activations TFLite runs as operators of their own (ReLU and ReLU6 fuse into the convolution before them), and the
# in-model resize of the mobile families: each is one op that writes its output.
_ELEMENTWISE = (nn.Hardswish, nn.Hardsigmoid, BilinearResize)


def example_input(model: nn.Module, spec: DataSpec) -> torch.Tensor:
    """One all-zeros input as the model reads it: token ids (int32, a vocabulary) at a text student's own length,
    else floats of the spec's shape."""
    shape = (1, *getattr(model, "input_shape", spec.input_shape))
    return torch.zeros(shape, dtype=torch.int32) if spec.vocab_size else torch.zeros(shape)


def measure_cost(model: nn.Module, spec: DataSpec, profile: DeviceProfile) -> Cost:
    """Count the model operator by operator, as TFLite will run it, by running one input through it.

    The arena is the largest live set: an operator's input and output, plus every tensor a composite block keeps
    alive while its inner operators run (a residual block's input, waiting for the ADD; a squeeze-and-excitation's
    input, waiting for the MUL; models/mobile.py marks them with ``elementwise_op``).
    """
    macs, arena, n_ops, channels, act_elems, dw_macs, positions = 0, 0, 0, 0, 0, 0, 0
    pinned: list[int] = []  # elements kept alive by the composite blocks now running

    def count_op(live: int, written: int) -> None:
        nonlocal arena, n_ops, act_elems
        n_ops += 1
        act_elems += written
        arena = max(arena, live + sum(pinned))  # int8: one byte per element

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs, channels, dw_macs, positions
        if isinstance(module, nn.AdaptiveAvgPool2d) and inputs[0].shape[-2:] == output.shape[-2:]:
            return  # a mean over a 1x1 map (a squeeze-and-excitation at the last stage) is no op in the converted file
        count_op(inputs[0].numel() + output.numel(), output.numel())
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            conv_macs = output.numel() * (module.in_channels // module.groups) * kh * kw
            macs += conv_macs
            if module.groups > 1 and module.groups == module.in_channels:
                dw_macs += conv_macs
            positions += output.numel() // module.out_channels
            channels += module.out_channels
            if module.stride != (1, 1) and any(module.padding):
                # onnx2tf writes a padded strided convolution as PAD + a VALID convolution (TensorFlow's SAME
                # padding of a stride-2 conv is asymmetric): one more op, writing the padded input.
                padded = inputs[0].shape[1] * (inputs[0].shape[2] + 2 * module.padding[0]) * (inputs[0].shape[3] + 2 * module.padding[1])
                count_op(inputs[0].numel() + padded, padded)
        elif isinstance(module, nn.Conv1d):  # text convolutions over tokens
            macs += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0]
            channels += module.out_channels
        elif isinstance(module, nn.Linear):
            # Applied to every token of a text model's (1, L, d) input; once for an image head.
            macs += module.in_features * module.out_features * (output.numel() // module.out_features)
            channels += module.out_features

    def elementwise_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        count_op(inputs[0].numel() + output.numel(), output.numel())

    def pin(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        pinned.append(inputs[0].numel())

    def composite_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        pinned.pop()
        # ADD: the block's input, its branch's output (the same size) and the sum; MUL: the input, the per-channel
        # gate and the product.
        second = output.numel() if module.elementwise_op == "add" else output.shape[1]
        count_op(inputs[0].numel() + second + output.numel(), output.numel())

    def matmul_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        macs += module.matmul_macs(inputs[0])  # attention's activation x activation products (models/text.py)

    composites = [m for m in model.modules() if getattr(m, "elementwise_op", None)]
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    handles += [m.register_forward_hook(elementwise_hook) for m in model.modules() if isinstance(m, _ELEMENTWISE)]
    handles += [m.register_forward_pre_hook(pin) for m in composites]
    handles += [m.register_forward_hook(composite_hook) for m in composites]
    handles += [m.register_forward_hook(matmul_hook) for m in model.modules() if hasattr(m, "matmul_macs")]
    try:
        with torch.no_grad():
            model.eval()(example_input(model, spec))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    # BatchNorm folds into the conv at export, so its parameters do not reach the file.
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    model_bytes = (params - bn) + TFLITE_FIXED_BYTES + BYTES_PER_CHANNEL * channels
    n_ops += 2  # the reshape before the head and the final output op
    latency = profile.estimate_latency_ms(macs, n_ops, act_elems, dw_macs=dw_macs, conv_positions=positions)
    return Cost(params, model_bytes, macs, arena, n_ops, act_elems, round(latency, 4), dw_macs, positions)


def check_budgets(cost: Cost, profile: DeviceProfile, max_params: int) -> tuple[str, ...]:
    b = profile.budget
    checks = [
        ("parameters", cost.params, max_params),
        ("model bytes", cost.model_bytes, b.model_bytes),
        ("activation arena bytes", cost.arena_bytes, b.arena_bytes),
        ("estimated latency ms", cost.latency_ms, b.latency_ms),
    ]
    return tuple(f"{name} {value:,} > budget {limit:,}" for name, value, limit in checks if value > limit)


AUTO = "auto"


def choose_student(
    spec: DataSpec, profile: DeviceProfile, family: str, teacher_params: int, min_compression: float
) -> SizingResult:
    """Highest-capacity candidate (most parameters, then most MACs) that meets every budget, from ``family``, or
    with ``family="auto"`` from every family ``auto_families`` offers for this input."""
    max_params = min(profile.budget.max_params, int(teacher_params / min_compression))
    families = auto_families(spec) if family == AUTO else (family,)
    candidates = []
    for config in (c for name in families for c in STUDENT_FAMILIES.get(name).candidates(spec)):
        cost = measure_cost(build_student(config, spec), spec, profile)
        violations = check_budgets(cost, profile, max_params)
        candidates.append(Candidate(config, cost, not violations, violations))
    if not candidates:  # a family with nothing to offer at this input size: its builder says why
        family_obj = STUDENT_FAMILIES.get(families[0])
        build_student(StudentConfig(families[0], family_obj.widths[0], family_obj.depths[0]), spec)
        raise SizingError(f"Student family {family!r} has no candidates for input {spec.input_shape}.", "Pick another --student family.")
    fitting = [c for c in candidates if c.fits]
    if all(getattr(STUDENT_FAMILIES.get(name), "fixed", False) for name in families):  # text families have no such field
        return _fixed_student(candidates[0], profile, max_params, STUDENT_FAMILIES.get(families[0]).description)
    if not fitting:
        smallest = min(candidates, key=lambda c: c.cost.params)
        raise SizingError(
            f"No {' / '.join(families)} student fits profile {profile.name!r}: even the smallest, {smallest.config.label()}, "
            f"breaks {'; '.join(smallest.violations)}.",
            "Raise the profile's budgets (edit a copy of its TOML), lower --min-compression, or pick another --student family.",
        )
    best = max(fitting, key=_capacity)
    searched = f" of families {', '.join(families)}" if len(families) > 1 else ""
    reason = (
        f"{best.config.label()} is the largest of {len(fitting)}/{len(candidates)} candidates{searched} that fit {profile.name}'s budgets "
        f"(params ≤ {max_params:,}, model ≤ {profile.budget.model_bytes:,} B, arena ≤ {profile.budget.arena_bytes:,} B, "
        f"est. latency ≤ {profile.budget.latency_ms} ms)."
    )
    return SizingResult(best.config, best.cost, tuple(candidates), reason, max_params)


def _fixed_student(only: Candidate, profile: DeviceProfile, max_params: int, description: str) -> SizingResult:
    """A user's own student is distilled as it is; the report says where it breaks the profile's budgets."""
    if only.fits:
        reason = f"{description}, as given: it fits {profile.name}'s budgets ({only.cost.params:,} params, est. {only.cost.latency_ms} ms)."
    else:
        reason = (f"WARNING: {description}, as given, breaks {profile.name}'s budgets: {'; '.join(only.violations)}. "
                  "It is distilled and converted anyway; expect it to be too large or too slow for the device.")
    return SizingResult(only.config, only.cost, (only,), reason, max_params)


def _capacity(c: Candidate) -> tuple[int, int]:
    return (c.cost.params, c.cost.macs)


def proxy_select(
    result: SizingResult, spec: DataSpec, splits, top_k: int, epochs: int, seed: int, workdir: Path
) -> SizingResult:
    """Train the ``top_k`` largest fitting candidates for ``epochs`` on hard labels; the best validation accuracy wins.

    Capacity is a guess at accuracy; a short real training run is a better one when the candidates are
    close (e.g. a deeper-narrower against a shallower-wider network).  Ties go to the larger candidate.
    """
    from .distill import KDConfig, TrainConfig, train
    from .models.text import student_inputs

    fitting = sorted((c for c in result.candidates if c.fits), key=_capacity, reverse=True)[:top_k]
    trials = []
    # Checkpoints live in the run directory (``workdir``), so an interrupted search resumes too.
    workdir.mkdir(parents=True, exist_ok=True)
    for rank, cand in enumerate(fitting):
        torch.manual_seed(seed)
        model = build_student(cand.config, spec)
        t0 = time.perf_counter()
        fit = lambda x, c=cand.config: student_inputs(c, x)  # noqa: E731 -- a text candidate reads ids of its own vocabulary/length
        run = train(
            model, fit(splits.x_train), splits.y_train, fit(splits.x_val), splits.y_val,
            TrainConfig(epochs=epochs, seed=seed), KDConfig(loss="ce"), None,
            workdir / f"proxy{rank}.ckpt", f"proxy {rank + 1}/{len(fitting)} {cand.config.label()}",
        )
        trials.append(ProxyTrial(cand.config, cand.cost.params, epochs, run.best_val_accuracy, round(time.perf_counter() - t0, 3)))
    best = max(zip(trials, fitting), key=lambda tc: (tc[0].val_accuracy, _capacity(tc[1])))
    reason = (
        f"{best[0].config.label()} reached the best validation accuracy ({best[0].val_accuracy:.4f}) of the "
        f"{len(trials)} largest fitting candidates, each trained {epochs} epochs on hard labels (--search proxy)."
    )
    return dataclasses.replace(result, chosen=best[1].config, cost=best[1].cost, reason=reason, proxy=tuple(trials))
