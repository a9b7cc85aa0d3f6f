"""Cost-model check on the host: estimated vs measured INT8 latency for sizing candidates.

    .venv/bin/python benchmarks/cost_model_host.py [--profile host] [--runs 1000] [--quick]

The host profile's throughput comes from ``edge-distill profiles calibrate`` (fitted on a ladder of
plain-CNN probes).  This suite times *other* models — the sizing candidates of both student families on
the digits (8x8) and Fashion-MNIST (28x28) input shapes — so the ±30% bar is checked out of sample.
Each candidate is converted to full-INT8 TFLite (random calibration data: timing only) and timed by the
device agent in a separate process.  Writes results/cost_model_host.json and a BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="host")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a few candidates only")
    # 9, not 5: on the 2-vCPU build VM two 5-round runs put the same 6 µs model at +30.0% and -11% (70/71 and
    # 66/71 within the bar); the 9-round median was the first to hold every candidate (71/71, max |error| 23%).
    parser.add_argument("--repeats", type=int, default=9, help="agent processes per candidate; the median p50 is compared")
    args = parser.parse_args()

    import torch

    from edge_distill.bench import bench_model
    from edge_distill.profiles.rates import median_p50s
    from edge_distill.convert import convert_student
    from edge_distill.data import DataSpec
    from edge_distill.models.students import STUDENT_FAMILIES, build_student, family_names
    from edge_distill.profiles import load_profile
    from edge_distill.rundir import RunDir
    from edge_distill.sizing import measure_cost

    profile = load_profile(args.profile)
    threads = min(profile.threads, os.cpu_count() or 1)
    specs = [
        DataSpec("digits-shape", "vision", (1, 8, 8), 10, tuple("0123456789"), 16.0, 0.0, 1.0, "shape only"),
        DataSpec("fashion-shape", "vision", (1, 28, 28), 10, tuple("0123456789"), 255.0, 0.0, 1.0, "shape only"),
    ]
    rows, paths = [], []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="cost-model-") as tmp:
        run = RunDir(Path(tmp))
        for spec in specs:
            for family in family_names("vision"):
                candidates = STUDENT_FAMILIES.get(family).candidates(spec)
                step = 6 if args.quick else 3  # every third candidate keeps the suite under ~10 minutes
                for config in candidates[::step]:
                    torch.manual_seed(0)
                    model = build_student(config, spec).eval()
                    cost = measure_cost(model, spec, profile)
                    x = rng.standard_normal((48, *spec.input_shape)).astype(np.float32)
                    sub = f"{spec.name}/{config.family}-w{config.width}-d{config.depth}-r{config.resolution}"
                    conv = convert_student(model, spec.input_shape, x[:32], x[32:], run, subdir=sub, int8_min_agreement=0.01,
                                           escalate=False, variants=(), layer_analysis=False)
                    rows.append({
                        "input": spec.name, "candidate": config.label(), "params": cost.params, "macs": cost.macs,
                        "n_ops": cost.n_ops, "dw_macs": cost.dw_macs, "conv_positions": cost.conv_positions, "act_elems": cost.act_elems,
                        "estimated_ms": cost.latency_ms,
                    })
                    paths.append(run.path(conv.file("tflite_int8").path))
        # Timed in rounds over all candidates (see median_p50s): a slow spell of the host cannot own one candidate.
        for row, p50 in zip(rows, median_p50s(paths, threads, args.runs, args.repeats)):
            err = row["estimated_ms"] / p50 - 1
            row.update(measured_p50_ms=p50, relative_error=round(err, 4), within_bar=abs(err) <= BAR)
            print(f"{row['input']:<14} {row['candidate']:<46} est {row['estimated_ms']:8.4f} ms  measured {p50:8.4f} ms  {100 * err:+6.1f}%", flush=True)
        where = bench_model(paths[-1], threads, warmup=2, runs=2).where  # how the agent describes this machine

    within = sum(r["within_bar"] for r in rows)
    summary = {
        "profile": args.profile,
        "throughput": dataclasses.asdict(profile.throughput),  # every term, the int8 overheads the estimates used included
        "threads": threads,
        "runs": args.runs,
        "repeats": args.repeats,
        "machine": machine(),
        "where": where,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "within_30pct": f"{within}/{len(rows)}",
        "median_abs_error": float(np.median([abs(r["relative_error"]) for r in rows])),
        "rows": rows,
    }
    if not args.quick:
        write_results("cost_model_host", summary)
        table = ["| input | candidate | params | MACs | estimated ms | measured p50 ms | error |", "|---|---|---|---|---|---|---|"]
        table += [f"| {r['input']} | {r['candidate']} | {r['params']:,} | {r['macs']:,} | {r['estimated_ms']:.4f} | "
                  f"{r['measured_p50_ms']:.4f} | {100 * r['relative_error']:+.0f}% |" for r in rows]
        replace_section("cost-model", "\n".join([
            "## Cost model: estimated vs measured INT8 latency on the host",
            "",
            f"Command: `.venv/bin/python benchmarks/cost_model_host.py`. Profile `{args.profile}` "
            f"({profile.throughput.source}); {threads} threads; median over {args.repeats} rounds (one agent process per candidate "
            f"per round, all candidates in every round) of the p50 over {args.runs} warm runs "
            f"on {summary['machine']}.",
            "",
            f"**{within}/{len(rows)} candidates within ±30%**; median |error| {100 * summary['median_abs_error']:.0f}%.",
            "",
            *table,
        ]))
    print(f"within ±30%: {within}/{len(rows)}; median |error| {100 * summary['median_abs_error']:.1f}%")


if __name__ == "__main__":
    main()
