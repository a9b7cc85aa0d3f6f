"""The training loop shared by the built-in teacher, the KD student and the no-KD baseline.

Resumable: after every epoch the full state (weights, optimizer, scheduler, best-so-far, history) is
saved atomically, so a killed build restarts from the last finished epoch.  Shuffling and dropout are
seeded per epoch, which makes a resumed run take the same steps as an uninterrupted one.
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
from .losses import LOSSES, KDConfig


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

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


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_accuracy: float
    history: tuple[EpochLog, ...]
    seconds: float


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    return float((predict_logits(model, x, batch_size).argmax(1) == y).mean())


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


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
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the epoch with the best validation accuracy."""
    loss_fn = LOSSES.get(kd.loss)
    console = get_console()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    history: list[EpochLog] = []
    best_state, best_acc, best_epoch, start_epoch, elapsed = copy.deepcopy(model.state_dict()), -1.0, 0, 0, 0.0

    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)  # our own file, but never unpickle code
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_state, best_acc, best_epoch = state["best_model"], state["best_acc"], state["best_epoch"]
        history = [EpochLog(**h) for h in state["history"]]
        start_epoch, elapsed = state["epoch"], state["seconds"]
        console.info(f"{desc}: resuming after epoch {start_epoch}/{cfg.epochs}")

    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    tt = torch.from_numpy(teacher_logits) if teacher_logits is not None else None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout and shuffling depend only on (seed, epoch)
        order = torch.randperm(len(xt))
        model.train()
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
        batches = range(0, len(order), cfg.batch_size)
        for start in console.progress(batches, total=len(batches), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}"):
            idx = order[start : start + cfg.batch_size]
            parts = loss_fn(model(xt[idx]), yt[idx], tt[idx] if tt is not None else None, kd)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
            scheduler.step()
            for k, v in parts.items():
                sums[k] += float(v.detach()) * len(idx)
        val_acc = accuracy(model, x_val, y_val)
        log = EpochLog(epoch + 1, sums["loss"] / len(xt), sums["ce"] / len(xt), sums["kd"] / len(xt), val_acc)
        history.append(log)
        if val_acc >= best_acc:  # on a tie prefer the later epoch: lower learning rate, settled weights
            best_acc, best_epoch, best_state = val_acc, epoch + 1, copy.deepcopy(model.state_dict())
        elapsed += time.perf_counter() - t0
        console.info(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {log.loss:.4f}  val acc {val_acc:.4f}")
        _save_checkpoint(checkpoint, model, optimizer, scheduler, best_state, best_acc, best_epoch, history, epoch + 1, elapsed)

    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_epoch, best_acc, tuple(history), round(elapsed, 3))


def _save_checkpoint(path, model, optimizer, scheduler, best_state, best_acc, best_epoch, history, epoch, seconds) -> None:
    state = {
        "model": model.state_dict(),
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
