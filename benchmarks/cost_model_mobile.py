"""Cost-model check for the mobile families at device resolutions: estimated vs measured host INT8 latency.

    .venv/bin/python benchmarks/cost_model_mobile.py [--profile host] [--runs 200] [--repeats 5] [--quick]

The host profile's rates were fitted on plain and depthwise-separable CNN probes at 8-32 px (`edge-distill profiles
calibrate`); this suite times networks the fit never saw — MobileNetV2, MobileNetV3-Small and EfficientNet-Lite0 at
several width multipliers, depths and 96-224 px inputs (3 channels, 2 classes) — so the ±30 % bar is checked out of
sample, at the scale photos run at.  Each is converted to full-INT8 TFLite through the build's own path (random
calibration data: timing only) and timed by the device agent in a separate process, in rounds over every candidate
(`median_p50s`), the median p50 compared.

Emulated ARM (`qemu-arm64`): not compared.  Timings under user-mode emulation measure the emulator, not a Cortex-A
core (XNNPACK's kernels are translated instruction by instruction), so an rpi4 estimate cannot be checked there.

Writes results/cost_model_mobile.json (with a `targets` dict) and a BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, replace_section, write_results  # noqa: E402

BAR = 0.30
TARGET_SHARE = 1.0  # every configuration within the bar, as the host suite's 71/71
# (family, width %, depth %, input side): each family at four resolutions, a narrow-full-depth and a wide-shallow
# network at each, so width, depth and resolution all move.
CONFIGS = tuple(
    (family, width, depth, side)
    for family in ("mobilenetv2", "mobilenetv3", "efficientnet-lite")
    for side in (96, 128, 160, 224)
    for width, depth in ((35, 100), (75, 75))
)
QUICK = tuple(c for c in CONFIGS if c[3] in (96, 224) and c[1] == 35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="host")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="agent processes per candidate; the median p50 is compared")
    parser.add_argument("--quick", action="store_true", help="6 configurations, results not written")
    parser.add_argument("--work", default=None, help="keep the converted files here and reuse them on a rerun (default: a temporary folder)")
    args = parser.parse_args()

    import torch

    from edge_distill.bench import bench_model
    from edge_distill.profiles.rates import median_p50s
    from edge_distill.convert import convert_student
    from edge_distill.data import DataSpec
    from edge_distill.models.students import build_student
    from edge_distill.models.student_config import StudentConfig
    from edge_distill.profiles import load_profile
    from edge_distill.rundir import RunDir
    from edge_distill.sizing import measure_cost

    profile = load_profile(args.profile)
    threads = min(profile.threads, os.cpu_count() or 1)
    rows, paths = [], []
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with (contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory(prefix="cost-model-mobile-")) as tmp:
        run = RunDir(Path(tmp))
        for family, width, depth, side in QUICK if args.quick else CONFIGS:
            spec = DataSpec(f"photo-{side}", "vision", (3, side, side), 2, ("a", "b"), 255.0, 0.0, 1.0, "shape only")
            config = StudentConfig(family, width, depth)
            torch.manual_seed(0)
            model = build_student(config, spec).eval()
            cost = measure_cost(model, spec, profile)
            x = rng.standard_normal((48, *spec.input_shape)).astype(np.float32)
            sub = f"{family}-w{width}-d{depth}-{side}"
            int8 = run.path(f"{sub}/student_int8.tflite")
            if not int8.exists():  # --work: converted by an earlier run of the same configuration
                convert_student(model, spec.input_shape, x[:32], x[32:], run, subdir=sub, int8_min_agreement=0.01, escalate=False,
                                variants=(), layer_analysis=False)
            rows.append({
                "input": f"{side}x{side}x3", "candidate": config.label(), "params": cost.params, "macs": cost.macs,
                "n_ops": cost.n_ops, "dw_macs": cost.dw_macs, "conv_positions": cost.conv_positions, "act_elems": cost.act_elems,
                "arena_bytes": cost.arena_bytes, "model_bytes_estimated": cost.model_bytes,
                "model_bytes_measured": int8.stat().st_size, "estimated_ms": cost.latency_ms,
            })
            paths.append(int8)
        convert_s = time.perf_counter() - started
        for row, p50 in zip(rows, median_p50s(paths, threads, args.runs, args.repeats)):
            err = row["estimated_ms"] / p50 - 1
            row.update(measured_p50_ms=p50, relative_error=round(err, 4), within_bar=abs(err) <= BAR)
            print(f"{row['input']:<10} {row['candidate']:<52} est {row['estimated_ms']:8.3f} ms  measured {p50:8.3f} ms  "
                  f"{100 * err:+6.1f}%", flush=True)
        where = bench_model(paths[-1], threads, warmup=2, runs=2).where

    within = sum(r["within_bar"] for r in rows)
    size_errors = [r["model_bytes_estimated"] / r["model_bytes_measured"] - 1 for r in rows]
    summary = {
        "profile": args.profile,
        "throughput": dataclasses.asdict(profile.throughput),
        "threads": threads, "runs": args.runs, "repeats": args.repeats,
        "machine": machine(), "where": where,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.perf_counter() - started, 1), "convert_s": round(convert_s, 1),
        "within_30pct": f"{within}/{len(rows)}",
        "median_abs_error": float(np.median([abs(r["relative_error"]) for r in rows])),
        "max_abs_model_bytes_error": float(max(abs(e) for e in size_errors)),
        "targets": {
            "configurations": {"value": len(rows), "target": 20, "met": len(rows) >= 20},
            "share_within_30pct": {"value": round(within / len(rows), 4), "target": TARGET_SHARE, "met": within / len(rows) >= TARGET_SHARE},
        },
        "emulated_arm": "not compared: user-mode qemu timings measure the emulator, not a Cortex-A core",
        "rows": rows,
    }
    print(f"within ±30%: {within}/{len(rows)}; median |error| {100 * summary['median_abs_error']:.1f}%; "
          f"model bytes within {100 * summary['max_abs_model_bytes_error']:.0f}%")
    if args.quick:
        return
    write_results("cost_model_mobile", summary)
    replace_section("cost-model-mobile", render(summary, profile.throughput.source))


def by_family(rows: list[dict]) -> list[str]:
    """One line per family: how many within the bar and the median signed error (the sign says which way it is off)."""
    lines = []
    for family in dict.fromkeys(r["candidate"].split("(")[0] for r in rows):
        mine = [r for r in rows if r["candidate"].startswith(family + "(")]
        errors = [r["relative_error"] for r in mine]
        lines.append(f"- `{family}`: {sum(r['within_bar'] for r in mine)}/{len(mine)} within ±30%, median error "
                     f"{100 * float(np.median(errors)):+.0f}% (range {100 * min(errors):+.0f}% to {100 * max(errors):+.0f}%)")
    return lines


def render(summary: dict, source: str) -> str:
    rows = summary["rows"]
    table = ["| input | candidate | params | MACs | ops | est. bytes / file bytes | estimated ms | measured p50 ms | error |",
             "|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['input']} | {r['candidate']} | {r['params']:,} | {r['macs']:,} | {r['n_ops']} | "
              f"{r['model_bytes_estimated']:,} / {r['model_bytes_measured']:,} | {r['estimated_ms']:.3f} | "
              f"{r['measured_p50_ms']:.3f} | {100 * r['relative_error']:+.0f}% |" for r in rows]
    return "\n".join([
        "## Cost model at photo scale: the mobile families, estimated vs measured INT8 latency on the host",
        "",
        f"Command: `.venv/bin/python benchmarks/cost_model_mobile.py`. Profile `{summary['profile']}` ({source}); "
        f"{summary['threads']} threads; median over {summary['repeats']} rounds (one agent process per candidate per round) of the "
        f"p50 over {summary['runs']} warm runs on {summary['machine']}, {summary['generated_at']}. Host timings, not device timings. "
        f"Emulated ARM: {summary['emulated_arm']}.",
        "",
        f"**{summary['within_30pct']} configurations within ±30%** (target: all); median |error| "
        f"{100 * summary['median_abs_error']:.0f}%; estimated file size within {100 * summary['max_abs_model_bytes_error']:.0f}% "
        f"of the written file. Wall {summary['wall_s'] / 60:.1f} min.",
        "",
        *by_family(rows),
        "",
        *table,
    ])


if __name__ == "__main__":
    main()
