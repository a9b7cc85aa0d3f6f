"""report.html: one self-contained page rendered from the report dict (what report.json holds).

Self-contained means: inline CSS, inline SVG charts (``svg.py``), no scripts, no fonts, no images, no
network — it opens the same on a laptop on a plane and in a CI artifact viewer.

The page is a list of sections.  Each one reads only the report keys it needs and is drawn
independently: a section whose keys are missing (an older report.json, a build that stopped early)
is replaced by a one-line notice instead of breaking the page, and any top-level key no section
claims (a stage added later) is still shown, by a generic renderer.  To give new data a proper
section, add a function with ``@section(...)`` below (or from another module before rendering).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from typing import Any, Callable

from . import svg
from .svg import GREY, PALETTE, Bar, Point, Rule, Series, Spread

Report = dict[str, Any]


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    keys: tuple[str, ...]  # top-level report keys this section presents (the generic renderer skips them)
    render: Callable[[Report], str | None]  # HTML, or None when the section does not apply to this report


SECTIONS: list[Section] = []
# Keys that are bookkeeping rather than results: shown in the page header/footer, never as a section.
META_KEYS = ("generated_at", "run_dir", "total_seconds")


def section(id: str, title: str, *keys: str) -> Callable[[Callable[[Report], str | None]], Callable[[Report], str | None]]:
    """Register a section renderer; sections appear in registration order."""

    def register(fn: Callable[[Report], str | None]) -> Callable[[Report], str | None]:
        if any(s.id == id for s in SECTIONS):
            raise ValueError(f"report section {id!r} is already registered")
        SECTIONS.append(Section(id, title, keys, fn))
        return fn

    return register


# ---- small helpers ------------------------------------------------------------------------------


def get(r: Any, path: str, default: Any = None) -> Any:
    """``get(r, "profile.budget.latency_ms")``: nested lookup that returns ``default`` on any missing link."""
    cur = r
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
    return cur


def e(v: Any) -> str:
    return escape(str(v))


def pct(x: Any) -> str:
    return f"{100 * x:.2f}%" if _num(x) else "–"


def num(x: Any, digits: int = 3) -> str:
    if not _num(x):
        return "–"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 1000:
        return f"{int(x):,}"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def nbytes(x: Any) -> str:
    if not _num(x):
        return "–"
    if x >= 1 << 20:
        return f"{x / (1 << 20):.2f} MiB"
    if x >= 1 << 10:
        return f"{x / (1 << 10):.1f} KiB"
    return f"{int(x)} B"


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def table(header: list[str], rows: list[list[Any]], raw: bool = False, classes: list[list[str]] | None = None) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then the caller has escaped them)."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, c in enumerate(row):
            cls = classes[i][j] if classes and classes[i][j] else ""
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{c if raw else e(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def where(text: str) -> str:
    """The caption every figure carries: where its numbers were measured (or that they are estimates)."""
    return f'<p class="where"><span>measured where</span> {text}</p>'


def _bench_rows(r: Report) -> list[tuple[str, dict[str, Any]]]:
    labels = get(r, "bench.labels", []) or []
    results = get(r, "bench.results", []) or []
    return [(str(label), b) for label, b in zip(labels, results) if isinstance(b, dict)]


def _color(label: str, i: int) -> str:
    if label.startswith("teacher"):
        return "#374151"
    return PALETTE[i % len(PALETTE)]


def _where_bench(r: Report) -> str:
    places = sorted({str(b.get("where")) for _, b in _bench_rows(r) if b.get("where")})
    runners = sorted({str(b.get("runner")) for _, b in _bench_rows(r) if b.get("runner")})
    return f"{e('; '.join(places) or 'unknown')} (runner: {e(', '.join(runners) or '?')}; host: {e(get(r, 'bench.host', '?'))})"


# ---- sections -----------------------------------------------------------------------------------


@section("summary", "Summary", "options")
def _summary(r: Report) -> str | None:
    rows = {row.get("variant"): row for row in get(r, "ledger.rows", []) or [] if isinstance(row, dict)}
    cards = []
    int8, ref, teacher = rows.get("tflite_int8"), rows.get(get(r, "ledger.reference", "torch_fp32")), rows.get("teacher_torch_fp32")
    if int8:
        sub = f"fp32 student {pct(ref['accuracy'])}" if ref else ""
        if teacher:
            sub += f" · teacher {pct(teacher['accuracy'])}"
        cards.append(("INT8 student accuracy", pct(int8.get("accuracy")), sub))
    if _num(get(r, "ledger.int8_drop_points")):
        ok = get(r, "ledger.passed")
        cards.append(("INT8 quality gate", "passed" if ok else "FAILED",
                      f"lost {get(r, 'ledger.int8_drop_points'):.2f} pts (allowed {num(get(r, 'ledger.max_int8_drop'))})"))
    if int8 and _num(int8.get("bytes")):
        teacher_bytes = next((b.get("model_bytes") for label, b in _bench_rows(r) if label.startswith("teacher")), None)
        sub = f"teacher ONNX {nbytes(teacher_bytes)} ({teacher_bytes / int8['bytes']:.1f}× larger)" if _num(teacher_bytes) else ""
        cards.append(("INT8 model file", nbytes(int8["bytes"]), sub))
    t_params, s_params = get(r, "teacher.params"), get(r, "students.kd.params")
    if _num(t_params) and _num(s_params) and s_params:
        cards.append(("Parameters", f"{s_params:,}", f"teacher {t_params:,} ({t_params / s_params:.1f}× more)"))
    bench = _bench_rows(r)
    int8_bench = next((b for label, b in bench if "int8" in label), None)
    if int8_bench and _num(int8_bench.get("p50_ms")):
        cards.append(("INT8 latency p50", f"{int8_bench['p50_ms']:.3f} ms", str(int8_bench.get("where", ""))))
    if not cards:
        return None
    html = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="s">{e(s)}</div></div>'
        for k, v, s in cards
    ) + "</div>"
    opts = get(r, "options", {}) or {}
    if opts:
        html += (f'<p class="muted">Built with <code>edge-distill build --profile {e(opts.get("profile"))} --data {e(opts.get("data"))} '
                 f'--teacher {e(opts.get("teacher"))} --student {e(opts.get("student"))} --seed {e(opts.get("seed"))}</code> '
                 f'(all options under “Tools and options”).</p>')
    return html


@section("accuracy-latency", "Accuracy against latency", "bench")
def _accuracy_latency(r: Report) -> str | None:
    bench = _bench_rows(r)
    if not bench:
        return None
    ledger = {row.get("variant"): row for row in get(r, "ledger.rows", []) or [] if isinstance(row, dict)}
    points = []
    for i, (label, b) in enumerate(bench):
        acc = b.get("accuracy")
        if not _num(acc):  # the agent scored nothing: fall back to the ledger row of the same variant
            acc = next((row.get("accuracy") for v, row in ledger.items() if v and label.endswith(v)), None)
        if not (_num(acc) and _num(b.get("p50_ms"))):
            continue
        shape = "square" if label.startswith("teacher") else "diamond" if "int8" in label else "circle"
        points.append(Point(b["p50_ms"], 100 * acc, f"{label}: {100 * acc:.2f}%, {b['p50_ms']:.3f} ms", _color(label, i), shape))
    chart = svg.scatter(points, title="Test accuracy against p50 latency", x_label="p50 latency per inference (ms, log scale)",
                        y_label="test accuracy (%)", x_log=True, legend=True)
    n = get(r, "data.n_test") or get(r, "ledger.n_test")
    return (chart + where(f"latency: {_where_bench(r)}. Accuracy: scored by the same agent process on the "
                          f"{e(n)} held-out test samples. Host timings say nothing about the target device "
                          f"({e(get(r, 'profile.name', '?'))}) unless the runner is that device. The no-KD baseline is not "
                          "benchmarked: it has the KD student's architecture, so its latency is the same; its accuracy is in the ledger."))


@section("size", "Model size", "conversion")
def _size(r: Report) -> str | None:
    bars: list[Bar] = []
    seen: set[str] = set()
    for i, (label, b) in enumerate(_bench_rows(r)):
        if label.startswith("teacher") and _num(b.get("model_bytes")):
            bars.append(Bar(label, b["model_bytes"], _color(label, i), nbytes(b["model_bytes"])))
    for i, f in enumerate(get(r, "conversion.files", []) or []):
        if isinstance(f, dict) and _num(f.get("bytes")) and f.get("path") not in seen:
            seen.add(f.get("path"))
            bars.append(Bar(f"student {f.get('variant')}", f["bytes"], PALETTE[(i + 1) % len(PALETTE)], nbytes(f["bytes"])))
    if not bars:
        return None
    budget = get(r, "profile.budget.model_bytes")
    biggest = max(b.value for b in bars)
    # A budget 100× beyond every file would squash the bars to slivers; then it is stated, not drawn.
    rules = [Rule(budget, "budget")] if _num(budget) and budget <= 5 * biggest else []
    chart = svg.hbars(bars, title="File size of each model", x_label="bytes on disk", rules=rules)
    note = f" The profile's model budget is {nbytes(budget)} ({budget:,} B)." if _num(budget) else ""
    files = get(r, "conversion.files", []) or []
    tbl = table(
        ["file", "variant", "bytes", "input", "what is inside (read from the file)"],
        [[f.get("path"), f.get("variant"), num(f.get("bytes")), f"{f.get('input_layout')} {f.get('input_dtype')} {f.get('input_shape')}",
          f.get("integer_description")] for f in files if isinstance(f, dict)],
    )
    return chart + where("file sizes on disk in the run directory; what each file computes in is read back from the file." + e(note)) + tbl


@section("latency", "Latency distributions, load time and memory", "bench")
def _latency(r: Report) -> str | None:
    bench = _bench_rows(r)
    if not bench:
        return None
    rows = [
        Spread(label, b["min_ms"], b["p50_ms"], b["p90_ms"], b["p99_ms"], b["max_ms"], b.get("mean_ms"), _color(label, i))
        for i, (label, b) in enumerate(bench)
        if all(_num(b.get(k)) for k in ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
    ]
    chart = svg.spreads(rows, title="Latency distribution per model", x_label="ms per inference (log scale)")
    legend = ('<p class="muted">Whisker: min to max · box: p50 (thick) to p90 · dashed tick: p99 · open dot: mean. '
              "Warm runs only; the first inference and load time are listed below.</p>")
    tbl = table(
        ["model", "runtime", "threads", "delegate", "runs (warmup)", "load ms", "first ms", "p50 ms", "p90 ms", "p99 ms", "peak RSS MB", "agent accuracy", "where"],
        [[label, f"{b.get('runtime')} {b.get('runtime_version')}", b.get("threads"), b.get("delegate"), f"{b.get('runs')} ({b.get('warmup')})",
          num(b.get("load_ms")), num(b.get("first_inference_ms")), num(b.get("p50_ms")), num(b.get("p90_ms")), num(b.get("p99_ms")),
          num(b.get("peak_rss_mb")), pct(b.get("accuracy")), b.get("where")] for label, b in bench],
    )
    timed = sorted({str(b.get("timed_call")) for _, b in bench if b.get("timed_call")})
    return chart + where(_where_bench(r) + (f"; timed call: {e(', '.join(timed))}" if timed else "")) + legend + tbl


_BUDGETS = (("params", "max_params", "params"), ("model_bytes", "model_bytes", "model bytes"),
            ("arena_bytes", "arena_bytes", "arena bytes"), ("latency_ms", "latency_ms", "est. latency"))


@section("sizing", "Student sizing against the profile's budgets", "sizing", "profile")
def _sizing(r: Report) -> str | None:
    candidates = [c for c in get(r, "sizing.candidates", []) or [] if isinstance(c, dict)]
    if not candidates:
        return None
    budget = get(r, "profile.budget", {}) or {}
    max_params = get(r, "sizing.max_params") or budget.get("max_params")
    chosen = get(r, "sizing.chosen", {}) or {}
    points = []
    for c in candidates:
        cfg, cost = c.get("config", {}), c.get("cost", {})
        name = _cfg_name(cfg)
        is_chosen = cfg == chosen
        points.append(Point(
            cost.get("params"), cost.get("latency_ms"), name + (" (chosen)" if is_chosen else ""),
            "#b91c1c" if is_chosen else (PALETTE[2] if c.get("fits") else GREY),
            "diamond" if is_chosen else "circle", 7 if is_chosen else 5, hollow=not c.get("fits"), show_label=is_chosen,
        ))
    x_rules = [Rule(max_params, f"max params {num(max_params)}")] if _num(max_params) else []
    y_rules = [Rule(budget["latency_ms"], f"latency budget {num(budget['latency_ms'])} ms")] if _num(budget.get("latency_ms")) else []
    chart = svg.scatter(points, title="Sizing candidates: parameters against estimated latency", x_label="parameters (log scale)",
                        y_label="estimated latency on the profile (ms, log)", x_log=True, y_log=True, x_rules=x_rules, y_rules=y_rules)
    limits = {"params": max_params, **{k: budget.get(b) for k, b, _ in _BUDGETS[1:]}}
    rows, classes = [], []
    for c in candidates:
        cost = c.get("cost", {})
        row, cls = [e(_cfg_name(c.get("config", {})) + (" ← chosen" if c.get("config") == chosen else ""))], [""]
        for key, _, _ in _BUDGETS:
            v, lim = cost.get(key), limits.get(key)
            share = f" ({100 * v / lim:.0f}%)" if _num(v) and _num(lim) and lim else ""
            row.append(e(num(v) + share))
            cls.append("over" if share and v > lim else "")
        row += [e(num(cost.get("macs"))), "yes" if c.get("fits") else "<b>no</b>", e("; ".join(c.get("violations") or []))]
        cls += ["", "", ""]
        rows.append(row)
        classes.append(cls)
    tbl = table(["candidate", "params (of bound)", "model bytes (of budget)", "arena bytes (of budget)", "est. latency ms (of budget)",
                 "MACs", "fits", "why not"], rows, raw=True, classes=classes)
    src = get(r, "profile.throughput.source", "?")
    return (f'<p>{e(get(r, "sizing.reason", ""))}</p>' + chart
            + where(f"<b>estimated, not measured</b>: parameters, bytes, MACs and arena are counted from each candidate model; "
                    f"latency = MACs ÷ the profile's throughput + a per-operator overhead (throughput source: {e(src)}).")
            + tbl)


def _cfg_name(cfg: dict[str, Any]) -> str:
    extra = f", r={cfg['resolution']}" if cfg.get("resolution") else ""
    return f"{cfg.get('family', '?')}(w={cfg.get('width', '?')}, d={cfg.get('depth', '?')}{extra})"


@section("ledger", "INT8 ledger: every model on the same test samples", "ledger", "student_choice")
def _ledger(r: Report) -> str | None:
    rows = [row for row in get(r, "ledger.rows", []) or [] if isinstance(row, dict)]
    if not rows:
        return None
    tbl = table(
        ["model", "variant", "runtime", "test accuracy", "agreement with fp32 student", "file bytes", "params", "precision"],
        [[row.get("name"), row.get("variant"), row.get("runtime"), pct(row.get("accuracy")), pct(row.get("agreement")),
          num(row.get("bytes")), num(row.get("params")), row.get("precision")] for row in rows]
        + [[m.get("name"), m.get("variant"), "-", f"could not be converted: {m.get('reason')}", "-", "-", "-", "-"]
           for m in get(r, "ledger.missing", []) or [] if isinstance(m, dict)],
    )
    drop, allowed, ok = get(r, "ledger.int8_drop_points"), get(r, "ledger.max_int8_drop"), get(r, "ledger.passed")
    gate = ""
    if _num(drop):
        gate = (f'<p class="{"pass" if ok else "fail"}">Quality gate: the full-INT8 file lost <b>{drop:.2f}</b> accuracy points '
                f'against the fp32 student (allowed {num(allowed)}): <b>{"passed" if ok else "FAILED"}</b>.</p>')
    gate += _versus_nokd(r)
    checks = [c for c in get(r, "conversion.checks", []) or [] if isinstance(c, dict)]
    hops = ""
    if checks:
        hops = "<h3>Conversion checks (each hop against the one before)</h3>" + table(
            ["hop", "max |Δ| logits", "tolerance", "criterion", "top-1 agreement", "samples", "passed"],
            [[c.get("hop"), num(c.get("max_abs_diff")), num(c.get("tolerance")), c.get("criterion", "max_abs_diff"),
              pct(c.get("top1_agreement")), c.get("n_samples"), "yes" if c.get("passed") else "NO"] for c in checks],
        )
    n = get(r, "ledger.n_test", "?")
    return (gate + tbl + where(f"host (this build machine): each model run in the runtime named in its row on the same {e(n)} held-out "
                               "test samples; conversion checks on held-out validation samples.") + hops)


def _versus_nokd(r: Report) -> str:
    """Which student ships (decided on validation) and what the shipped file scores against the no-KD student."""
    note, vs = get(r, "student_choice.note"), get(r, "ledger.nokd_drop_points")
    out = f'<p class="{"fail" if get(r, "student_choice.shipped") == "nokd" else "pass"}">Student choice: {e(note)}.</p>' if note else ""
    if _num(vs):
        verdict = "gains" if vs <= 0 else "loses"
        over = _num(get(r, "ledger.max_int8_drop")) and vs > get(r, "ledger.max_int8_drop")
        out += (f'<p class="{"fail" if over else "pass"}">The shipped file {verdict} <b>{abs(vs):.2f}</b> points against the student '
                f'trained without the teacher (no KD, fp32) on the test split{" — more than the tolerance" if over else ""}.</p>')
    return out


def unlabelled_arms(ce_average: str | None) -> tuple[tuple[str, str, str], ...]:
    """The --unlabelled students as (report key, name, what it trained with), for report.md and report.html alike;
    ``ce_average``: how the KD student's hard-label term averaged its batches (None in reports written before it was kept)."""
    average = {"batch": " (averaged over the whole batch)", "labelled": " (averaged over the labelled samples of a batch)"}.get(ce_average or "", "")
    return (("labels_only", "labels only (no KD)", "CE on the labelled training split, repeated to the KD student's steps"),
            ("pseudo_labels", "pseudo-labels", "CE on the labelled split + the transfer set labelled by the teacher's top-1 class"),
            ("kd", "soft targets (KD)", f"CE on the labelled split{average}; the teacher's soft targets on it and the transfer set"))


@section("unlabelled", "Unlabelled data: labels only, pseudo-labels, soft targets", "unlabelled")
def _unlabelled(r: Report) -> str | None:
    """--unlabelled: the transfer set, the teacher's agreement with its labels, and the three students side by side."""
    u = get(r, "unlabelled")
    if not isinstance(u, dict):
        return None
    t, acc = u.get("transfer") or {}, u.get("test_accuracy") or {}
    arms = unlabelled_arms(u.get("ce_average"))
    bars = [Bar(name, 100 * acc[k], PALETTE[i], pct(acc[k])) for i, (k, name, _) in enumerate(arms) if _num(acc.get(k))]
    agreement = (f"the teacher agrees with <b>{pct(t.get('teacher_agreement'))}</b> of the {num(t.get('n_labelled'))} labels the file gives "
                 "(used for nothing else)" if _num(t.get("teacher_agreement")) else "no labels")
    intro = f"<p>Transfer set: <b>{num(t.get('n'))}</b> samples from {e(t.get('source', '?'))}, labelled once by the teacher; {agreement}.</p>"
    chart = svg.hbars(bars, title="The same student, three ways of using the teacher", x_label="test accuracy (%)") if bars else ""
    rows = [[name, how, pct(acc.get(k))] for k, name, how in arms]
    return (intro + chart + where(f"host, the {e(get(r, 'ledger.n_test', '?'))} held-out test samples; same student size, seed and epochs.")
            + table(["student", "trained with", "test accuracy"], rows))


@section("pruning", "Student cut from the teacher: pruned + KD against KD from scratch", "pruning")
def _pruning(r: Report) -> str | None:
    """--init prune: the cut, and the pruned KD student beside the same architecture distilled from random weights."""
    pr = get(r, "pruning")
    if not isinstance(pr, dict):
        return None
    cut, val, test = pr.get("cut") or {}, pr.get("val_accuracy") or {}, pr.get("test_accuracy") or {}
    intro = (f"<p><code>{e(pr.get('student', '?'))}</code> ({num(pr.get('params'))} params) cut from {e(cut.get('source', '?'))} "
             f"({num(cut.get('teacher_params'))} params) in {len(cut.get('steps') or [])} steps by {e(repr(cut.get('criterion')))} "
             f"importance; validation accuracy right after the cut, before any training: <b>{pct(cut.get('val_accuracy_at_cut'))}</b>.</p>"
             f"<p>Verdict: {e(pr.get('verdict', ''))}.</p>")
    rows = [["pruned + KD (ships)", "the teacher's surviving weights", pct(val.get("pruned_kd")), pct(test.get("pruned_kd"))],
            ["KD from scratch", "random weights, same architecture", pct(val.get("scratch_kd")), pct(test.get("scratch_kd"))]]
    return intro + table(["student", "starts from", "val accuracy", "test accuracy"], rows)


def _teacher_input(r: Report) -> str:
    """A teacher file's input contract and its validation accuracy under each scaling the build tried."""
    desc = get(r, "teacher.input_description")
    if not desc:
        return ""
    out = f"<p>Teacher input: {e(desc)} ({e(get(r, 'teacher.input_source', ''))}).</p>"
    cands = [c for c in get(r, "teacher.input_candidates", []) or [] if isinstance(c, dict)]
    if cands:
        out += table(["input given to the teacher", "--teacher-input", "validation accuracy"],
                     [[c.get("description"), c.get("contract"), pct(c.get("val_accuracy")) if _num(c.get("val_accuracy")) else "fails"]
                      for c in cands])
    return out


# The three --student-init arms: report key, name, starting weights (report.md shares it).
START_ARMS = (("from_zero_kd", "from zero + KD", "random weights"), ("pretrained", "pretrained, labels only", "the starting weights"),
              ("pretrained_kd", "pretrained + KD", "the starting weights"))


@section("starts", "Where the student started: from zero, pretrained, pretrained + KD", "starts")
def _starts(r: Report) -> str | None:
    """--student-init: the same student on one budget three ways, with what the start and the teacher each add."""
    st = get(r, "starts")
    if not isinstance(st, dict):
        return None
    kd, zero, arms = st.get("kd_over_fine_tuning_points") or {}, st.get("pretrained_kd_over_zero_points") or {}, st.get("arms") or {}
    intro = (f"<p><code>{e(st.get('student', '?'))}</code> ({num(st.get('params'))} params), --student-init {e(st.get('init', '?'))}; "
             f"{e(st.get('measured', ''))}. KD over fine-tuning alone: <b>{kd.get('val', 0):+.2f}</b> points on validation, "
             f"{kd.get('test', 0):+.2f} on test; pretrained + KD over from zero: <b>{zero.get('val', 0):+.2f}</b> / {zero.get('test', 0):+.2f}.</p>")
    rows = [[name, start, pct((arms.get(k) or {}).get("val_accuracy")), pct((arms.get(k) or {}).get("test_accuracy")),
             e((arms.get(k) or {}).get("device") or "not recorded")] for k, name, start in START_ARMS]
    return intro + table(["student", "starts from", "val accuracy", "test accuracy", "trained on"], rows)


@section("fidelity-matrix", "Fidelity matrix: runtimes × kernels", "fidelity_matrix")
def _fidelity_matrix(r: Report) -> str | None:
    from ..bench.fidelity_matrix import FidelityMatrix
    from ..serde import from_jsonable

    files = [(f, from_jsonable(FidelityMatrix, f["matrix"])) for f in get(r, "fidelity_matrix.files", []) or [] if isinstance(f, dict)]
    if not files:
        return None
    hint = get(r, "fidelity_matrix.setup_hint")
    return ("<p>The same agent scored the test samples under each runtime set up on this machine (converter: the LiteRT the build "
            "converted and verified with) and each kernel mode: xnnpack (the default delegate an app gets), builtin (optimized "
            "kernels, no delegate), reference (reference kernels).</p>" + "".join(_matrix_block(f, m) for f, m in files)
            + where(e("; ".join(_matrix_places(r)) or "no cell ran")) + (f'<p class="fail">{e(hint)}</p>' if hint else ""))


def _matrix_block(f: dict[str, Any], m: Any) -> str:
    """One file's matrix: its verdict, the table with divergent rows marked, what divergent means."""
    from ..bench.fidelity_matrix import divergence_verdict, matrix_rows

    header, rows = matrix_rows(m)
    classes = [["divergent" if cell.divergent else ""] * len(header) for cell in m.cells]
    ok = not m.divergent and not m.failed
    return (f"<h3>{e(f.get('path'))} ({e(f.get('variant'))}{', ships' if f.get('shipped') else ''})</h3>"
            f'<p class="{"pass" if ok else "fail"}">{e(divergence_verdict(m))}</p>'
            + table(list(header), [list(row) for row in rows], classes=classes)
            + f'<p class="muted">{e(m.model)} on {e(m.npz)}, n={e(m.n)}, {e(m.threads)} thread(s); reference cell '
              f"{e(m.reference or 'none')}; a cell diverges when its top-1 agreement with the reference is below "
              f"{pct(m.min_agreement)} or its accuracy is more than {100 * m.max_accuracy_drop:g} point(s) below the reference's.</p>")


@section("training", "Training curves", "teacher", "students")
def _training(r: Report) -> str | None:
    series = []
    for i, (label, path) in enumerate((("teacher", "teacher.train"), ("student, no KD", "students.baseline.train"), ("student, KD", "students.kd.train"),
                                       ("student, pseudo-labels", "students.pseudo.train"))):
        hist = [h for h in get(r, f"{path}.history", []) or [] if isinstance(h, dict)]
        if hist:
            series.append(Series(label, [h.get("epoch") for h in hist], [100 * h.get("val_accuracy", 0) for h in hist],
                                 "#374151" if i == 0 else PALETTE[i]))
    rows = []
    for label, path in (("teacher " + str(get(r, "teacher.source", "")), "teacher"), (f"student, no KD: {get(r, 'students.baseline.label', '')}", "students.baseline"),
                        (f"student, KD: {get(r, 'students.kd.label', '')}", "students.kd"),
                        (f"student, pseudo-labels: {get(r, 'students.pseudo.label', '')}", "students.pseudo")):
        if isinstance(get(r, path), dict):
            rows.append([label, num(get(r, f"{path}.params")), pct(get(r, f"{path}.val_accuracy")), pct(get(r, f"{path}.test_accuracy")),
                         get(r, f"{path}.train.best_epoch", "–"), num(get(r, f"{path}.train.seconds")), e(get(r, f"{path}.train.device") or "not recorded")])
    if not series and not rows:
        return None
    chart = svg.lines(series, title="Validation accuracy per epoch", x_label="epoch", y_label="validation accuracy (%)") if series else ""
    opts = get(r, "options", {}) or {}
    kd = f"KD: {e(opts.get('kd_loss'))} loss, T={e(opts.get('temperature'))}, α={e(opts.get('alpha'))}. " if opts else ""
    return (chart + where(f"training on this build's machine (the device of each row), scored on the validation split (model kept from the best epoch). {kd}")
            + table(["model", "params", "val accuracy", "test accuracy", "best epoch", "training s", "trained on"], rows) + _teacher_input(r))


@section("stages", "Stage times", "stage_times")
def _stages(r: Report) -> str | None:
    times = [t for t in get(r, "stage_times", []) or [] if isinstance(t, dict)]
    if not times:
        return None
    bars = [Bar(str(t.get("stage")), t.get("original_seconds") or t.get("seconds") or 0.0, PALETTE[5] if t.get("reused") else PALETTE[0],
                f"{num(t.get('original_seconds'))} s" + (" (reused now)" if t.get("reused") else "")) for t in times]
    chart = svg.hbars(bars, title="Seconds each stage took when it was computed", x_label="seconds (wall clock)")
    total = get(r, "total_seconds")
    rows = [[str(t.get("stage")), num(t.get("seconds")), "reused" if t.get("reused") else "run",
             "not run now" + (f" ({num(t.get('original_peak_rss_mb'))} when computed)" if t.get("original_peak_rss_mb") is not None else "")
             if t.get("reused") else num(t.get("peak_rss_mb")), "-" if t.get("reused") else num(t.get("process_peak_mb"))] for t in times]
    return (chart + where(f"host wall-clock time; reused stages were computed by an earlier invocation and cost "
                          f"~0 s now. This invocation: {num(total)} s in all.")
            + table(["stage", "seconds now", "this invocation", "peak RSS MiB (stage)", "process peak RSS MiB so far"], rows)
            + where("peak RSS: the build process's highest resident set while the stage ran (VmRSS sampled every 50 ms, plus any "
                    "new ru_maxrss reached in it); 'so far' is ru_maxrss at the stage's end, the peak over all stages until then."))


@section("where", "Where each number was measured", "tools", "data")
def _where(r: Report) -> str | None:
    rows = [
        ["test accuracy, agreement (ledger)", f"host build machine, on {get(r, 'ledger.n_test', '?')} held-out test samples of "
                                              f"{get(r, 'data.spec.name', '?')} ({get(r, 'data.spec.source', '?')})"],
        ["conversion checks", "host build machine, held-out validation samples"],
        ["latency, load time, peak RSS, agent accuracy", "; ".join(sorted({str(b.get('where')) for _, b in _bench_rows(r)})) or "not benchmarked"],
        ["fidelity matrix (runtimes × kernels)", "; ".join(_matrix_places(r)) or "not run"],
        ["sizing cost and latency", f"estimated from the model structure and the profile {get(r, 'profile.name', '?')} "
                                    f"(throughput: {get(r, 'profile.throughput.source', '?')}); not measured"],
        ["training curves, stage times", "host build machine"],
    ]
    tools = get(r, "tools", {}) or {}
    return (table(["numbers", "where"], rows)
            + (f'<p class="muted">Tools: {e(", ".join(f"{k} {v}" for k, v in tools.items()))}.</p>' if tools else ""))


def _matrix_places(r: Report) -> list[str]:
    cells = [c for f in get(r, "fidelity_matrix.files", []) or [] for c in get(f, "matrix.cells", []) or [] if isinstance(c, dict)]
    return sorted({f"{c.get('runtime')}: {c.get('where')}" for c in cells if c.get("where")})


@section("options", "Tools and options", "profile")
def _options(r: Report) -> str | None:
    parts = []
    for key, title in (("options", "build options"), ("profile", "device profile"), ("data", "data"), ("tools", "tool versions")):
        value = r.get(key)
        if value is not None:
            parts.append(f"<details><summary>{e(title)}</summary>{generic(value)}</details>")
    return "".join(parts) or None


# ---- generic rendering of keys no section claims ------------------------------------------------


def generic(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: scalars inline, flat dicts as key/value tables, lists of flat dicts as tables."""
    if isinstance(value, dict):
        if not value:
            return '<span class="muted">(empty)</span>'
        if all(_scalar(v) for v in value.values()):
            return table(["key", "value"], [[k, _cell(v)] for k, v in value.items()])
        if depth >= 3:
            return f"<pre>{e(json.dumps(value, indent=2, default=str))}</pre>"
        # Scalars first as one compact table, then each nested value under its key.
        flat = [[k, _cell(v)] for k, v in value.items() if _scalar(v)]
        nested = [(k, v) for k, v in value.items() if not _scalar(v)]
        return ((table(["key", "value"], flat) if flat else "")
                + "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{generic(v, depth + 1)}</dd>" for k, v in nested) + "</dl>")
    if value is None and depth == 0:
        return '<p class="muted">Not run in this build.</p>'
    if isinstance(value, list):
        if not value:
            return '<span class="muted">(none)</span>'
        if all(isinstance(v, dict) and all(_scalar(x) or _short_list(x) for x in v.values()) for v in value):
            cols: list[str] = []
            for v in value:
                cols += [k for k in v if k not in cols]
            return table(cols, [[_cell(v.get(c)) for c in cols] for v in value])
        if all(_scalar(v) for v in value):
            return e(", ".join(str(v) for v in value))
        if depth >= 3:
            return f"<pre>{e(json.dumps(value, indent=2, default=str))}</pre>"
        return "<ol>" + "".join(f"<li>{generic(v, depth + 1)}</li>" for v in value) + "</ol>"
    return e(_cell(value))


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _short_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= 8 and all(_scalar(x) for x in v)


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return num(v, 4)
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


# ---- the page -----------------------------------------------------------------------------------

CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--accent:#0072B2}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:#f9fafb}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
header h1{margin:0 0 4px;font-size:26px}
header p{margin:2px 0;color:var(--muted)}
nav{margin:14px 0 8px;display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13px}
nav a{color:var(--accent);text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:18px 0}
section h2{margin:0 0 10px;font-size:19px}
h3{font-size:15px;margin:16px 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:#f8fafc}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:650}
.card .s{font-size:12px;color:var(--muted)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
td.over{color:#b91c1c;font-weight:600}
td.divergent{color:#b91c1c;font-weight:600;background:#fef2f2}
.where{font-size:12.5px;color:#374151;background:#f0f7ff;border-left:3px solid var(--accent);padding:6px 10px;margin:6px 0 10px}
.where span{font-weight:650;text-transform:uppercase;font-size:11px;letter-spacing:.05em;color:var(--accent);margin-right:6px}
.muted{color:var(--muted);font-size:13px}
.pass{color:#166534}.fail{color:#b91c1c}
.missing{color:#92400e;background:#fffbeb;border:1px dashed #f59e0b;padding:8px 12px;border-radius:6px;font-size:13px}
dl{margin:4px 0}dt{font-weight:600;margin-top:6px}dd{margin:2px 0 4px 16px}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
pre{font-size:12px;background:#f3f4f6;padding:8px;overflow-x:auto}
svg{display:block;margin:6px 0}
@media print{body{background:#fff}section{break-inside:avoid;border:none}}
"""


def render_html(report: Report) -> str:
    """The whole page.  Never raises on a malformed or partial report: broken sections become notices."""
    r = report if isinstance(report, dict) else {}
    data_name = get(r, "data.spec.name", "?")
    profile_name = get(r, "profile.name", "?")
    title = f"edge-distill report: {data_name} for {profile_name}"
    blocks, nav, claimed = [], [], set(META_KEYS)
    for s in SECTIONS:
        claimed.update(s.keys)
        try:
            body = s.render(r)
        except Exception as exc:  # one bad section must not take the page down; say what was missing
            body = f'<div class="missing">This section could not be drawn from report.json ({e(type(exc).__name__)}: {e(exc)}).</div>'
        if body is None:
            continue
        blocks.append(f'<section id="{s.id}"><h2>{e(s.title)}</h2>{body}</section>')
        nav.append(f'<a href="#{s.id}">{e(s.title)}</a>')
    for key in r:
        if key in claimed:
            continue
        sid = "extra-" + "".join(ch if ch.isalnum() else "-" for ch in key)
        heading = key.replace("_", " ").capitalize()
        blocks.append(f'<section id="{sid}"><h2>{e(heading)}</h2>{generic(r[key])}</section>')
        nav.append(f'<a href="#{sid}">{e(heading)}</a>')
    profile_desc = get(r, "profile.description", "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{e(title)}</h1>"
        f"<p>{e(profile_name)}: {e(profile_desc)}</p>"
        f"<p>Generated {e(get(r, 'generated_at', '?'))} from <code>{e(get(r, 'run_dir', '?'))}/report.json</code>.</p></header>"
        f"<nav>{''.join(nav)}</nav>{''.join(blocks)}"
        "</main></body></html>\n"
    )
