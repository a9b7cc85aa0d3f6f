"""Fashion-MNIST experiment: function matching with mixup views (Beyer et al. 2022) against plain KD.

    .venv/bin/python benchmarks/fashion_mnist_function_matching.py --epochs 42 --arms fm kd

Beyer et al. found that distillation pays when the student matches the teacher's function on inputs *between*
the training images (mixup), for a long schedule.  This trains the suite's student (``fashion_mnist.FULL``:
same teacher, same 4-view bank, same architecture) three ways, each arm on one thread, two at a time:

- ``ce``: hard labels only, on the 4-view bank;
- ``kd``: pure soft targets (α = 0, T = 4) on the 4-view bank;
- ``fm``: pure soft targets on the 4-view bank plus ``--mixup-views`` mixup views: two independently shifted and
  flipped training images mixed with λ ~ U(0, 1), the teacher's logits computed on the mixture.  Every epoch each
  image draws one of the 4 + M views, so about half the steps are on mixtures.

Hard labels cannot score a mixture, hence α = 0 for both KD arms.  The teacher and the plain bank are read from the
suite's cache (``fashion_mnist.py --stop-after views`` builds them; without them this script trains and builds them
the same way first, ~30-40 min); the mixup bank and each arm's result are cached under the same directory.  Measured results are in BENCHMARKS.md (Fashion-MNIST, "What else was tried").
Accuracy is on the official test split; the epoch is chosen on validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fashion_mnist as suite  # noqa: E402

from edge_distill.rundir import hash_inputs  # noqa: E402

ARMS = {"ce": ("plain", 1.0), "kd": ("plain", 0.0), "fm": ("mixup", 0.0)}  # arm -> (bank, α)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=42, help="student epochs (the suite's students train 14)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixup-views", type=int, default=4, help="mixup views added to the suite's views for the fm arm")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["fm", "kd"])
    parser.add_argument("--work", type=Path, default=suite.ROOT / "runs" / "bench-fashion-mnist", help="the suite's cache directory")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at once, one thread each")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from edge_distill.data import prepare

    plan = replace(suite.FULL, student_epochs=args.epochs)
    spec, splits = prepare("fashion-mnist", seed=0, calib_count=500)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher, _ = suite.train_teacher(suite.FULL, spec, splits, args.work, suite.FULL.teacher_members, 1)
    plain = suite.view_bank(suite.FULL, teacher, splits, spec.background, args.work)
    mixup = mixup_bank(teacher, splits, spec.background, args.mixup_views, args.work) if "fm" in args.arms else None
    todo = [(plan, plain, mixup, args.work, arm, args.seed) for arm in args.arms]
    results = suite.run_in_processes(train_arm, todo, min(args.jobs, len(todo)))
    print("\narm | test | val (best epoch) | train s")
    for r in results:
        print(f"{r['arm']} | {r['test_accuracy']:.4f} | {r['val_accuracy']:.4f} ({r['best_epoch']}/{r['epochs']}) | {r['train_seconds']:.0f}")


def mixup_bank(teacher, splits, background: float, views: int, work: Path) -> dict[str, Path]:
    """``views`` mixup views of every training image and the teacher's logits on them, cached as .npy files."""
    import torch

    from edge_distill.console import get_console
    from edge_distill.distill.augment import augment
    from edge_distill.distill.layout import channels_last_input, set_memory_format

    tag = hash_inputs("mixup-bank", *suite.teacher_recipe(suite.FULL), suite.FULL.teacher_members, views)
    paths = {name: work / f"mixup-{tag}-{name}.npy" for name in ("x", "logits")}
    if all(p.exists() for p in paths.values()):
        print(f"mixup bank: cached ({views} views)", flush=True)
        return paths
    x = torch.from_numpy(splits.x_train)
    n, batch = len(x), 512
    generator = torch.Generator().manual_seed(12_345)
    xs = np.zeros((views, *x.shape), np.float32)
    logits = np.zeros((views, n, int(splits.y_train.max()) + 1), np.float32)
    teacher.eval()
    set_memory_format(torch.channels_last, teacher)
    chunks = [(v, start) for v in range(views) for start in range(0, n, batch)]
    t0 = time.perf_counter()
    with torch.no_grad():
        for view, start in get_console().progress(chunks, len(chunks), f"teacher on {views} mixup views"):
            if start == 0:  # one partner and one λ per image and view
                partner, lam = torch.randperm(n, generator=generator), torch.rand(n, generator=generator)
            rows = slice(start, start + batch)
            a = augment(x[rows], generator, suite.FULL.shift, suite.FULL.flip, background)
            b = augment(x[partner[rows]], generator, suite.FULL.shift, suite.FULL.flip, background)
            weight = lam[rows, None, None, None]
            mixed = weight * a + (1 - weight) * b
            xs[view, rows] = mixed.numpy()
            logits[view, rows] = teacher(channels_last_input(mixed)).numpy()
    set_memory_format(torch.contiguous_format, teacher)
    suite.save_arrays(paths, {"x": xs, "logits": logits})
    print(f"mixup bank: {views} views x {n} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def train_arm(plan, plain: dict[str, Path], mixup: dict[str, Path] | None, work: Path, arm: str, seed: int) -> dict:
    """One arm trained in this process on one thread (or read back from the cache); its record."""
    from edge_distill.distill import KDConfig, accuracy
    from edge_distill.distill.views import ViewBank

    bank_kind, alpha = ARMS[arm]
    extra_views = int(np.load(mixup["x"], mmap_mode="r").shape[0]) if bank_kind == "mixup" else 0
    tag = hash_inputs("fm-arm", suite.training_settings(plan), arm, seed, extra_views)
    name = f"fm-{arm}-s{seed}-{tag}"
    if (work / f"{name}.json").exists():
        record = json.loads((work / f"{name}.json").read_text())
        print(f"{arm}: cached (test {record['test_accuracy']:.4f})", flush=True)
        return record
    x, logits = np.load(plain["x"]), np.load(plain["logits"])
    if bank_kind == "mixup":
        x, logits = np.concatenate([x, np.load(mixup["x"])]), np.concatenate([logits, np.load(mixup["logits"])])
    # α = 1 makes the logit loss plain cross-entropy: the ce arm trains through the same code as the KD arms.
    kd = KDConfig(loss="logit", temperature=plan.temperature, alpha=alpha)
    model, result, splits = suite.fit_student(plan, ViewBank(x, logits), kd, seed, 1, work / f"{name}.ckpt", f"{arm} s{seed}")
    record = {
        "arm": arm, "seed": seed, "epochs": plan.student_epochs, "alpha": alpha, "views": int(x.shape[0]),
        "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
        "test_accuracy": accuracy(model, splits.x_test, splits.y_test), "train_seconds": result.seconds,
        "val_curve": [h.val_accuracy for h in result.history],
    }
    (work / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(f"{arm}: val {record['val_accuracy']:.4f}, test {record['test_accuracy']:.4f} ({result.seconds:.0f} s)", flush=True)
    return record


if __name__ == "__main__":
    main()
