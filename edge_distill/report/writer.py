"""Collects every stage's result into report.json and renders report.md from it.

The markdown is rendered from the JSON dict alone, so ``report.md`` can never show a number that
``report.json`` does not hold.
"""

from __future__ import annotations

import time
from typing import Any

from ..rundir import RunDir
from ..serde import to_jsonable


def write_report(run: RunDir, *, options, profile, data, teacher, sizing, baseline, student, conversion, verified, bench, times, total_seconds) -> dict[str, Any]:
    from ..pipeline import tool_versions

    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run.root),
        "options": to_jsonable(options),
        "tools": tool_versions(),
        "profile": to_jsonable(profile),
        "data": to_jsonable(data),
        "teacher": to_jsonable(teacher),
        "sizing": to_jsonable(sizing),
        "students": {"baseline": to_jsonable(baseline), "kd": to_jsonable(student)},
        "conversion": to_jsonable(conversion),
        "ledger": to_jsonable(verified),
        "bench": to_jsonable(bench),
        "stage_times": to_jsonable(times),
        "total_seconds": round(total_seconds, 3),
    }
    run.write_json("report.json", report)
    run.write_text("report.md", render_markdown(report))
    return report


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _proxy_table(trials: list[dict[str, Any]]) -> str:
    if not trials:
        return ""
    rows = [
        [f"{t['config']['family']}(w={t['config']['width']}, d={t['config']['depth']}, r={t['config'].get('resolution') or 'full'})",
         f"{t['params']:,}", t["epochs"], _pct(t["val_accuracy"]), f"{t['seconds']:.1f}"]
        for t in trials
    ]
    return "Proxy search (brief hard-label training, validation split):\n\n" + _table(["candidate", "params", "epochs", "val accuracy", "seconds"], rows) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def render_markdown(r: dict[str, Any]) -> str:
    p, d, led, bench = r["profile"], r["data"], r["ledger"], r["bench"]
    out = [
        f"# edge-distill report: {d['spec']['name']} for {p['name']}",
        "",
        f"Profile **{p['name']}**: {p['description']}. Budgets: ≤ {p['budget']['max_params']:,} params, "
        f"≤ {p['budget']['model_bytes']:,} B model, ≤ {p['budget']['arena_bytes']:,} B arena, "
        f"≤ {p['budget']['latency_ms']} ms p50 (throughput figures: {p['throughput']['source']}).",
        "",
        f"Data **{d['spec']['name']}** ({d['spec']['source']}): {d['n_train']} train / {d['n_val']} val / "
        f"{d['n_test']} test / {d['n_calib']} calibration (from the training split). All accuracies below are on the "
        f"{d['n_test']} held-out test samples.",
        "",
        "## Accuracy ledger",
        "",
        _table(
            ["model", "runtime", "test accuracy", "agreement with fp32 student", "file bytes", "params", "precision"],
            [
                [row["name"], row["runtime"], _pct(row["accuracy"]), _pct(row["agreement"]),
                 "-" if row["bytes"] is None else f"{row['bytes']:,}", f"{row['params']:,}", row["precision"]]
                for row in led["rows"]
            ],
        ),
        "",
        f"INT8 quality gate: the full-INT8 file lost **{led['int8_drop_points']:.2f}** points against the fp32 student "
        f"(allowed {led['max_int8_drop']:.2f}): **{'passed' if led['passed'] else 'FAILED'}**.",
        "",
        "## Conversion checks (each hop against the one before)",
        "",
        _table(
            ["hop", "max abs diff (logits)", "tolerance", "top-1 agreement", "samples", "passed"],
            [[c["hop"], f"{c['max_abs_diff']:.3g}", f"{c['tolerance']:.3g}", _pct(c["top1_agreement"]), c["n_samples"], c["passed"]]
             for c in r["conversion"]["checks"]],
        ),
        "",
        "## Latency and memory",
        "",
        f"Measured by the device-side agent in a separate process ({bench['results'][0]['runner'] if bench['results'] else '-'} runner) on: "
        f"**{bench['host']}**. These are **host** timings unless the runner is a device; they do not describe {p['name']}.",
        "",
        _table(
            ["model", "runtime", "threads", "delegate", "load ms", "p50 ms", "p90 ms", "p99 ms", "peak RSS MB", "on-agent accuracy", "measured where"],
            [
                [label, f"{b['runtime']} {b['runtime_version']}", b["threads"], b["delegate"], f"{b['load_ms']:.2f}",
                 f"{b['p50_ms']:.4f}", f"{b['p90_ms']:.4f}", f"{b['p99_ms']:.4f}", f"{b['peak_rss_mb']:.1f}",
                 _pct(b["accuracy"]), b["where"]]
                for label, b in zip(bench["labels"], bench["results"])
            ],
        ),
        "",
        "## Student sizing",
        "",
        r["sizing"]["reason"],
        "",
        _proxy_table(r["sizing"].get("proxy") or []),
        _table(
            ["candidate", "params", "model bytes", "MACs", "arena bytes", f"est. latency on {p['name']} ms", "fits", "why not"],
            [
                [c["config"]["family"] + f"(w={c['config']['width']}, d={c['config']['depth']})", f"{c['cost']['params']:,}",
                 f"{c['cost']['model_bytes']:,}", f"{c['cost']['macs']:,}", f"{c['cost']['arena_bytes']:,}",
                 f"{c['cost']['latency_ms']:.3f}", "yes" if c["fits"] else "no", "; ".join(c["violations"])]
                for c in r["sizing"]["candidates"]
            ],
        ),
        "",
        "## Teacher and students",
        "",
        _table(
            ["model", "params", "val accuracy", "test accuracy", "training"],
            [
                ["teacher " + r["teacher"]["source"], f"{r['teacher']['params']:,}", _pct(r["teacher"]["val_accuracy"]), _pct(r["teacher"]["test_accuracy"]), ""],
                [f"student, no KD: {r['students']['baseline']['label']}", f"{r['students']['baseline']['params']:,}",
                 _pct(r["students"]["baseline"]["val_accuracy"]), _pct(r["students"]["baseline"]["test_accuracy"]), "hard labels"],
                [f"student, KD: {r['students']['kd']['label']}", f"{r['students']['kd']['params']:,}",
                 _pct(r["students"]["kd"]["val_accuracy"]), _pct(r["students"]["kd"]["test_accuracy"]),
                 f"{r['options']['kd_loss']} KD, T={r['options']['temperature']}, alpha={r['options']['alpha']}"],
            ],
        ),
        "",
        "## Stage times (this invocation)",
        "",
        _table(
            ["stage", "seconds", "reused", "seconds when computed"],
            [[t["stage"], f"{t['seconds']:.2f}", "yes" if t["reused"] else "no", f"{t['original_seconds']:.2f}"] for t in r["stage_times"]],
        ),
        "",
        f"Total: {r['total_seconds']:.1f} s. Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items()) + ".",
        "",
    ]
    return "\n".join(out)
