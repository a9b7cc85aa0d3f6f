"""report.html from a real build: rendered in headless Chromium (screenshot not blank, no console
errors), self-contained, every chart says where it was measured; `edge-distill report` redraws it;
the renderer survives missing, extra and malformed keys."""

import copy
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from edge_distill.cli import main
from edge_distill.data.images import decode_png
from edge_distill.report.html import SECTIONS, render_html
from edge_distill.report.writer import render_markdown
from system_packages import chromium_path, skip_reason

# Short training keeps this test quick; the quality gate is opened because the report, not the student, is under test.
BUILD = ["--teacher-epochs", "1", "--student-epochs", "2", "--max-int8-drop", "100", "--bench-warmup", "2", "--bench-runs", "20", "--quiet"]
CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=skip_reason("chromium", "headless rendering of report.html"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rpi4"
    assert main(["build", "--profile", "rpi4", "--out", str(out), *BUILD]) == 0
    return out, json.loads((out / "report.json").read_text())


# ---- headless Chromium ---------------------------------------------------------------------------


def chromium(page, png, tmp_path, height=1600):
    """Render ``page`` and screenshot it; returns the console messages Chromium logged (each one an error
    for a page that has no scripts).  The resolver maps every host to nothing: the page must need no network."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr", "--v=0", f"--window-size=1200,{height}", f"--screenshot={png}", page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    return [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def ink(png):
    """Share of pixels that are not page background, and how many distinct colours they use."""
    img = decode_png(png.read_bytes())[:, :, :3].astype(int)
    marked = img.min(axis=2) < 200
    colours = {tuple(c // 16) for c in img[marked][:: max(1, int(marked.sum()) // 5000)]}
    return float(marked.mean()), len(colours)


@needs_chromium
def test_the_checks_themselves_catch_a_blank_page_and_a_console_error(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    assert chromium(blank, tmp_path / "blank.png", tmp_path, 600) == []
    assert ink(tmp_path / "blank.png")[0] == 0.0
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><html><body><h1>x</h1><script>undefinedFunction()</script></body></html>")
    console = chromium(broken, tmp_path / "broken.png", tmp_path, 600)
    assert any("Uncaught ReferenceError" in line for line in console)


@needs_chromium
def test_report_renders_in_headless_chromium(run, tmp_path):
    out, _ = run
    png = tmp_path / "report.png"
    console = chromium(out / "report.html", png, tmp_path)
    assert console == [], "console errors:\n" + "\n".join(console)
    share, colours = ink(png)
    assert share > 0.03, f"page looks blank: {share:.1%} of pixels are not background"
    assert colours >= 8, f"only {colours} colours: the charts did not draw"


def test_html_is_self_contained(run):
    out, _ = run
    html = (out / "report.html").read_text()
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) <= {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched


def test_every_chart_says_where_it_was_measured_and_shows_the_builds_numbers(run):
    out, report = run
    html = (out / "report.html").read_text()
    sections = re.findall(r'<section id="([^"]+)">(.*?)</section>', html, re.S)
    ids = [s for s, _ in sections]
    for wanted in ("summary", "accuracy-latency", "size", "latency", "sizing", "ledger", "training", "where"):
        assert wanted in ids
    charts = [(sid, body) for sid, body in sections if "<svg" in body]
    assert len(charts) >= 6
    for sid, body in charts:
        assert 'class="where"' in body, f"section {sid} has a chart but no 'measured where' caption"
    assert 'class="missing"' not in html  # every section drew from a complete report
    int8 = next(r for r in report["ledger"]["rows"] if r["variant"] == "tflite_int8")
    assert f"{100 * int8['accuracy']:.2f}%" in html
    for b in report["bench"]["results"]:
        assert b["where"] in html
    assert "estimated, not measured" in html  # the sizing chart is labelled as an estimate
    # One point per sizing candidate and per benchmarked model.
    sizing = dict(sections)["sizing"]
    assert sizing.count("<circle") + sizing.count("<polygon") == len(report["sizing"]["candidates"])


def test_build_log_holds_what_quiet_hid(run):
    out, report = run
    log = (out / "build.log").read_text()
    for line in ("[data]", "[teacher]", "[convert]", "[verify]", "[bench]", "epoch 1/", "teacher logits: done", "bench models: done",
                 "INT8 student", "report.html"):
        assert line in log, line


def test_inspect_counts_the_same_macs_as_the_sizing_stage(run):
    from edge_distill.inspection import inspect_model

    out, report = run
    for name in ("student_int8.tflite", "student_fp32.tflite", "student.onnx"):
        assert inspect_model(out / "student" / name).macs == report["sizing"]["cost"]["macs"], name


def test_report_command_redraws_both_files_from_report_json(run, tmp_path, capsys):
    out, report = run
    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    md = (copy_dir / "report.md").read_text()
    (copy_dir / "report.html").unlink()
    (copy_dir / "report.md").unlink()
    assert main(["report", str(copy_dir)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (copy_dir / "report.md").read_text() == md
    assert (copy_dir / "report.html").read_text() == render_html(report)


def test_report_command_errors_are_clear(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) != 0
    err = capsys.readouterr().err
    assert "No report.json" in err and "edge-distill build" in err and "Traceback" not in err
    (tmp_path / "report.json").write_text('{"ledger": [1, 2')
    assert main(["report", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "not valid JSON" in err and "Traceback" not in err
    (tmp_path / "report.json").write_text('{"generated_at": "x"}')  # parses, but lacks what report.md needs
    assert main(["report", str(tmp_path)]) != 0
    assert "report.html was still written" in capsys.readouterr().err
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("key", ["ledger", "bench", "sizing", "profile", "conversion", "students", "teacher", "data", "stage_times", "options", "tools",
                                 "fidelity_matrix"])
def test_a_missing_key_removes_only_its_own_content(run, key):
    _, report = run
    partial = {k: v for k, v in report.items() if k != key}
    html = render_html(partial)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert html.count("<section") >= 4


def test_extra_and_malformed_keys(run):
    _, report = run
    r = copy.deepcopy(report)
    r["escalation"] = {"tried": [{"variant": "int8_per_tensor", "accuracy": 0.97, "passed": False}], "chosen": "int8_per_channel"}
    r["ledger"]["rows"][0] = "not a row"
    r["bench"]["results"][0]["p50_ms"] = "fast"
    html = render_html(r)
    assert 'id="extra-escalation"' in html and "int8_per_tensor" in html  # a new stage's data shows up unbidden
    assert "Accuracy against latency" in html  # the malformed entries are skipped, the rest still drawn
    r["sizing"] = ["garbage"]
    html = render_html(r)
    assert 'class="missing"' in html or 'id="sizing"' not in html


def test_sections_are_registered_once_and_in_order():
    ids = [s.id for s in SECTIONS]
    assert len(ids) == len(set(ids)) and ids[0] == "summary"


def test_markdown_and_html_are_drawn_from_the_same_numbers(run):
    out, report = run
    md = render_markdown(report)
    html = (out / "report.html").read_text()
    for row in report["ledger"]["rows"]:
        pct = f"{100 * row['accuracy']:.2f}%"
        assert pct in md and pct in html
    assert np.isclose(report["ledger"]["int8_drop_points"], float(re.search(r"lost <b>(-?[\d.]+)</b>", html).group(1)), atol=0.005)


def test_a_model_that_could_not_be_converted_keeps_a_ledger_row_with_the_reason(run):
    """An optional variant (a --peer's file, ONNX Runtime INT8) that failed is listed, unscored, with the converter's words."""
    from edge_distill.serde import from_jsonable, to_jsonable
    from edge_distill.verify import MissingRow, VerifyResult, format_ledger

    _, report = run
    r = copy.deepcopy(report)
    reason = "litert-torch 0.10.0: aten.fft_rfft2 has no TFLite lowering | see\n  the log"
    r["ledger"]["missing"] = [to_jsonable(MissingRow("student tflite_int8_litert_torch", "tflite_int8_litert_torch", reason))]
    md = render_markdown(r)
    row = next(line for line in md.splitlines() if line.startswith("| student tflite_int8_litert_torch"))
    assert "could not be converted: litert-torch 0.10.0: aten.fft_rfft2 has no TFLite lowering \\| see the log" in row  # one line, pipe escaped
    assert row.count(" | ") == md.splitlines()[md.splitlines().index(row) - 1].count(" | ")  # as many cells as the row above
    assert f"could not be converted: {reason}" in render_html(r)
    assert reason in format_ledger(from_jsonable(VerifyResult, r["ledger"]))
    assert report["ledger"].get("missing") == []  # this build converted everything it asked for


# ---- the fidelity matrix (every build) ----------------------------------------------------------


def test_every_build_scores_the_shipped_file_under_each_runtime_and_kernel_mode(run):
    from edge_distill.bench.fidelity_matrix import FidelityMatrix, matrix_markdown
    from edge_distill.bench.runners import KERNELS
    from edge_distill.serde import from_jsonable

    out, report = run
    files = report["fidelity_matrix"]["files"]
    shipped = files[0]
    assert shipped["shipped"] and shipped["variant"] == report["ledger"]["gated_variant"]
    assert [f["variant"] for f in files[1:]] == ["tflite_fp32"]
    m = from_jsonable(FidelityMatrix, shipped["matrix"])
    assert [c.kernels for c in m.cells if c.runtime == "converter"] == list(KERNELS)
    assert m.reference == "converter / builtin" and m.n == report["ledger"]["n_test"]
    # The converter's default cell is what the ledger scored: the same file, runtime, delegate and test split.
    ledger = next(r for r in report["ledger"]["rows"] if r["variant"] == shipped["variant"])
    assert m.cell("converter", "xnnpack").accuracy == pytest.approx(ledger["accuracy"], abs=1e-6)
    assert m.runtimes == tuple(json.loads((out / "bench" / "fidelity_matrix.json").read_text())["files"][0]["matrix"]["runtimes"])
    md = (out / "report.md").read_text()
    assert "## Fidelity matrix" in md and matrix_markdown(m) in md and "**Verdict:**" in md
    html = (out / "report.html").read_text()
    section = re.search(r'<section id="fidelity-matrix">(.*?)</section>', html, re.S).group(1)
    assert section.count("<tr>") == 1 + len(m.cells) + 1 + len(from_jsonable(FidelityMatrix, files[1]["matrix"]).cells)
    assert 'class="where"' in section


def test_a_report_json_from_before_the_matrix_still_rerenders(run, tmp_path, capsys):
    out, report = run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "fidelity_matrix"}))
    assert main(["report", str(old)]) == 0
    assert "Fidelity matrix" not in (old / "report.md").read_text()
    assert 'id="fidelity-matrix"' not in (old / "report.html").read_text()


def test_a_runtime_not_set_up_is_named_with_its_setup_command_and_setting_it_up_redoes_only_the_matrix(run, tmp_path, monkeypatch):
    out, _ = run
    copy_dir = tmp_path / "copy"
    shutil.copytree(out, copy_dir)
    monkeypatch.setenv("EDGE_DISTILL_RUNTIME_CACHE", str(tmp_path / "no-runtimes"))  # nothing set up there
    # The converter as the device runtime, so the build sets none up: the stages it judges are redone, training is not.
    assert main(["build", "--profile", "rpi4", "--out", str(copy_dir), *BUILD, "--device-runtime", "converter"]) == 0
    report = json.loads((copy_dir / "report.json").read_text())
    reused = {t["stage"] for t in report["stage_times"] if t["reused"]}
    assert {"data", "teacher", "size", "baseline", "distill"} <= reused and "convert" not in reused
    assert next(r for r in report["ledger"]["rows"] if r["variant"] == "tflite_int8")["runtime"].startswith("litert 2.1")
    m = report["fidelity_matrix"]
    assert {c["runtime"] for f in m["files"] for c in f["matrix"]["cells"]} == {"converter"}
    assert "`edge-distill runner setup litert==2.3.0`" in m["setup_hint"]
    assert m["setup_hint"] in (copy_dir / "report.md").read_text()


def test_fidelity_command_on_the_builds_int8_file(run, capsys):
    from edge_distill.bench.fidelity_matrix import FidelityMatrix
    from edge_distill.serde import from_jsonable

    out, report = run
    args = ["fidelity", str(out / "student" / "student_int8.tflite"), "--npz", str(out / "bench" / "test_nhwc.npz"), "--runtimes", "converter"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("student_int8.tflite on test_nhwc.npz: n=360, 1 thread;") and len(lines) == 2 + 3 + 1 + 1
    assert lines[-1].startswith("0 of 3 cells divergent, 0 could not run.")
    assert main([*args, "--json", "--threads", "2"]) == 0
    captured = capsys.readouterr()
    m = from_jsonable(FidelityMatrix, json.loads(captured.out))
    built = from_jsonable(FidelityMatrix, report["fidelity_matrix"]["files"][0]["matrix"])
    assert m.threads == 2 and [c.accuracy for c in m.cells] == [c.accuracy for c in built.cells if c.runtime == "converter"]
    assert "0 of 3 cells divergent" in captured.err.splitlines()[-1]
