"""report.html's section for the INT8 quality gate: verdict, calibration, escalation attempts, per-layer error.

Registered with ``html.section`` from here (imported by ``writer.write_renderings`` before rendering), so
the data the convert and verify stages add lives next to the code that presents it.  Reads only the report
dict, like every section; an older report without these keys gets no section.
"""

from __future__ import annotations

from typing import Any

from .html import e, nbytes, num, pct, section, table, where


def _drop(points: Any) -> str:
    return "–" if points is None else f"{points:.2f}"


@section("int8-gate", "INT8 quality gate: escalation and per-layer error")
def _int8_gate(r: dict[str, Any]) -> str | None:
    from ..convert.results import reference_kernels_note

    conv, led = r.get("conversion") or {}, r.get("ledger") or {}
    attempts = [a for a in conv.get("attempts") or [] if isinstance(a, dict)]
    layers = [x for x in conv.get("layer_errors") or [] if isinstance(x, dict)]
    if not attempts and not layers:
        return None
    parts = []
    ships, ok = led.get("gated_variant"), led.get("passed")
    if ships:
        plain = "" if ships == "tflite_int8" else f" Plain full INT8 lost {_drop(led.get('int8_drop_points'))} points, so the gate escalated."
        verdict = (f"<b>{e(ships)}</b> ships: it lost <b>{_drop(led.get('gated_drop_points'))}</b> points against the fp32 student "
                   f"on the test split (allowed {num(led.get('max_int8_drop'))}): <b>{'passed' if ok else 'FAILED'}</b>.{e(plain)}")
    else:
        verdict = (f"<b>No quantized model met the gate</b> (allowed {num(led.get('max_int8_drop'))} points): the build failed "
                   "rather than ship a collapsed model.")
    parts.append(f'<p class="{"pass" if ok else "fail"}">{verdict}</p>')

    cal = conv.get("calibration")
    if isinstance(cal, dict):
        balance = f", {cal.get('classes')} classes ({cal.get('per_class_min')}–{cal.get('per_class_max')} each)" if cal.get("classes") else ""
        parts.append(
            f"<p>Calibration: {e(cal.get('count'))} training-split samples{e(balance)}, fed {e(cal.get('layout'))} {e(cal.get('dtype'))}, "
            f"values in [{num(cal.get('value_min'))}, {num(cal.get('value_max'))}], mean {num(cal.get('mean'))}, std {num(cal.get('std'))}; "
            f"checked against: {e(cal.get('expected'))}.</p>"
        )

    if attempts:
        gate = conv.get("gate") or {}
        parts.append("<h3>Escalation attempts</h3>" + table(
            ["#", "strategy", "what was tried", "accuracy", "agreement", "drop (points)", "bytes", "seconds", "result"],
            [[a.get("step"), a.get("strategy"), a.get("settings"), pct(a.get("accuracy")), pct(a.get("agreement")), _drop(a.get("drop_points")),
              nbytes(a.get("bytes")), num(a.get("seconds")),
              (f"could not run: {a['error']}" if a.get("error") else ("passed" if a.get("passed") else "failed"))
              + (f" → {a.get('variant')}" if a.get("published") else "")]
             for a in attempts],
        ) + where(
            f"host (this build machine): each attempt scored on {e(gate.get('n_samples', '?'))} held-out validation samples "
            f"({e(gate.get('criterion', '?'))} against the fp32 student, {pct(gate.get('reference_accuracy'))}); the first within the "
            "gate ships. The test split is kept for the ledger."
        ))
        note = reference_kernels_note(attempts[0].get("drop_points"), attempts[0].get("reference_kernels_drop"), led.get("max_int8_drop"))
        if note:
            parts.append(f"<p>{e(note)}</p>")

    if layers:
        parts.append("<h3>Per-layer INT8 error, worst first</h3>" + table(
            ["rank", "op", "output tensor", "channel NSR", "NSR", "RMSE / scale", "max |error|", "int8 scale"],
            [[x.get("rank"), x.get("op"), x.get("tensor"), num(x.get("channel_nsr")), num(x.get("nsr")), num(x.get("rmse_over_scale")),
              num(x.get("max_abs_error")), num(x.get("scale"))] for x in layers],
        ) + where(
            e(conv.get("layer_error_note") or "")
            + ". Channel NSR: median over output channels of RMS error ÷ RMS signal (≈1: the layer's output is lost); "
            "RMSE / scale: error in quantization steps (≈0.29 is pure rounding)."
        ))

    rows = [row for row in led.get("rows") or [] if isinstance(row, dict) and row.get("latency_ms") is not None]
    if rows:
        parts.append("<h3>Host latency of each ledger model (in-process)</h3>" + table(
            ["model", "runtime", "median ms"], [[row.get("name"), row.get("runtime"), num(row.get("latency_ms"), 4)] for row in rows],
        ) + where(e(led.get("latency_where") or "host")))

    for note in conv.get("notes") or []:
        parts.append(f'<p class="muted">Note: {e(note)}</p>')
    return "".join(parts)
