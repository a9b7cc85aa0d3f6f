"""Collects every stage's result into report.json and renders report.md and report.html from it.

Both renderings are made from the JSON dict alone, so neither can show a number that ``report.json``
does not hold, and ``edge-distill report RUN_DIR`` can redraw them later from the file.
To add a section: put its data under a new key of the dict in ``write_report``, add a few lines to
``render_markdown`` and (optionally) an ``@section`` renderer in ``html.py`` — until then the HTML page
shows any new key with its generic renderer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import ReportError, with_article
from ..rundir import RunDir
from ..serde import to_jsonable
from ..versions import tool_versions
from .html import START_ARMS, unlabelled_arms


def write_report(run: RunDir, *, options, profile, data, teacher, sizing, students, conversion, verified, bench, times, total_seconds,
                 fidelity=None, bundle=None, choice=None, fidelity_matrix=None, transfer=None) -> dict[str, Any]:
    """``students``: ``stages.train.Students``; ``transfer``: the --unlabelled transfer set (None without it)."""
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run.root),
        "options": to_jsonable(options),
        "tools": tool_versions(),
        "profile": to_jsonable(profile),
        "data": to_jsonable(data),
        "teacher": to_jsonable(teacher),
        "sizing": to_jsonable(sizing),
        "students": {"baseline": to_jsonable(students.baseline), "kd": to_jsonable(students.kd),
                     **({"pseudo": to_jsonable(students.pseudo)} if students.pseudo is not None else {}),
                     **({"scratch_kd": to_jsonable(students.scratch_kd)} if students.scratch_kd is not None else {}),
                     "kd_label": students.kd_label},
        "unlabelled": _unlabelled(transfer, students, options),  # None without --unlabelled
        "pruning": _pruning(sizing, students),  # None without --init prune
        "starts": _starts(options, students),  # None without --student-init
        "student_choice": to_jsonable(choice),  # which student was converted and ships, decided on validation
        "conversion": to_jsonable(conversion),
        "ledger": to_jsonable(verified),
        "bench": to_jsonable(bench),
        "fidelity": to_jsonable(fidelity),  # None when the runner is this machine (nothing to compare)
        "fidelity_matrix": to_jsonable(fidelity_matrix),  # the shipped and fp32 files under each runtime × kernel mode
        "bundle": to_jsonable(bundle),
        "stage_times": to_jsonable(times),
        "total_seconds": round(total_seconds, 3),
    }
    run.write_json("report.json", report)
    write_renderings(run, report)
    return report


def _unlabelled(transfer, students, options) -> dict[str, Any] | None:
    """The transfer set and the three students' test accuracies: what the labels alone, the teacher's top-1 classes and its
    soft targets each give the same student."""
    if transfer is None:
        return None
    return {"transfer": to_jsonable(transfer), "ce_average": options.transfer_ce_average,
            "test_accuracy": {"labels_only": students.baseline.test_accuracy, "pseudo_labels": students.pseudo.test_accuracy,
                              "kd": students.kd.test_accuracy}}


def _pruning(sizing, students) -> dict[str, Any] | None:
    """--init prune: how the student was cut, and the pruned KD student against its from-scratch twin (same architecture,
    same KD); the verdict is read on validation, the test gain is reported beside it."""
    if students.scratch_kd is None or sizing.pruning is None:
        return None
    pruned, scratch = students.kd, students.scratch_kd
    val_gain, test_gain = 100 * (pruned.val_accuracy - scratch.val_accuracy), 100 * (pruned.test_accuracy - scratch.test_accuracy)
    verdict = (f"starting from the teacher's weights paid: {val_gain:+.2f} points on validation" if val_gain >= 0 else
               f"starting from the teacher's weights did not pay here: the same architecture distilled from random weights scored "
               f"{-val_gain:.2f} points higher on validation (the pruned student still ships; --init scratch builds the other)")
    return {"cut": to_jsonable(sizing.pruning), "student": sizing.chosen.label(), "params": pruned.params,
            "val_accuracy": {"pruned_kd": pruned.val_accuracy, "scratch_kd": scratch.val_accuracy},
            "test_accuracy": {"pruned_kd": pruned.test_accuracy, "scratch_kd": scratch.test_accuracy},
            "val_gain_points": round(val_gain, 3), "test_gain_points": round(test_gain, 3), "verdict": verdict}


def _starts(options, students) -> dict[str, Any] | None:
    """--student-init: the same student on the same budget from random weights (KD), from the starting weights on labels
    alone, and from them with KD -- what the start adds, and what the teacher adds on top of it."""
    if options.student_init == "scratch" or students.scratch_kd is None:
        return None
    arms = {"from_zero_kd": students.scratch_kd, "pretrained": students.baseline, "pretrained_kd": students.kd}
    gain = lambda a, b, split: round(100 * (getattr(arms[a], split) - getattr(arms[b], split)), 3)  # noqa: E731
    return {"init": options.student_init, "student": students.kd.label, "params": students.kd.params,
            "arms": {k: {"val_accuracy": v.val_accuracy, "test_accuracy": v.test_accuracy, "device": (v.train or {}).get("device")}
                     for k, v in arms.items()},
            "kd_over_fine_tuning_points": {s: gain("pretrained_kd", "pretrained", f"{s}_accuracy") for s in ("val", "test")},
            "pretrained_kd_over_zero_points": {s: gain("pretrained_kd", "from_zero_kd", f"{s}_accuracy") for s in ("val", "test")},
            "measured": "validation and held-out test splits, torch fp32 on the build host (the ledger's rows); one seed"}


def write_renderings(run: RunDir, report: dict[str, Any]) -> list[str]:
    """report.md and report.html from the report dict; returns their paths relative to the run directory."""
    from . import quant_html  # noqa: F401 -- registers the INT8 quality-gate section of report.html
    from .html import render_html

    run.write_text("report.md", render_markdown(report))
    run.write_text("report.html", render_html(report))
    return ["report.md", "report.html"]


def rerender(run_dir: str | Path) -> list[Path]:
    """Redraw report.md and report.html of an existing run from its report.json (``edge-distill report``)."""
    root = Path(run_dir)
    source = root / "report.json"
    if not source.is_file():
        hint = "Run `edge-distill build` first" if not root.is_dir() else "This run has not reached the report stage; rerun `edge-distill build` with the same options to finish it"
        raise ReportError(f"No report.json in {root}.", f"{hint} (the run directory is the one given by --out, default runs/<profile>).")
    try:
        report = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{source} is not valid JSON ({exc}).", "Rerun `edge-distill build` with the same options to write it again.") from None
    if not isinstance(report, dict):
        raise ReportError(f"{source} holds {with_article(type(report).__name__)}, not a report object.", "Rerun `edge-distill build` to write it again.")
    run = RunDir(root)
    try:
        names = write_renderings(run, report)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        # The markdown needs the core sections; the HTML page draws whatever is there.
        from .html import render_html

        run.write_text("report.html", render_html(report))
        raise ReportError(
            f"{source} lacks what report.md needs ({type(exc).__name__}: {exc}); report.html was still written.",
            "The file may come from another edge-distill version or a run that stopped early; rerun `edge-distill build`.",
        ) from None
    return [run.path(n) for n in names]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    # A cell is one line with no bare pipe, whatever it holds (a converter's multi-line error, say).
    lines += ["| " + " | ".join(" ".join(str(c).split()).replace("|", "\\|") for c in row) + " |" for row in rows]
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


def _device_vs_ledger(r: dict[str, Any]) -> list[str]:
    """Variants whose accuracy measured by the agent on a device runner differs from the host ledger by > 1 point."""
    ledger = {row["name"]: row["accuracy"] for row in r["ledger"]["rows"]}
    out = []
    for label, b in zip(r["bench"]["labels"], r["bench"]["results"]):
        if b["runner"] != "local" and b["accuracy"] is not None and label in ledger and abs(b["accuracy"] - ledger[label]) > 0.01:
            out.append(f"{label} ({_pct(b['accuracy'])} on {b['runner']} vs. {_pct(ledger[label])} in the host ledger)")
    return out


def _fidelity_md(f: dict[str, Any] | None, r: dict[str, Any]) -> list[str]:
    if not f:
        return []
    verdict = "passed" if f["passed"] else "FAILED"
    differ = _device_vs_ledger(r)
    return [
        "## Cross-runtime fidelity (INT8 file: device runtime against this host's)",
        "",
        f"The same agent scored the {f['n']} test samples with **{f['device_runtime']}** ({f['where']}) and with "
        f"**{f['host_runtime']}** on this host: top-1 predictions agree on **{_pct(f['agreement'])}** "
        f"(required ≥ {_pct(f['min_agreement'])}: **{verdict}**); accuracy {_pct(f['device_accuracy'])} on the device "
        f"side vs. {_pct(f['host_accuracy'])} on the host."
        + (f" First disagreeing samples: {', '.join(map(str, f['disagreements']))}." if f["disagreements"] else ""),
        "",
        ("Other variants whose on-device accuracy differs from the host ledger by more than 1 point: **"
         + "; ".join(differ) + "**." if differ else
         "Every other benchmarked variant's on-device accuracy is within 1 point of the host ledger."),
        "",
    ]


def _fidelity_matrix_md(fm: dict[str, Any] | None) -> list[str]:
    """One table per file; absent from reports written before the fidelity-matrix stage existed."""
    if not fm:
        return []
    from ..bench.fidelity_matrix import FidelityMatrix, divergence_verdict, matrix_markdown
    from ..serde import from_jsonable

    out = ["## Fidelity matrix (runtimes × kernels, test split)", "",
           "The same agent scored the test samples under each runtime set up on this machine (`converter`: the LiteRT the "
           "build converted and verified with; device runtimes: each in its own venv) with each kernel mode: `xnnpack` (the "
           "default delegate an app gets), `builtin` (optimized kernels, no delegate), `reference` (reference kernels).", ""]
    for f in fm.get("files") or []:
        m = from_jsonable(FidelityMatrix, f["matrix"])
        out += [f"### `{f['path']}` ({f['variant']}{', ships' if f['shipped'] else ''})", "",
                f"**Verdict:** {divergence_verdict(m)}", "", matrix_markdown(m), ""]
    if fm.get("setup_hint"):
        out += [f"Note: {fm['setup_hint']}", ""]
    return out


def _lost(points: float | None) -> str:
    return "could not be run" if points is None else f"lost **{points:.2f}** points"


def _gate_md(r: dict[str, Any]) -> list[str]:
    """The quality gate's verdict, the calibration it used, its escalation attempts and the per-layer INT8 error."""
    led, conv = r["ledger"], r.get("conversion") or {}
    out = [_gate_line(led), ""]
    if led.get("latency_where"):
        out += [f"Host latency column: {led['latency_where']}.", ""]
    gate, cal = conv.get("gate"), conv.get("calibration")
    if cal:
        out += _calibration_md(cal)
    attempts = conv.get("attempts") or []
    if attempts:
        out += _escalation_md(attempts, gate, led)
    layers = conv.get("layer_errors") or []
    if layers or conv.get("layer_error_note"):
        out += _layer_errors_md(conv, layers)
    for note in conv.get("notes") or []:
        out += [f"Note: {note}", ""]
    return out


def _gate_line(led: dict[str, Any]) -> str:
    ships = led.get("gated_variant", "tflite_int8")
    verdict = "passed" if led["passed"] else "FAILED"
    if ships is None:
        gate_line = (
            f"INT8 quality gate: **{verdict}** — no quantized model stayed within {led['max_int8_drop']:.2f} points of the fp32 "
            f"student; plain full INT8 {_lost(led['int8_drop_points'])} on the test split."
        )
    else:
        gated = led.get("gated_drop_points", led["int8_drop_points"])
        gate_line = (
            f"INT8 quality gate: **{ships}** ships; it lost **{gated:.2f}** points against the fp32 student on the test split "
            f"(allowed {led['max_int8_drop']:.2f}): **{verdict}**."
        )
        if ships != "tflite_int8":
            gate_line += f" Plain full INT8 {_lost(led['int8_drop_points'])}, so the gate escalated (below)."
    return gate_line


def _calibration_md(cal: dict[str, Any]) -> list[str]:
    balance = (
        f", {cal['classes']} classes ({cal['per_class_min']}–{cal['per_class_max']} per class)" if cal.get("classes") else ""
    )
    return [
        f"Calibration: {cal['count']} samples from the training split{balance}, fed {cal['layout']} {cal['dtype']}, "
        f"values in [{cal['value_min']:.3g}, {cal['value_max']:.3g}], mean {cal['mean']:.3g}, std {cal['std']:.3g}; "
        f"checked against: {cal['expected']}.",
        "",
    ]


def _escalation_md(attempts: list[dict[str, Any]], gate: dict[str, Any] | None, led: dict[str, Any]) -> list[str]:
    basis = (
        f"{gate['n_samples']} held-out validation samples, {gate['criterion']} against the fp32 student"
        + (f" ({_pct(gate['reference_accuracy'])})" if gate and gate.get("reference_accuracy") is not None else "")
        if gate else "held-out validation samples"
    )
    return [
        "## INT8 quality gate and escalation",
        "",
        f"Each attempt is scored on {basis}; the first one within {led['max_int8_drop']:.2f} points ships. "
        "The test split is kept for the ledger above.",
        "",
        _table(
            ["#", "strategy", "what was tried", "accuracy", "agreement", "drop (points)", "bytes", "seconds", "result"],
            [[a["step"], a["strategy"], a["settings"], _pct(a["accuracy"]), _pct(a["agreement"]),
              "-" if a["drop_points"] is None else f"{a['drop_points']:.2f}", "-" if a["bytes"] is None else f"{a['bytes']:,}",
              f"{a['seconds']:.2f}",
              (f"could not run: {a['error']}" if a["error"] else ("passed" if a["passed"] else "failed"))
              + (f" → `{a['variant']}`" if a.get("published") else "")]
             for a in attempts],
        ),
        "",
    ]


def _layer_errors_md(conv: dict[str, Any], layers: list[dict[str, Any]]) -> list[str]:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None or v != v else format(v, fmt)  # v != v: NaN (no signal to compare against)

    out = [
        "## Per-layer INT8 error (worst first)",
        "",
        (conv.get("layer_error_note") or "") + ". channel NSR: median over output channels of RMS error / RMS signal "
        "(≈1 means the layer's output is lost); NSR: the same over the whole tensor; RMSE/scale: error in quantization steps "
        "(≈0.29 is pure rounding).",
        "",
    ]
    if layers:
        out += [
            _table(
                ["rank", "op", "output tensor", "channel NSR", "NSR", "RMSE/scale", "max abs error", "int8 scale"],
                [[x["rank"], x["op"], f"`{x['tensor']}`", num(x["channel_nsr"], ".4f"), num(x["nsr"], ".4f"),
                  num(x["rmse_over_scale"], ".3f"), num(x["max_abs_error"], ".4g"), num(x["scale"], ".4g")] for x in layers],
            ),
            "",
        ]
    return out


def _bundle_md(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    return [
        "## Bundles",
        "",
        f"Made from `{b['source_model']}` ({b['model_variant']}: {b['model_description']}; sha256 {b['source_sha256'][:16]}…), "
        f"test accuracy {_pct(b['accuracy'])} on {b['n_test']} samples (host LiteRT). Checksums of the zips: `{b['checksums']}`; "
        "each folder's `manifest.json` lists the sha256 of every file in it.",
        "",
        _table(
            ["target", "folder", "archive", "archive bytes", "archive sha256", "files"],
            [[x["target"], f"`{x['directory']}/`", f"`{x['archive']}`", f"{x['archive_bytes']:,}", f"`{x['archive_sha256'][:16]}…`",
              ", ".join(f["path"] for f in x["files"])] for x in b["bundles"]],
        ),
        "",
    ]


def _versus_nokd_md(r: dict[str, Any]) -> list[str]:
    choice, vs = r.get("student_choice") or {}, (r.get("ledger") or {}).get("nokd_drop_points")
    out = [f"Student choice (validation split): {choice['note']}."] if choice.get("note") else []
    if vs is not None:
        over = vs > (r.get("ledger") or {}).get("max_int8_drop", float("inf"))
        out.append(f"The shipped file {'gains' if vs <= 0 else 'loses'} {abs(vs):.2f} points against the no-KD fp32 student on the test split"
                   + (" — **more than the tolerance**." if over else "."))
    return [" ".join(out), ""] if out else []


def _unlabelled_md(r: dict[str, Any]) -> list[str]:
    u = r.get("unlabelled")
    if not u:
        return []
    t, acc = u["transfer"], u["test_accuracy"]
    agreement = (f"the teacher agrees with **{_pct(t['teacher_agreement'])}** of the {t['n_labelled']:,} labels the file gives "
                 "(they trained nothing)" if t.get("teacher_agreement") is not None else "no labels")
    return ["## Unlabelled data (--unlabelled)", "",
            f"Transfer set: **{t['n']:,}** samples from {t['source']}, labelled once by the teacher; {agreement}. "
            f"The same student (size, seed, epochs), on the {r['data']['n_test']} test samples:", "",
            _table(["student", "trained with", "test accuracy"], [[name, how, _pct(acc[k])] for k, name, how in unlabelled_arms(u.get("ce_average"))]), ""]


def _pruning_md(r: dict[str, Any]) -> list[str]:
    pr = r.get("pruning")
    if not pr:
        return []
    cut, val, test = pr["cut"], pr["val_accuracy"], pr["test_accuracy"]
    return ["## Student cut from the teacher (--init prune)", "",
            f"`{pr['student']}` ({pr['params']:,} params) cut from {cut['source']} ({cut['teacher_params']:,} params) in "
            f"{len(cut['steps'])} steps by {cut['criterion']!r} importance; validation accuracy right after the cut, before any "
            f"training: {_pct(cut['val_accuracy_at_cut'])}. Verdict: {pr['verdict']}.", "",
            _table(["student", "starts from", "val accuracy", "test accuracy"],
                   [["pruned + KD (ships)", "the teacher's surviving weights", _pct(val["pruned_kd"]), _pct(test["pruned_kd"])],
                    ["KD from scratch", "random weights, same architecture", _pct(val["scratch_kd"]), _pct(test["scratch_kd"])]]), ""]


def _starts_md(r: dict[str, Any]) -> list[str]:
    st = r.get("starts")
    if not st:
        return []
    kd, zero = st["kd_over_fine_tuning_points"], st["pretrained_kd_over_zero_points"]
    return [f"## Where the student started (--student-init {st['init']})", "",
            f"`{st['student']}` ({st['params']:,} params), three ways on the same budget; {st['measured']}. KD over fine-tuning "
            f"alone: {kd['val']:+.2f} points on validation, {kd['test']:+.2f} on test; pretrained + KD over from zero: "
            f"{zero['val']:+.2f} / {zero['test']:+.2f}.", "",
            _table(["student", "starts from", "val accuracy", "test accuracy", "trained on"],
                   [[name, start, _pct(st["arms"][k]["val_accuracy"]), _pct(st["arms"][k]["test_accuracy"]),
                     st["arms"][k].get("device") or "not recorded"] for k, name, start in START_ARMS]), ""]


def _teacher_input_md(teacher: dict[str, Any]) -> list[str]:
    if not teacher.get("input_description"):
        return []
    out = [f"Teacher input: {teacher['input_description']} ({teacher.get('input_source', '')}).", ""]
    cands = teacher.get("input_candidates") or []
    if cands:
        out += [_table(["input given to the teacher", "--teacher-input", "validation accuracy"],
                       [[c["description"], c["contract"], _pct(c["val_accuracy"]) if c["val_accuracy"] is not None else "fails"] for c in cands]), ""]
    return out


def render_markdown(r: dict[str, Any]) -> str:
    p, d, led, bench = r["profile"], r["data"], r["ledger"], r["bench"]
    out = [
        *_intro_md(p, d),
        *_ledger_md(led),
        *_versus_nokd_md(r),
        *_unlabelled_md(r),
        *_pruning_md(r),
        *_starts_md(r),
        *_gate_md(r),
        *_checks_md(r),
        *_latency_md(p, bench),
        *_fidelity_md(r.get("fidelity"), r),
        *_fidelity_matrix_md(r.get("fidelity_matrix")),
        *_bundle_md(r.get("bundle")),
        *_sizing_md(r, p),
        *_models_md(r),
        *_teacher_input_md(r.get("teacher") or {}),
        *_times_md(r),
    ]
    return "\n".join(out)


def _intro_md(p: dict[str, Any], d: dict[str, Any]) -> list[str]:
    return [
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
    ]


def _ledger_md(led: dict[str, Any]) -> list[str]:
    return [
        "## Accuracy ledger",
        "",
        _table(
            ["model", "runtime", "test accuracy", "agreement with fp32 student", "file bytes", "params", "host latency ms", "precision"],
            [
                [row["name"] + (" **(ships)**" if row["variant"] == led.get("gated_variant") else ""), row["runtime"],
                 _pct(row["accuracy"]), _pct(row["agreement"]),
                 "-" if row["bytes"] is None else f"{row['bytes']:,}", f"{row['params']:,}",
                 "-" if row.get("latency_ms") is None else f"{row['latency_ms']:.4f}", row["precision"]]
                for row in led["rows"]
            ] + [[m["name"], "-", f"could not be converted: {m['reason']}", "-", "-", "-", "-", "-"] for m in led.get("missing") or []],
        ),
        "",
    ]


def _checks_md(r: dict[str, Any]) -> list[str]:
    return [
        "## Conversion checks (each hop against the one before)",
        "",
        _table(
            ["hop", "max abs diff (logits)", "tolerance", "top-1 agreement", "samples", "passed"],
            [[c["hop"], f"{c['max_abs_diff']:.3g}", f"{c['tolerance']:.3g}", _pct(c["top1_agreement"]), c["n_samples"], c["passed"]]
             for c in r["conversion"]["checks"]],
        ),
        "",
    ]


def _latency_md(p: dict[str, Any], bench: dict[str, Any]) -> list[str]:
    return [
        "## Latency and memory",
        "",
        f"Measured by the device-side agent in a separate process ({', '.join(sorted({b['runner'] for b in bench['results']})) or '-'} runner) on: "
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
    ]


def _sizing_md(r: dict[str, Any], p: dict[str, Any]) -> list[str]:
    out = ["## Student sizing", "", r["sizing"]["reason"], "", _proxy_table(r["sizing"].get("proxy") or [])]
    if r["sizing"].get("pruning"):  # --init prune: no family candidates, the steps that cut the teacher down instead
        steps = r["sizing"]["pruning"]["steps"]
        return out + [_table(["step", "params", "channels per conv"], [[i + 1, f"{params:,}", "-".join(map(str, channels))]
                                                                      for i, (params, channels) in enumerate(steps)]), ""]
    return out + [
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
    ]


def _models_md(r: dict[str, Any]) -> list[str]:
    return [
        "## Teacher and students",
        "",
        _table(
            ["model", "params", "val accuracy", "test accuracy", "training"],
            [
                ["teacher " + r["teacher"]["source"], f"{r['teacher']['params']:,}", _pct(r["teacher"]["val_accuracy"]), _pct(r["teacher"]["test_accuracy"]), ""],
                [f"student, no KD: {r['students']['baseline']['label']}", f"{r['students']['baseline']['params']:,}",
                 _pct(r["students"]["baseline"]["val_accuracy"]), _pct(r["students"]["baseline"]["test_accuracy"]), "hard labels"],
                *_pseudo_row(r["students"].get("pseudo")),
                *_scratch_kd_row(r["students"].get("scratch_kd"), r["options"]),
                [f"student, {r['students'].get('kd_label') or ('pruned + KD' if r['students'].get('scratch_kd') else 'KD')}: {r['students']['kd']['label']}", f"{r['students']['kd']['params']:,}",
                 _pct(r["students"]["kd"]["val_accuracy"]), _pct(r["students"]["kd"]["test_accuracy"]),
                 f"{r['options']['kd_loss']} KD, T={r['options']['temperature']}, alpha={r['options']['alpha']}"
                 + (" (labelled split + transfer set)" if r["students"].get("pseudo") else "")],
            ],
        ),
        "",
        f"Trained on: {_trained_on(r)}.",
        "",
    ]


def _trained_on(r: dict[str, Any]) -> str:
    """The device(s) the students (and a built-in teacher) trained on, from their results (devices.describe)."""
    trains = [r["students"][arm].get("train") for arm in ("baseline", "kd") if isinstance(r["students"].get(arm), dict)]
    trains.append(r["teacher"].get("train"))
    return ", ".join(sorted({t.get("device") or "not recorded" for t in trains if isinstance(t, dict)})) or "not recorded"


def _scratch_kd_row(scratch: dict[str, Any] | None, options: dict[str, Any]) -> list[list[str]]:
    if not scratch:
        return []
    return [[f"student, KD from scratch: {scratch['label']}", f"{scratch['params']:,}", _pct(scratch["val_accuracy"]),
             _pct(scratch["test_accuracy"]), f"{options['kd_loss']} KD from random weights (the shipping student's twin)"]]


def _pseudo_row(pseudo: dict[str, Any] | None) -> list[list[str]]:
    if not pseudo:
        return []
    return [[f"student, pseudo-labels: {pseudo['label']}", f"{pseudo['params']:,}", _pct(pseudo["val_accuracy"]), _pct(pseudo["test_accuracy"]),
             "hard labels + the teacher's top-1 class on the transfer set"]]


def _rss_cells(t: dict[str, Any]) -> list[str]:
    """This stage's peak and the process's peak so far; a reused stage shows its original peak, bracketed: not run now."""
    if t.get("reused"):
        before = t.get("original_peak_rss_mb")
        return [f"not run ({before:.0f} when computed)" if before is not None else "not run", "-"]
    peak, so_far = t.get("peak_rss_mb"), t.get("process_peak_mb")
    return [f"{peak:.0f}" if peak is not None else "-", f"{so_far:.0f}" if so_far is not None else "-"]


def _times_md(r: dict[str, Any]) -> list[str]:
    return [
        "## Stage times (this invocation)",
        "",
        _table(
            ["stage", "seconds", "reused", "seconds when computed", "peak RSS MiB (this stage)", "process peak RSS MiB so far"],
            [[t["stage"], f"{t['seconds']:.2f}", "yes" if t["reused"] else "no", f"{t['original_seconds']:.2f}", *_rss_cells(t)]
             for t in r["stage_times"]],
        ),
        "",
        "Peak RSS: the build process's highest resident set while the stage ran (VmRSS sampled every 50 ms, and any new "
        "ru_maxrss reached in the stage); \"so far\" is ru_maxrss at the stage's end, the process's peak over every stage "
        "until then. A reused stage did not run now: its peak is the one measured when it was computed, in parentheses.",
        "",
        f"Total: {r['total_seconds']:.1f} s. Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items()) + ".",
        "",
    ]
