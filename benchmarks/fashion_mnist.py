"""Fashion-MNIST: does distillation earn its keep?  Teacher, no-KD and KD students, INT8 TFLite, host latency.

    .venv/bin/python benchmarks/fashion_mnist.py            # full suite (~1.5-2 h on 2 cores)
    .venv/bin/python benchmarks/fashion_mnist.py --quick    # every step with fewer epochs (<= 15 min)

Steps (each cached under runs/bench-fashion-mnist/, keyed by its settings, so a rerun resumes):
1. teacher: two built-in ``vgg`` networks from different seeds, trained at the same time (one thread each) with
   shift+flip augmentation, answering with the mean of their logits (``Ensemble``); its wall time is recorded.
   It then answers with the mean of its logits on the image and its mirror (``FlipAveraged``): a second
   opinion for free at training time, since its outputs are computed once, into the view bank.
2. view bank: K augmented views of every training image, with the teacher's logits and feature maps on
   each, computed once — every KD student then sees the teacher's output *on the view it trains on*
   (consistent views, Beyer et al. 2022) without running the teacher at every step.
3. students: one architecture (<= 100K parameters), the same epochs and views, trained without KD (ce)
   and with each registered KD loss (logit, fitnet, attention), 3 seeds each: mean ± std test accuracy.
   Two runs train at once (``--jobs``), each in its own process on one thread.
4. the best run (by validation accuracy, never test) → ONNX → TFLite fp32 and full INT8, each scored on
   the official 10,000-image test split; teacher and student files timed by the device agent in a separate
   process with the same thread count, in interleaved rounds (the p50 is the median over rounds).

Accuracy is on the official test split only; every choice (best epoch, best variant) uses validation.
Writes results/fashion_mnist.json (full runs) or results/fashion_mnist_quick.json, and the BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, replace_section, write_results  # noqa: E402

from edge_distill.rundir import hash_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED_BEST_UNDER_100K = 0.925  # Fashion-MNIST README benchmark table, best entry with < 100K parameters


@dataclass(frozen=True)
class Plan:
    teacher_epochs: int
    student_epochs: int
    seeds: tuple[int, ...]
    views: int
    variants: tuple[str, ...] = ("ce", "logit", "fitnet", "attention")
    student_width: int = 16  # vgg(width=16, depth=3): 70K parameters
    student_depth: int = 3
    temperature: float = 4.0
    alpha: float = 0.3
    beta: float = 1.0
    batch_size: int = 128
    teacher_lr: float = 3e-3
    student_lr: float = 4e-3
    shift: int = 2
    flip: bool = True
    # Timing: every file gets ``bench_runs`` warm runs per round, in ``bench_rounds`` interleaved rounds (see
    # convert_and_bench).  2000 runs are 0.2 s of a 0.1 ms student: 200 (what earlier runs used) were 20 ms, shorter
    # than one slow spell of this VM, and its p50 moved 0.078-0.172 ms between five rounds of one session.
    bench_runs: int = 2000
    bench_rounds: int = 9
    # The teacher answers with the mean of its logits on the image and its mirror (models.teacher.FlipAveraged).
    teacher_flip_average: bool = True
    # ... and of its members' logits: vgg networks trained from seeds 0..n-1, concurrently (models.teacher.Ensemble).
    teacher_members: int = 2
    # Train the members on the training *and* validation splits (60K images, not 54K) for a fixed schedule, keeping
    # the last epoch: nothing about the teacher is chosen on validation, so it can learn from those images too.  The
    # students never see them (the view bank holds training images only), so their validation choices stay honest;
    # the teacher's validation accuracy is then in-sample and reported as such.  Measured (16 epochs on 60K, the
    # same 38 min): members 0.9334 and 0.9359 (+0.30 on average over 18 epochs on 54K), but the flip-averaged
    # ensemble stayed at 0.9379, so the suite keeps the held-out split; see BENCHMARKS.md.
    teacher_trains_on_val: bool = False


# Sized for <= 2 hours on 2 cores: the two teacher members train at once on one thread each (~125 s per epoch
# each, measured: 18 epochs in ~38 min, inside the 40); the 12 student runs of 14 epochs ~65 min two
# at a time (--jobs 2).  A single 2-thread teacher did 22 epochs in 33 min: test 0.9347, 0.9367 flip-averaged.
FULL = Plan(teacher_epochs=18, student_epochs=14, seeds=(0, 1, 2), views=4)
# Every step in 10.6 min from cold (measured with the 3 timing rounds): two 2-epoch members took 4.6 min and the
# 4-pass view bank 3.5 min, so one epoch per member and two seeds (mean ± std still computed) keep it under 15.
QUICK = Plan(teacher_epochs=1, student_epochs=1, seeds=(0, 1), views=2, bench_runs=500, bench_rounds=3)
TIMING_FIELDS = ("bench_runs", "bench_rounds")


def training_settings(plan: Plan) -> dict:
    """The plan without its timing fields: what a trained student depends on, hence its cache key."""
    return {k: v for k, v in asdict(plan).items() if k not in TIMING_FIELDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every step with fewer epochs (<= 15 minutes)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-fashion-mnist", help="cache directory")
    parser.add_argument("--threads", type=int, default=2, help="threads for training the teacher and for every latency measurement")
    parser.add_argument("--jobs", type=int, default=2,
                        help="student runs trained at once, each in its own process with --threads/--jobs torch threads "
                             "(measured: two 1-thread runs train 1.4x more students per hour than one 2-thread run)")
    parser.add_argument("--stop-after", choices=("teacher", "views", "students"), help="stop after this step")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else FULL
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    from edge_distill.data import prepare

    spec, splits = prepare("fashion-mnist", seed=0, calib_count=500)
    print(f"data: train {len(splits.y_train)}, val {len(splits.y_val)}, test {len(splits.y_test)} ({spec.source})", flush=True)

    member_jobs = max(1, min(args.jobs, plan.teacher_members))
    teacher, teacher_info = train_teacher(plan, spec, splits, args.work, member_jobs, max(1, args.threads // member_jobs))
    if args.stop_after == "teacher":
        return
    bank = view_bank(plan, teacher, splits, spec.background, args.work, args.threads)
    if args.stop_after == "views":
        return
    runs = train_students(plan, bank, args.work, args.jobs, max(1, args.threads // args.jobs))
    if args.stop_after == "students":
        return
    deployed = convert_and_bench(plan, spec, splits, teacher, runs, args.work, args.threads)
    summary = summarize(plan, spec, teacher_info, runs, deployed, args, time.perf_counter() - started)
    write_results("fashion_mnist_quick" if args.quick else "fashion_mnist", summary)
    if not args.quick:
        replace_section("fashion-mnist", markdown(summary))
    print(json.dumps(summary["targets"], indent=2))


# --------------------------------------------------------------------------------------------- teacher


def train_teacher(plan: Plan, spec, splits, work: Path, jobs: int, threads: int):
    """The teacher: ``plan.teacher_members`` vgg networks (seeds 0, 1, ...) trained concurrently, ``jobs`` at a
    time in separate processes, averaged (``Ensemble``) and flip-averaged when the plan says so; and its record.
    Each member is cached by its settings and seed."""
    import torch

    from edge_distill.distill import accuracy
    from edge_distill.models.teacher import averaged_teacher, builtin_teacher

    seeds = list(range(plan.teacher_members))
    print(f"teacher: {plan.teacher_members} x vgg, {plan.teacher_epochs} epochs each, {jobs} at a time on {threads} thread(s) each", flush=True)
    records = run_in_processes(train_teacher_member, [(plan, work, seed, threads) for seed in seeds], jobs)
    members = []
    for seed, record in zip(seeds, records):
        torch.manual_seed(seed)
        member = builtin_teacher(spec, "vgg")
        member.load_state_dict(torch.load(work / record["weights"], weights_only=True))
        members.append(member.eval())
    width = spec.input_shape[-1]
    info = {
        "arch": "vgg", "members": len(members), "params": sum(r["params"] for r in records), "epochs": plan.teacher_epochs,
        "member_test_accuracy": [r["test_accuracy"] for r in records],
        # Members train concurrently: the teacher's wall time is the slowest member's when they all fit at once;
        # otherwise the members' total shared among the jobs (exact for --jobs 1, an estimate in between).
        "train_seconds": max(r["train_seconds"] for r in records) if jobs >= len(records) else sum(r["train_seconds"] for r in records) / jobs,
        "member_train_seconds": [r["train_seconds"] for r in records], "member_threads": threads,
        "single_test_accuracy": accuracy(averaged_teacher(members, False, width), splits.x_test, splits.y_test),
        "flip_average": plan.teacher_flip_average, "cached": all(r.get("cached", False) for r in records),
        "train_images": len(splits.y_train) + (len(splits.y_val) if plan.teacher_trains_on_val else 0),
        "val_in_sample": plan.teacher_trains_on_val,
    }
    model = averaged_teacher(members, plan.teacher_flip_average, width).eval()
    info["val_accuracy"] = accuracy(model, splits.x_val, splits.y_val)  # in-sample when the members trained on it
    info["test_accuracy"] = accuracy(model, splits.x_test, splits.y_test)
    print(f"teacher: test {info['test_accuracy']:.4f} (members {', '.join(f'{a:.4f}' for a in info['member_test_accuracy'])}; "
          f"averaged without the mirror {info['single_test_accuracy']:.4f}); {info['train_seconds'] / 60:.1f} min wall", flush=True)
    return model, info


def teacher_recipe(plan: Plan) -> tuple:
    """The settings a teacher member's weights depend on (besides its seed), for the member and view-bank cache keys."""
    recipe = ("vgg", plan.teacher_epochs, plan.batch_size, plan.teacher_lr, plan.shift, plan.flip)
    # Appended only when set, so the keys of teachers trained before the option existed stay valid.
    return recipe + ("train+val",) if plan.teacher_trains_on_val else recipe


def train_teacher_member(plan: Plan, work: Path, seed: int, threads: int) -> dict:
    """One vgg teacher member, trained (or read back from the cache) in this process; its record."""
    import torch

    from edge_distill.data import prepare
    from edge_distill.distill import KDConfig, TrainConfig, accuracy, train
    from edge_distill.models.cnn import count_params
    from edge_distill.models.teacher import builtin_teacher

    tag = hash_inputs("teacher", *teacher_recipe(plan), seed)
    weights, info_path = work / f"teacher-s{seed}-{tag}.pt", work / f"teacher-s{seed}-{tag}.json"
    if weights.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        print(f"teacher member {seed}: cached (test {info['test_accuracy']:.4f}, trained in {info['train_seconds']:.0f} s)", flush=True)
        return {**info, "cached": True}
    torch.set_num_threads(threads)
    spec, splits = prepare("fashion-mnist", seed=0, calib_count=500)
    torch.manual_seed(seed)
    model = builtin_teacher(spec, "vgg")
    cfg = TrainConfig(epochs=plan.teacher_epochs, batch_size=plan.batch_size, lr=plan.teacher_lr, seed=seed,
                      augment_shift=plan.shift, augment_flip=plan.flip, background=spec.background,
                      keep_last=plan.teacher_trains_on_val)
    x_fit, y_fit = splits.x_train, splits.y_train
    if plan.teacher_trains_on_val:
        x_fit, y_fit = np.concatenate([splits.x_train, splits.x_val]), np.concatenate([splits.y_train, splits.y_val])
    result = train(model, x_fit, y_fit, splits.x_val, splits.y_val, cfg, KDConfig(loss="ce"), None,
                   work / f"teacher-s{seed}-{tag}.ckpt", f"teacher {seed}")
    info = {
        "seed": seed, "params": count_params(model), "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
        "val_in_sample": plan.teacher_trains_on_val, "train_images": len(y_fit),
        "test_accuracy": accuracy(model, splits.x_test, splits.y_test), "train_seconds": result.seconds, "threads": threads,
        "weights": weights.name, "history": [asdict(h) for h in result.history],
    }
    torch.save(model.state_dict(), weights)
    info_path.write_text(json.dumps(info, indent=2))
    print(f"teacher member {seed}: val {info['val_accuracy']:.4f}, test {info['test_accuracy']:.4f} ({result.seconds:.0f} s)", flush=True)
    return info


def run_in_processes(fn, arg_tuples: list[tuple], jobs: int) -> list:
    """``fn(*args)`` for every tuple, ``jobs`` at a time in separate processes (in this one when jobs <= 1); results in order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs <= 1:
        return [fn(*args) for args in arg_tuples]
    # spawn, not fork: a forked child inherits the parent's torch thread pool in an undefined state.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *args) for args in arg_tuples]
        return [f.result() for f in futures]


# ------------------------------------------------------------------------------------------- view bank


def view_bank(plan: Plan, teacher, splits, background: float, work: Path, workers: int = 1) -> dict[str, Path]:
    """The teacher's outputs on ``plan.views`` views of every training image, cached as .npy files; their paths.
    ``workers`` one-thread processes run the teacher (the same bank for any number: not part of the cache key)."""
    from edge_distill.distill.views import build_view_bank

    t0 = time.perf_counter()
    paths = bank_paths(plan, work)
    if bank_cached(plan, work):
        print(f"view bank: cached ({plan.views} views)", flush=True)
        return paths
    bank = build_view_bank(teacher, splits.x_train, plan.views, plan.shift, plan.flip, background, seed=0, with_maps="maps" in paths,
                           workers=workers)
    save_arrays(paths, {"x": bank.x, "logits": bank.logits, "maps": bank.maps})
    seconds = time.perf_counter() - t0
    bank_record_path(plan, work).write_text(json.dumps({"seconds": round(seconds, 1), "workers": workers}))
    agree = float((bank.logits[0].argmax(1) == splits.y_train).mean())
    print(f"view bank: {plan.views} views x {bank.x.shape[1]} images in {seconds:.0f} s on {workers} process(es) "
          f"(teacher train-split accuracy on view 0: {agree:.4f})", flush=True)
    return paths


def bank_paths(plan: Plan, work: Path) -> dict[str, Path]:
    """The bank's array files (``maps`` only when a variant distils features), named by what the bank depends on."""
    needs_maps = any(v in ("fitnet", "attention") for v in plan.variants)
    tag = hash_inputs("bank", *teacher_recipe(plan), plan.views, needs_maps, plan.teacher_flip_average, plan.teacher_members)
    return {name: work / f"bank-{tag}-{name}.npy" for name in ("x", "logits", "maps") if name != "maps" or needs_maps}


def bank_cached(plan: Plan, work: Path) -> bool:
    return all(p.exists() for p in bank_paths(plan, work).values())


def bank_record_path(plan: Plan, work: Path) -> Path:
    x = bank_paths(plan, work)["x"]
    return x.with_name(x.name.replace("-x.npy", ".json"))


def bank_seconds(plan: Plan, work: Path) -> float | None:
    """How long the cached bank took to build, when that was recorded (banks built before the record have none)."""
    path = bank_record_path(plan, work)
    return json.loads(path.read_text())["seconds"] if path.exists() else None


def save_arrays(paths: dict[str, Path], arrays: dict[str, np.ndarray | None]) -> None:
    """Each array to its path, through a temporary file: an interrupted run never leaves a half-written cache entry."""
    for name, array in arrays.items():
        if array is not None:
            tmp = paths[name].with_suffix(".part.npy")
            np.save(tmp, array)
            os.replace(tmp, paths[name])


def load_bank(paths: dict[str, Path]):
    """The bank memory-mapped: parallel student processes share one copy in the page cache."""
    from edge_distill.distill.views import ViewBank

    maps = np.load(paths["maps"], mmap_mode="r") if "maps" in paths else None
    return ViewBank(np.load(paths["x"], mmap_mode="r"), np.load(paths["logits"], mmap_mode="r"), maps)


# -------------------------------------------------------------------------------------------- students


def student_config(plan: Plan):
    from edge_distill.models.students import StudentConfig

    return StudentConfig("vgg", plan.student_width, plan.student_depth)


def train_students(plan: Plan, bank_paths: dict[str, Path], work: Path, jobs: int, threads: int) -> list[dict]:
    """Every (variant, seed) run, ``jobs`` at a time in separate processes; cached runs are read back."""
    todo = [(plan, bank_paths, work, threads, variant, seed) for variant in plan.variants for seed in plan.seeds]
    return run_in_processes(train_one_student, todo, jobs)


def train_one_student(plan: Plan, bank_paths: dict[str, Path], work: Path, threads: int, variant: str, seed: int) -> dict:
    import torch

    from edge_distill.distill import KDConfig, accuracy
    from edge_distill.models.cnn import count_params

    beta = ATTENTION_BETA if variant == "attention" else plan.beta
    tag = hash_inputs("student", training_settings(plan), variant, seed, beta)
    weights, info_path = work / f"student-{variant}-s{seed}-{tag}.pt", work / f"student-{variant}-s{seed}-{tag}.json"
    if info_path.exists() and weights.exists():
        info = json.loads(info_path.read_text())
        print(f"student {variant} seed {seed}: cached (test {info['test_accuracy']:.4f})", flush=True)
        return {**info, "cached": True}
    kd = KDConfig(loss=variant, temperature=plan.temperature, alpha=plan.alpha, beta=beta)
    model, result, splits = fit_student(plan, load_bank(bank_paths), kd, seed, threads,
                                        work / f"student-{variant}-s{seed}-{tag}.ckpt", f"{variant} s{seed}")
    info = {
        "variant": variant, "seed": seed, "beta": beta if variant in ("fitnet", "attention") else None,
        "params": count_params(model), "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
        "test_accuracy": accuracy(model, splits.x_test, splits.y_test), "train_seconds": result.seconds,
        "threads": threads, "weights": weights.name,
    }
    torch.save(model.state_dict(), weights)
    info_path.write_text(json.dumps(info, indent=2))
    print(f"student {variant} seed {seed}: val {info['val_accuracy']:.4f}, test {info['test_accuracy']:.4f} "
          f"({result.seconds:.0f} s)", flush=True)
    return info


def fit_student(plan: Plan, views, kd, seed: int, threads: int, checkpoint: Path, desc: str):
    """The plan's student trained from a view bank with ``kd`` on ``threads`` threads; (model, TrainResult, splits)."""
    import torch

    from edge_distill.data import prepare
    from edge_distill.distill import TrainConfig, train
    from edge_distill.models.students import build_student

    torch.set_num_threads(threads)
    spec, splits = prepare("fashion-mnist", seed=0, calib_count=500)
    torch.manual_seed(seed)
    model = build_student(student_config(plan), spec)
    cfg = TrainConfig(epochs=plan.student_epochs, batch_size=plan.batch_size, lr=plan.student_lr, seed=seed)
    result = train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, cfg, kd, None, checkpoint, desc, views=views)
    return model, result, splits


# Attention transfer compares L2-normalised spatial maps, a term ~100x smaller than the KD loss; this
# weight brings it to the same order (Zagoruyko & Komodakis use 1000 on their un-averaged form).
ATTENTION_BETA = 100.0


# ------------------------------------------------------------------------------------ deploy and time


# Teacher and student are timed in interleaved rounds (bench.bench_in_rounds), not one after the other: on this
# VM the same student measured 0.121 ms p50 in one run and 0.091 ms in the next, which alone moved the speedup
# between 8.5x and 11.3x.  The reported p50 is the median over rounds, the speedup the median of the per-round
# ratios (teacher and student timed back to back).
def convert_and_bench(plan: Plan, spec, splits, teacher, runs: list[dict], work: Path, threads: int) -> dict:
    import torch

    from edge_distill.bench import bench_in_rounds
    from edge_distill.convert import convert_student
    from edge_distill.convert.runtimes import run_tflite
    from edge_distill.models.students import build_student
    from edge_distill.rundir import RunDir

    best = max(runs, key=lambda r: (r["val_accuracy"], r["variant"] != "ce"))  # chosen on validation, never test
    model = build_student(student_config(plan), spec)
    model.load_state_dict(torch.load(work / best["weights"], weights_only=True))
    model.eval()
    run = RunDir(work / "deploy")
    out: dict = {"best_run": {k: best[k] for k in ("variant", "seed", "val_accuracy", "test_accuracy")}}
    files: dict[str, Path] = {}
    for name, net in (("student", model), ("teacher", teacher)):
        print(f"convert: {name} -> ONNX -> TFLite fp32 + full INT8", flush=True)
        conv = convert_student(net, spec.input_shape, splits.x_calib, splits.x_val, run, subdir=name, check_y=splits.y_val,
                               variants=(), escalate=name == "student", layer_analysis=False, threads=threads)
        for variant in ("tflite_fp32", "tflite_int8"):
            path = files[f"{name}_{variant}"] = run.path(conv.file(variant).path)
            logits = run_tflite(path, splits.x_test, threads=threads)
            out[f"{name}_{variant}"] = {"test_accuracy": float((logits.argmax(1) == splits.y_test).mean()), "bytes": path.stat().st_size}
            print(f"{name} {variant}: test {out[f'{name}_{variant}']['test_accuracy']:.4f}, {path.stat().st_size / 1024:.1f} KiB", flush=True)
        if name == "student":
            out["student_gate"] = conv.deploy_variant
    timed = bench_in_rounds(list(files.values()), threads, plan.bench_rounds, warmup=20, runs=plan.bench_runs)
    for key, rounds in zip(files, timed):
        p50s = [r.p50_ms for r in rounds]
        out[key].update(p50_ms=float(np.median(p50s)), p50_ms_rounds=p50s, p90_ms=float(np.median([r.p90_ms for r in rounds])),
                        peak_rss_mb=max((r.peak_rss_mb or 0.0) for r in rounds) or None, where=rounds[0].where)
        print(f"{key}: p50 {out[key]['p50_ms']:.3f} ms (rounds {', '.join(f'{v:.3f}' for v in p50s)})", flush=True)
    ratios = [t / s for t, s in zip(out["teacher_tflite_fp32"]["p50_ms_rounds"], out["student_tflite_int8"]["p50_ms_rounds"])]
    out["speedup_rounds"] = [round(r, 2) for r in ratios]
    return out


# ------------------------------------------------------------------------------------------- summary


def summarize(plan: Plan, spec, teacher_info: dict, runs: list[dict], deployed: dict, args, seconds: float) -> dict:
    variants = {}
    for variant in plan.variants:
        accs = [r["test_accuracy"] for r in runs if r["variant"] == variant]
        variants[variant] = {"mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                             "runs": accs, "mean_train_seconds": float(np.mean([r["train_seconds"] for r in runs if r["variant"] == variant]))}
    kd_best = max((v for v in plan.variants if v != "ce"), key=lambda v: variants[v]["mean"])
    fp32, int8 = deployed["student_tflite_fp32"], deployed["student_tflite_int8"]
    speedup = float(np.median(deployed["speedup_rounds"]))  # teacher fp32 over INT8 student, timed back to back each round
    params = runs[0]["params"]
    targets = {
        "int8_student_accuracy": {"value": int8["test_accuracy"], "target": ">= 0.935", "met": int8["test_accuracy"] >= 0.935},
        "student_params": {"value": params, "target": "<= 100,000", "met": params <= 100_000},
        "kd_gain_points": {"value": round(100 * (variants[kd_best]["mean"] - variants["ce"]["mean"]), 3), "variant": kd_best,
                           "target": ">= +0.5 (mean of 3 seeds)", "met": variants[kd_best]["mean"] - variants["ce"]["mean"] >= 0.005},
        "int8_vs_fp32_points": {"value": round(100 * (int8["test_accuracy"] - fp32["test_accuracy"]), 3), "target": ">= -0.3",
                                "met": int8["test_accuracy"] - fp32["test_accuracy"] >= -0.003},
        "student_over_teacher": {"value": round(int8["test_accuracy"] / teacher_info["test_accuracy"], 4), "target": ">= 0.97",
                                 "met": int8["test_accuracy"] / teacher_info["test_accuracy"] >= 0.97},
        "latency_speedup_vs_teacher_fp32": {"value": round(speedup, 2), "rounds": deployed["speedup_rounds"], "target": ">= 10x",
                                            "met": speedup >= 10},
        "teacher_accuracy": {"value": teacher_info["test_accuracy"], "target": ">= 0.940 in <= 40 min",
                             "met": teacher_info["test_accuracy"] >= 0.94 and teacher_info["train_seconds"] <= 2400},
        "published_best_under_100k": PUBLISHED_BEST_UNDER_100K,
    }
    return {
        "mode": "quick" if args.quick else "full",
        "command": "benchmarks/fashion_mnist.py" + (" --quick" if args.quick else ""),
        "plan": asdict(plan), "attention_beta": ATTENTION_BETA,
        "machine": machine(), "threads": args.threads, "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(seconds, 1),
        # What this invocation read back instead of training: its wall time then covers only the rest.
        "cached": [name for name, hit in (("teacher", teacher_info["cached"]), ("students", all(r.get("cached", False) for r in runs))) if hit],
        "data": spec.source,
        "teacher": {k: teacher_info[k] for k in ("arch", "members", "params", "epochs", "val_accuracy", "test_accuracy",
                                                  "member_test_accuracy", "single_test_accuracy", "flip_average", "train_seconds",
                                                  "member_train_seconds", "member_threads", "train_images", "val_in_sample")},
        "student": {"config": student_config(plan).label(), "params": params},
        "variants": variants, "runs": [{k: v for k, v in r.items() if k != "cached"} for r in runs], "deployed": deployed,
        "targets": targets,
    }


def markdown(summary: dict) -> str:
    t, d, p = summary["teacher"], summary["deployed"], summary["plan"]
    rows = [
        "## Fashion-MNIST: distilled INT8 student vs teacher",
        "",
        f"Command: `.venv/bin/python {summary['command']}` ({summary['wall_seconds'] / 60:.0f} min wall"
        + (f"; {' and '.join(summary['cached'])} read from the cache of an earlier run of the same command, their training "
           f"times are that run's" if summary["cached"] else "")
        + "). Official 10,000-image "
        f"test split; choices on the 6,000-image validation split. Latency: p50 over {p['bench_runs']} warm runs by the "
        f"device agent in a separate process, {summary['threads']} threads, on {summary['machine']}; median over "
        f"{p['bench_rounds']} rounds, each timing the four files one after another (speedup: median of the per-round ratios, "
        f"rounds {summary['deployed']['speedup_rounds']}).",
        "",
        f"Teacher: {t['members']} built-in `vgg` networks (seeds 0..{t['members'] - 1}), {t['params']:,} params in all, "
        f"{t['epochs']} epochs each on {t['train_images']:,} images"
        + (" (the training and validation splits, keeping the last epoch: nothing about the teacher is chosen on "
           "validation, and its validation accuracy is in-sample)" if t["val_in_sample"] else "")
        + f" with shift±{p['shift']}+flip augmentation, trained at the same time on "
        f"{t['member_threads']} thread(s) each in {t['train_seconds'] / 60:.1f} min wall: **test {t['test_accuracy']:.4f}** "
        f"answering with the mean of the members' logits"
        + (" on the image and its mirror" if t.get("flip_average") else "")
        + f" (members alone {', '.join(f'{a:.4f}' for a in t['member_test_accuracy'])}; their mean without the mirror "
        f"{t['single_test_accuracy']:.4f}). Its TFLite files below include every pass.",
        "",
        f"Students: `{summary['student']['config']}`, {summary['student']['params']:,} params, {p['student_epochs']} epochs, "
        f"the same {p['views']} cached views per image for every variant (T={p['temperature']}, α={p['alpha']}, "
        f"β={p['beta']} fitnet / {summary['attention_beta']} attention), seeds {list(p['seeds'])}:",
        "",
        "| variant | test accuracy (mean ± std) | runs | train s/run |",
        "|---|---|---|---|",
    ]
    for name, v in summary["variants"].items():
        rows.append(f"| {name} | {v['mean']:.4f} ± {v['std']:.4f} | {', '.join(f'{a:.4f}' for a in v['runs'])} | {v['mean_train_seconds']:.0f} |")
    b = d["best_run"]
    rows += [
        "",
        f"Deployed: best run by validation accuracy = `{b['variant']}` seed {b['seed']}.",
        "",
        "| model | test accuracy | size | host p50 ms | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for name in ("teacher_tflite_fp32", "teacher_tflite_int8", "student_tflite_fp32", "student_tflite_int8"):
        m = d[name]
        rows.append(f"| {name.replace('_tflite_', ' TFLite ')} | {m['test_accuracy']:.4f} | {m['bytes'] / 1024:.1f} KiB | "
                    f"{m['p50_ms']:.3f} | {m['peak_rss_mb'] or 0:.0f} |")
    rows += ["", "| target | value | bar | met |", "|---|---|---|---|"]
    for name, tgt in summary["targets"].items():
        if isinstance(tgt, dict):
            rows.append(f"| {name} | {tgt['value']} | {tgt['target']} | {'yes' if tgt['met'] else '**no**'} |")
    rows += ["", f"Published best under 100K parameters (fp32, Fashion-MNIST README): {PUBLISHED_BEST_UNDER_100K}."]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
