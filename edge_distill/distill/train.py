"""The training loop shared by the built-in teacher, the KD student and the no-KD baseline.

Resumable: after every epoch the full state (weights, optimizer, scheduler, best-so-far, history) is
saved atomically, so a killed build restarts from the last finished epoch.  Shuffling and dropout are
seeded per epoch, which makes a resumed run take the same steps as an uninterrupted one.

Distributed: inside an initialized process group (see ``procgroup``) the same loop runs on every rank with the
model wrapped in DistributedDataParallel.  Every rank draws the same seeded permutation and takes its
share of each global batch, so the optimizer steps and the learning-rate schedule match single-process
training; gradients are averaged by DDP, metrics are all-reduced, and only rank 0 writes checkpoints.
A checkpoint from either mode resumes in the other, with any number of ranks.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..console import get_console
from ..errors import ConfigError
from . import procgroup
from .devices import describe, training_device
from .augment import augment
from .features import capture_features, feature_channels
from .layout import channels_last_input, memory_format_of, set_memory_format
from .losses import LOSSES, KDBatch, KDConfig, Loss
from .views import ViewBank, draw_views


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # Augmentation (random shift by up to augment_shift pixels, optional horizontal flip).  With a teacher,
    # augmented training needs it online so it sees the same view as the student (Beyer et al. 2022).
    augment_shift: int = 0
    augment_flip: bool = False
    background: float = 0.0  # normalized value of a blank pixel, used to pad shifted images
    # Token-id inputs padded with this id: batch texts of similar length together (see bucket_by_length).
    # For models that cut each batch to its longest text (the HF teachers); None = plain random batches.
    bucket_pad_id: int | None = None
    # Return the last epoch's weights, not the best on validation: for a model whose training data includes the
    # validation split, where validation accuracy is in-sample and shown only as progress.
    keep_last: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(
                f"Training needs epochs ≥ 1, batch_size ≥ 1 and lr > 0 (got {self.epochs}, {self.batch_size}, {self.lr}).",
                "Fix the training settings.",
            )


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    loss: float
    ce: float
    kd: float
    val_accuracy: float
    feat: float = 0.0  # the feature-distillation term, for fitnet / attention


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_accuracy: float
    history: tuple[EpochLog, ...]
    seconds: float
    device: str = ""  # where it trained (devices.describe), with the rank count under DDP; "" in results made before --device


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int | None = None) -> float:
    return float((predict_logits(model, x, batch_size).argmax(1) == y).mean())


# Image inference runs channels-last in batches of 128: measured on the 2-core host (vgg teacher, 1 thread,
# the 6,000 validation images) 3.6 s, against 8.5 s for NCHW inputs in batches of 512 (and 4.3 s channels-last at 512).
IMAGE_BATCH = 128
# Larger images get fewer per batch: at 224 px RGB a batch of 128 holds ~0.8 GB in each 32-channel activation (a 1,000-photo
# build's teacher logits peaked at 2.6 GB RSS, issue #37); this many input values per batch keeps it near 100 MB.
IMAGE_BATCH_VALUES = 1 << 21


def image_batch(shape: tuple[int, ...]) -> int:
    return max(1, min(IMAGE_BATCH, IMAGE_BATCH_VALUES // max(1, int(np.prod(shape)))))


# Training holds every activation of a batch for the backward pass: the built-in teacher at 224 px RGB in batches of 64
# peaked at 2.0 GB of its own memory (issue #37).  A batch with more input values than this is run in equal micro-batches
# whose gradients add up to the batch's (one optimizer step, same learning-rate schedule); BatchNorm then normalizes
# over each micro-batch.  The demo (8x8), Fashion-MNIST (28 px) and ELPV (224 px grey, batches of 64) stay one piece, as
# does each DDP rank (its share of the batch is already smaller).
TRAIN_BATCH_VALUES = 1 << 22  # 4.2 M: 27 RGB photos of 224 px, 83 grey ones


def micro_batches(idx: torch.Tensor, sample_shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """``idx`` cut into the fewest equal pieces that each hold at most ``TRAIN_BATCH_VALUES`` input values."""
    per_sample = max(1, int(np.prod(sample_shape)))
    pieces = -(-len(idx) * per_sample // TRAIN_BATCH_VALUES)
    return (idx,) if pieces <= 1 else tuple(torch.tensor_split(idx, min(pieces, len(idx))))


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    model.eval()
    home = _device_of(model)
    # A CPU-held model runs on the build's device (--device) for the call and goes back; one already placed (a DDP
    # rank's) stays where it is.
    dev = training_device() if home.type == "cpu" else home
    model.to(dev)
    images = x.ndim == 4
    batch_size = batch_size or (image_batch(x.shape[1:]) if images else 512)
    order = length_order(model, x)
    xs = x[order] if order is not None else x
    layout = memory_format_of(model) if images else None
    if images:
        set_memory_format(torch.channels_last, model)
    try:
        outs = [model(channels_last_input(torch.from_numpy(xs[i : i + batch_size]).to(dev))).cpu().numpy() for i in range(0, len(xs), batch_size)]
    finally:
        if layout is not None:
            set_memory_format(layout, model)  # the caller's layout back (train() keeps its model channels-last)
        model.to(home)
    if not outs:  # an empty shard of a distributed evaluation
        return np.zeros((0, 0), np.float32)
    logits = np.concatenate(outs).astype(np.float32)
    if order is not None:
        logits[order] = logits.copy()
    return logits


def length_order(model: nn.Module, x: np.ndarray) -> np.ndarray | None:
    """Shortest text first, for a model that cuts each batch to its longest text (``trim`` and ``pad_id``);
    None for any other model.  Random batches of wordnet glosses pad to ~2.5x their real length (see
    bucket_by_length); in length order inference does the real work only."""
    if not getattr(model, "trim", False) or getattr(model, "pad_id", None) is None or x.ndim != 2:
        return None
    return np.argsort((x != model.pad_id).sum(1), kind="stable")


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    kd: KDConfig,
    teacher_logits: np.ndarray | None,
    checkpoint: Path,
    desc: str,
    distributed: bool = False,
    teacher: nn.Module | None = None,
    views: ViewBank | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the epoch with the best validation accuracy.

    ``distributed=True`` (the DDP worker) trains on the initialized ``torch.distributed`` world: every rank
    calls this with the same arguments, with ``model`` already on its device.  It is never inferred from an
    initialized group: rank 0 of a torchrun build also trains small models alone (e.g. proxy sizing).
    """
    loss_spec = LOSSES.get(kd.loss)
    augmenting = cfg.augment_shift > 0 or cfg.augment_flip
    teacher, teacher_logits, online = _teacher_source(loss_spec, kd, augmenting, x_train, teacher, teacher_logits, views, distributed)
    console = get_console()
    world = _training_world(distributed)
    rank = world.rank if world else 0
    if world is None:  # one process: the build's --device (DDP ranks come with their model on their own device)
        model.to(training_device())
        if teacher is not None:
            teacher.to(training_device())
    dev = _device_of(model)
    extra = _loss_module(loss_spec, model, teacher, views, x_train, dev)
    optimizer, scheduler = _optimizer(model, extra, cfg, len(x_train))
    history: list[EpochLog] = []
    best_state, best_acc, best_epoch, start_epoch, elapsed = copy.deepcopy(model.state_dict()), -1.0, 0, 0, 0.0
    resumed = _resume(checkpoint, rank, world, model, extra, optimizer, scheduler)
    if resumed is not None:
        best_state, best_acc, best_epoch, history, start_epoch, elapsed = resumed
        console.info(f"{desc}: resuming after epoch {start_epoch}/{cfg.epochs}")

    # Channels-last convolutions run faster on CPU (see layout.py); the model goes back to the default
    # layout before it is returned.
    images = x_train.ndim == 4
    if images:
        set_memory_format(torch.channels_last, model, extra, teacher)
    net = _wrap_ddp(model, world, dev)
    xt, yt = _rows_as_tensors(x_train), torch.from_numpy(y_train)
    tt = torch.from_numpy(teacher_logits) if teacher_logits is not None else None
    lengths = (xt != cfg.bucket_pad_id).sum(1) if cfg.bucket_pad_id is not None and xt.ndim == 2 else None
    steps = _Steps(net, model, teacher, online, extra, optimizer, scheduler, loss_spec, kd, cfg, augmenting, dev, world, xt, yt, tt, views)
    for epoch in range(start_epoch, cfg.epochs):
        procgroup.inject_fault(epoch, world)
        t0 = time.perf_counter()
        order = _epoch_order(cfg, epoch, len(xt), lengths, world, rank)
        sums = _train_epoch(steps, epoch, order, console, desc)
        log = _epoch_log(model, x_val, y_val, world, sums, epoch, len(xt))
        history.append(log)
        # On a tie prefer the later epoch (lower learning rate, settled weights); keep_last always takes it.
        if log.val_accuracy >= best_acc or cfg.keep_last:
            best_acc, best_epoch, best_state = log.val_accuracy, epoch + 1, copy.deepcopy(model.state_dict())
        elapsed += time.perf_counter() - t0
        console.info(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {log.loss:.4f}  val acc {log.val_accuracy:.4f}")
        if rank == 0:
            _save_checkpoint(checkpoint, model, optimizer, scheduler, best_state, best_acc, best_epoch, history, epoch + 1, elapsed, extra)

    model.load_state_dict(best_state)
    if images:
        set_memory_format(torch.contiguous_format, model, extra, teacher)
    model.eval()
    where = describe(dev) + (f" x {world.size} ranks" if world is not None else "")
    if world is None:  # back on the CPU, where export, conversion and the caller's state dicts expect it
        model.cpu()
        if teacher is not None:
            teacher.cpu()
    return TrainResult(best_epoch, best_acc, tuple(history), round(elapsed, 3), where)


class _PixelRows:
    """uint8 photos (data/pixels.py) indexed like a tensor: each batch becomes normalized float32 only when it is read."""

    def __init__(self, pixels):
        self.pixels, self.ndim, self.shape = pixels, pixels.ndim, pixels.shape

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.pixels[idx])


def _rows_as_tensors(x):
    from ..data.pixels import Pixels

    return _PixelRows(x) if isinstance(x, Pixels) else torch.from_numpy(x)


@dataclass(frozen=True)
class _Steps:
    """What every optimizer step of one ``train`` call uses, gathered once before the first epoch."""

    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    model: nn.Module
    teacher: nn.Module | None
    online: bool  # the teacher runs on every batch; otherwise its outputs come cached (tt or the view bank)
    extra: nn.Module | None  # the loss's own trainable part (FitNets' projection)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_spec: Loss
    kd: KDConfig
    cfg: TrainConfig
    augmenting: bool
    dev: torch.device
    world: procgroup.World | None
    xt: torch.Tensor | _PixelRows
    yt: torch.Tensor
    tt: torch.Tensor | None  # cached teacher logits
    views: ViewBank | None


def _teacher_source(loss_spec: Loss, kd: KDConfig, augmenting: bool, x_train: np.ndarray, teacher: nn.Module | None,
                    teacher_logits: np.ndarray | None, views: ViewBank | None, distributed: bool):
    """``(teacher, teacher_logits, online)``: whether the teacher runs on every batch, or its outputs come from
    cached logits or a view bank (which replaces both); raises when the loss cannot get what it needs."""
    if views is not None:
        _check_view_bank(views, x_train, loss_spec.needs_features, augmenting, distributed)
        teacher, teacher_logits = None, None  # every teacher output comes from the bank
    needs_online = loss_spec.needs_teacher and (augmenting or loss_spec.needs_features) and views is None
    online = loss_spec.needs_teacher and teacher is not None and (needs_online or teacher_logits is None)
    if needs_online and teacher is None:
        raise ConfigError(
            f"KD loss {kd.loss!r} with {'augmentation' if augmenting else 'feature maps'} needs the teacher model online, "
            "not only its cached logits.",
            "Pass the teacher module (the pipeline does), or train without augmentation using --kd-loss logit.",
        )
    if loss_spec.needs_teacher and not online and teacher_logits is None and views is None:
        raise ConfigError(f"KD loss {kd.loss!r} needs teacher logits.", "Pass a teacher, or use the 'ce' loss.")
    if online and distributed:
        raise ConfigError("An online teacher (augmentation or feature KD) is not supported with --nproc > 1 yet.", "Use --nproc 1.")
    return teacher, teacher_logits, online


def _training_world(distributed: bool) -> procgroup.World | None:
    world = procgroup.current() if distributed else None
    if distributed and world is None:
        raise ConfigError("train(distributed=True) needs an initialized torch.distributed process group of ≥ 2 ranks.", "Launch with torchrun.")
    return world


def _loss_module(loss_spec: Loss, model: nn.Module, teacher: nn.Module | None, views: ViewBank | None, x_train: np.ndarray,
                 dev: torch.device) -> nn.Module | None:
    """A loss may bring trainable parts of its own (FitNets' projection); they train with the student."""
    if loss_spec.make_module is None:
        return None
    shape, dtype = tuple(x_train.shape[1:]), torch.from_numpy(x_train[:1]).dtype
    teacher_channels = int(views.maps.shape[2]) if views is not None else feature_channels(teacher, shape, dtype)
    return loss_spec.make_module(feature_channels(model, shape, dtype), teacher_channels).to(dev)


def _optimizer(model: nn.Module, extra: nn.Module | None, cfg: TrainConfig, n_train: int):
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-n_train // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    return optimizer, scheduler


def _resume(checkpoint: Path, rank: int, world: procgroup.World | None, model: nn.Module, extra: nn.Module | None, optimizer, scheduler):
    """Loads the checkpoint's weights and optimizer state, and returns its progress
    ``(best_state, best_acc, best_epoch, history, epoch, seconds)``; None when there is no checkpoint."""
    # Rank 0 reads the checkpoint and hands it to the others: only its file system has to hold it.
    state = torch.load(checkpoint, map_location="cpu", weights_only=True) if rank == 0 and checkpoint.exists() else None
    if world is not None:
        state = procgroup.broadcast_object(state, world)
    if state is None:
        return None
    model.load_state_dict(state["model"])
    if extra is not None and "extra" in state:
        extra.load_state_dict(state["extra"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    history = [EpochLog(**h) for h in state["history"]]
    return state["best_model"], state["best_acc"], state["best_epoch"], history, state["epoch"], state["seconds"]


def _wrap_ddp(model: nn.Module, world: procgroup.World | None, dev: torch.device) -> nn.Module:
    if world is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # Wrapping broadcasts rank 0's weights, so every rank starts (or resumes) from the same point.
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _epoch_order(cfg: TrainConfig, epoch: int, n: int, lengths: torch.Tensor | None, world: procgroup.World | None,
                 rank: int) -> torch.Tensor:
    """The epoch's sample order; also seeds the epoch's dropout, which must follow the shuffle's draws."""
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout and shuffling depend only on (seed, epoch)
    order = torch.randperm(n)
    if lengths is not None:
        order = bucket_by_length(order, lengths, cfg.batch_size, torch.Generator().manual_seed(cfg.seed * 7_907 + epoch))
    if world is not None:
        torch.manual_seed((cfg.seed * 100_003 + epoch) * 1_009 + rank + 1)  # per-rank dropout masks, still reproducible
    return order


def _train_epoch(s: _Steps, epoch: int, order: torch.Tensor, console, desc: str) -> dict[str, float]:
    """One pass over ``order``; returns the loss parts summed over this rank's samples."""
    rank, size = (s.world.rank, s.world.size) if s.world else (0, 1)
    s.net.train()
    if s.extra is not None:
        s.extra.train()
    if s.teacher is not None:
        s.teacher.eval()
    view_rng = torch.Generator().manual_seed(s.cfg.seed * 7_919 + epoch)  # the augmented views, per (seed, epoch)
    chosen = draw_views(s.views, s.cfg.seed, epoch).numpy() if s.views is not None else None
    sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "feat": 0.0}
    batches = range(0, len(order), s.cfg.batch_size)
    for start in console.progress(batches, total=len(batches), desc=f"{desc} epoch {epoch + 1}/{s.cfg.epochs}",
                                  closing_line=False):  # the epoch's own line (loss, val acc) follows
        batch = order[start : start + s.cfg.batch_size]
        idx = procgroup.batch_share(batch, rank, size) if s.world is not None else batch
        n_mine = len(idx)
        if n_mine == 0:  # a last batch smaller than the world: still join the all-reduce, with zero weight
            idx = batch[:1]
        s.optimizer.zero_grad(set_to_none=True)
        # DDP ranks stay one piece each: every backward is an all-reduce, and the ranks must make the same number of them.
        for piece in (micro_batches(idx, tuple(s.xt.shape[1:])) if s.world is None else (idx,)):
            xb, cached_logits, cached_map = _batch_inputs(s, piece, chosen, view_rng)
            parts = _step_loss(s.net, s.model, s.teacher if s.online else None, s.extra, xb, s.yt[piece].to(s.dev),
                               cached_logits.to(s.dev) if cached_logits is not None else None, s.loss_spec, s.kd, cached_map)
            loss = parts["loss"] if len(piece) == len(idx) else parts["loss"] * (len(piece) / len(idx))  # the batch mean, in pieces
            if s.world is not None:
                # DDP averages gradients over ranks; weighting by this rank's share makes that average the
                # gradient of the global batch's mean loss, as in single-process training.
                loss = loss * (n_mine * size / len(batch))
            loss.backward()
            for k, v in parts.items():
                sums[k] += float(v.detach()) * (len(piece) if n_mine else 0)
        s.optimizer.step()
        s.scheduler.step()
    return sums


def _batch_inputs(s: _Steps, idx: torch.Tensor, chosen: np.ndarray | None, view_rng: torch.Generator):
    """``(student input, cached teacher logits, cached teacher feature map)`` of one batch, on the device."""
    cached_logits = s.tt[idx] if s.tt is not None and not s.online else None
    cached_map = None
    if s.views is not None:
        rows, which = idx.numpy(), chosen[idx.numpy()]
        xb = torch.from_numpy(s.views.x[which, rows])
        cached_logits = torch.from_numpy(s.views.logits[which, rows])
        if s.loss_spec.needs_features:
            cached_map = torch.from_numpy(s.views.maps[which, rows]).float().to(s.dev)
    else:
        xb = s.xt[idx]
    xb = xb.to(s.dev)
    if s.augmenting:
        xb = augment(xb, view_rng, s.cfg.augment_shift, s.cfg.augment_flip, s.cfg.background)
    return channels_last_input(xb), cached_logits, cached_map


def _epoch_log(model: nn.Module, x_val: np.ndarray, y_val: np.ndarray, world: procgroup.World | None, sums: dict[str, float],
               epoch: int, n_train: int) -> EpochLog:
    if world is not None:
        procgroup.sync_buffers(model, world)  # BatchNorm statistics: every rank evaluates and keeps rank 0's
    val_acc = _val_accuracy(model, x_val, y_val, world)
    if world is not None:
        sums = dict(zip(sums, procgroup.all_reduce_sum(list(sums.values()), world)))
    return EpochLog(epoch + 1, sums["loss"] / n_train, sums["ce"] / n_train, sums["kd"] / n_train, val_acc, sums["feat"] / n_train)


def bucket_by_length(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                     window_batches: int = 50) -> torch.Tensor:
    """``order`` rearranged so that each batch holds texts of similar length, batches in random order.

    A model that trims every batch to its longest text does work proportional to that longest text: random
    batches of wordnet glosses pad to 45 WordPiece tokens on average, length-sorted ones to 17 (measured), so
    MiniLM fine-tunes ~2.5x faster.  Sorting happens inside windows of ``window_batches`` shuffled batches, so
    every batch still mixes samples from across the data set; the order depends only on its inputs.
    """
    window = batch_size * window_batches
    full, partial = [], []
    for start in range(0, len(order), window):
        part = order[start : start + window]
        part = part[torch.argsort(lengths[part], stable=True)]
        for chunk in torch.split(part, batch_size):
            (full if len(chunk) == batch_size else partial).append(chunk)
    # The one short batch (the data's remainder) stays last, so slicing the result by batch_size keeps the buckets.
    chunks = [full[i] for i in torch.randperm(len(full), generator=generator)] + partial
    return torch.cat(chunks) if chunks else order


def _step_loss(net, model, teacher, extra, xb, yb, cached_teacher_logits, loss_spec, kd, cached_teacher_map=None) -> dict[str, torch.Tensor]:
    """One batch's loss parts; runs the teacher on the same view when it is online (not cached)."""
    if not loss_spec.needs_features:
        batch = KDBatch(net(xb), yb, cached_teacher_logits)
        if teacher is not None:
            with torch.no_grad():
                batch.teacher = teacher(xb)
        return loss_spec.fn(batch, kd, extra)
    with capture_features(model) as student_maps:
        logits = net(xb)
    if cached_teacher_map is not None:
        return loss_spec.fn(KDBatch(logits, yb, cached_teacher_logits, student_maps[0], cached_teacher_map), kd, extra)
    with torch.no_grad(), capture_features(teacher) as teacher_maps:
        teacher_logits = teacher(xb)
    return loss_spec.fn(KDBatch(logits, yb, teacher_logits, student_maps[0], teacher_maps[0]), kd, extra)


def _check_view_bank(views: ViewBank, x_train: np.ndarray, needs_features: bool, augmenting: bool, distributed: bool) -> None:
    if views.x.shape[1:] != x_train.shape:
        raise ConfigError(
            f"The view bank holds {views.x.shape[1]} samples of shape {views.x.shape[2:]}, the training split "
            f"{len(x_train)} of shape {x_train.shape[1:]}.",
            "Build the bank from the same training split.",
        )
    if needs_features and views.maps is None:
        raise ConfigError("Feature KD from a view bank needs the teacher's feature maps in it.", "Build the bank with with_maps=True.")
    if augmenting:
        raise ConfigError("A view bank already holds the augmented views; on-the-fly augmentation would break the teacher's match.",
                          "Set augment_shift=0 and augment_flip=False when training from a view bank.")
    if distributed:
        raise ConfigError("View banks are not supported with --nproc > 1 yet.", "Use --nproc 1.")


def _val_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, world: procgroup.World | None) -> float:
    """Validation accuracy; distributed, each rank scores a slice and the counts are all-reduced."""
    if world is None:
        return accuracy(model, x, y)
    lo, hi = procgroup.shard_bounds(len(y), world.rank, world.size)
    correct = float((predict_logits(model, x[lo:hi]).argmax(1) == y[lo:hi]).sum()) if hi > lo else 0.0
    correct, count = procgroup.all_reduce_sum([correct, float(hi - lo)], world)
    return correct / count


def _save_checkpoint(path, model, optimizer, scheduler, best_state, best_acc, best_epoch, history, epoch, seconds, extra=None) -> None:
    state = {
        "model": model.state_dict(),
        **({"extra": extra.state_dict()} if extra is not None else {}),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_model": best_state,
        "best_acc": best_acc,
        "best_epoch": best_epoch,
        "history": [h.__dict__ for h in history],
        "epoch": epoch,
        "seconds": seconds,
    }
    tmp = path.with_name(path.name + ".part")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint intact
