"""The ``edge-distill`` command: parses arguments, calls one library function per command, maps errors.

Kept thin on purpose: no heavy imports at module level, so ``edge-distill --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .versions import __version__
from .errors import EdgeDistillError


def add_build_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per BuildOptions field, named after it (``teacher_views`` → ``--teacher-views``), with its help and choices."""
    from .options import flag_name, option_choices, option_fields, option_help

    for f in option_fields():
        if isinstance(f.default, bool):
            parser.add_argument(f"--{flag_name(f)}", dest=f.name, action="store_true", help=option_help(f))
            continue
        shown = "" if f.default is None else f" (default: {f.default})"
        parser.add_argument(f"--{flag_name(f)}", dest=f.name, default=f.default, type=str if f.default is None else type(f.default),
                            choices=option_choices(f), help=option_help(f) + shown)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-distill", description="Distil, convert, verify and benchmark a device-sized student.")
    parser.add_argument("--version", action="version", version=f"edge-distill {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="run the whole pipeline for a device profile")
    add_build_flags(b)

    p = sub.add_parser("profiles", help="list or show device profiles")
    psub = p.add_subparsers(dest="profiles_command", required=True)
    psub.add_parser("list", help="list the built-in profiles")
    show = psub.add_parser("show", help="show one profile (name or .toml path)")
    show.add_argument("name")
    # "measure", not "calibrate": calibration is INT8 calibration everywhere else in the tool (the old name still works).
    cal = psub.add_parser("measure", aliases=["calibrate"], help="measure this machine's TFLite rates and write a profile with them")
    cal.add_argument("--base", default="host", help="profile whose budgets and CPU facts to keep (default: host)")
    cal.add_argument("--threads", type=int, help="threads (default: the profile's, capped at this machine's cores)")
    cal.add_argument("--runs", type=int, default=1000, help="timed runs per probe process (sub-0.1 ms probes need ~1000 for a stable p50)")
    cal.add_argument("--repeats", type=int, default=5, help="agent processes per probe model; the median p50 is used")
    cal.add_argument("--out", default="runs/measure", help="run directory for probe models and the profile (default: runs/measure)")

    bench = sub.add_parser("bench", help="benchmark a .tflite or .onnx file in a separate process")
    bench.add_argument("model")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--warmup", type=int, default=20)
    bench.add_argument("--runs", type=int, default=200)
    bench.add_argument("--npz", help="test data (.npz with x in the model's input layout, y labels) for on-agent accuracy")
    bench.add_argument("--no-xnnpack", action="store_true", help="time LiteRT's reference kernels instead of its default XNNPACK delegate")
    bench.add_argument("--runner", default="local", help="where benchmarks run: local, qemu-arm64 (emulated arm64; see `runner setup`), ssh://user@host[:port], adb[://SERIAL]")

    fid = sub.add_parser("fidelity", help="score a .tflite file under each TFLite runtime set up here x each kernel mode (the fidelity matrix)")
    fid.add_argument("model", help="a .tflite file, e.g. a build's student/student_int8.tflite")
    fid.add_argument("--npz", required=True, help="test data: x in the model's input layout, y integer labels (e.g. a build's bench/test_nhwc.npz)")
    fid.add_argument("--runtimes", help="comma-separated: converter (this environment's LiteRT), litert==2.3.0, tflite-runtime==2.14.0 "
                                        "(after `runner setup`), qemu-arm64, ssh://user@host, adb (default: converter and every one set up here)")
    fid.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    fid.add_argument("--root", help="the device runtimes' venv cache, as given to `runner setup --root` "
                                    "(default: $EDGE_DISTILL_RUNTIME_CACHE or ~/.cache/edge-distill/runtimes)")
    fid.add_argument("--json", action="store_true", help="print the matrix as JSON (the verdict line goes to stderr)")

    runner = sub.add_parser("runner", help="prepare a bench runner (the qemu-arm64 emulator root) or a device runtime (litert==2.3.0, tflite-runtime==2.14.0)")
    rsub = runner.add_subparsers(dest="runner_command", required=True)
    setup = rsub.add_parser("setup", help="one-time setup: qemu-arm64 builds an arm64 Debian root; litert==2.3.0 or tflite-runtime==2.14.0 "
                                          "installs that TFLite runtime in its own venv (for `fidelity` and the build's fidelity matrix)")
    setup.add_argument("name", help="qemu-arm64, litert==2.3.0 or tflite-runtime==2.14.0")
    setup.add_argument("--root", help="where to keep it (qemu-arm64: default $EDGE_DISTILL_QEMU_ROOT or ~/.cache/edge-distill/qemu-arm64; "
                                      "device runtimes: the venv cache, default $EDGE_DISTILL_RUNTIME_CACHE or ~/.cache/edge-distill/runtimes)")
    setup.add_argument("--suite", default="bookworm", help="qemu-arm64: Debian release (default: bookworm, Python 3.11)")
    setup.add_argument("--mirror", default="http://deb.debian.org/debian", help="qemu-arm64: Debian mirror")
    setup.add_argument("--force", action="store_true", help="rebuild it even if it is already set up")

    rep = sub.add_parser("report", help="redraw report.md and report.html of a run directory from its report.json")
    rep.add_argument("run_dir", help="the build's run directory (its --out, default runs/<profile>)")

    ins = sub.add_parser("inspect", help="ops, dtypes, quantization parameters, size and MACs of a .tflite or .onnx file")
    ins.add_argument("model", help="a .tflite or .onnx file")
    ins.add_argument("--json", action="store_true", help="print everything as JSON")
    return parser


def _cmd_build(args: argparse.Namespace) -> int:
    from .api import build
    from .options import option_fields

    report = build(**{f.name: getattr(args, f.name) for f in option_fields()}).report
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
    if args.profiles_command in ("measure", "calibrate"):
        return _measure_rates(args)
    print(json.dumps(to_jsonable(load_profile(args.name)), indent=2))
    return 0


def _measure_rates(args: argparse.Namespace) -> int:
    from .profiles.rates import measure_rates, write_profile
    from .profiles import load_profile
    from .rundir import RunDir

    base = load_profile(args.base)
    run = RunDir(Path(args.out))
    cal = measure_rates(run, base, args.threads, args.runs, args.repeats)
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
    from .api import bench
    from .serde import to_jsonable

    result = bench(args.model, args.runner, threads=args.threads, warmup=args.warmup, runs=args.runs, data=args.npz, xnnpack=not args.no_xnnpack)
    print(json.dumps(to_jsonable(result), indent=2))
    return 0


def _cmd_fidelity(args: argparse.Namespace) -> int:
    from .bench.fidelity_matrix import divergence_verdict, fidelity_matrix, format_matrix
    from .errors import BenchError
    from .serde import to_jsonable

    runtimes = [r for r in (args.runtimes or "").split(",") if r.strip()] or None
    # stdout carries only the answer (table or JSON), so progress goes to stderr.
    matrix = fidelity_matrix(Path(args.model), Path(args.npz), runtimes, args.threads, cache_root=args.root,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    if len(matrix.failed) == len(matrix.cells):  # nothing to compare: a broken file or no runtime here, not a finding
        raise BenchError(f"No cell of the matrix ran; {matrix.cells[0].runtime} / {matrix.cells[0].kernels}: "
                         f"{matrix.cells[0].error}")
    print(json.dumps(to_jsonable(matrix), indent=2) if args.json else format_matrix(matrix))
    # Divergence is a finding about the runtimes, not a failure of the command: exit 0, and say it last.
    print(f"{len(matrix.divergent)} of {len(matrix.cells)} cells divergent, {len(matrix.failed)} could not run. "
          f"{divergence_verdict(matrix)}", file=sys.stderr if args.json else sys.stdout)
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
    from .inspection import format_inspection, inspect_model
    from .serde import to_jsonable

    info = inspect_model(args.model)
    if args.json:
        print(json.dumps({**to_jsonable(info), "params": info.params, "macs": info.macs, "op_counts": info.op_counts(), "dtypes": info.dtypes()}, indent=2))
    else:
        print(format_inspection(info))
    return 0


COMMANDS = {"build": _cmd_build, "profiles": _cmd_profiles, "bench": _cmd_bench, "report": _cmd_report, "inspect": _cmd_inspect, "runner": _cmd_runner,
            "fidelity": _cmd_fidelity}


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
