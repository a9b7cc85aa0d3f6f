"""Helpers shared by the benchmark suites: where results go and how BENCHMARKS.md sections are replaced."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCHMARKS_MD = HERE / "BENCHMARKS.md"


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def replace_section(name: str, markdown: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


def machine() -> str:
    from edge_distill.bench import describe_host

    return describe_host() + f" ({platform.machine()} host: these are host numbers, not device numbers)"


def run_cli_build(work: Path, name: str, args: list[str], gate_may_fail: bool = False) -> dict:
    """``edge-distill build --out work/runs/NAME ARGS`` in its own process, as a user runs it (its log beside the run
    directory); returns its report.json with ``_wall_seconds`` added.  A failed build stops the benchmark, naming its log,
    except, with ``gate_may_fail``, one the quality gate refused: then ``{"_gate_failed": True, "ledger": ..., "manifest": ...}``
    from its verify stage and run manifest (there is no report: nothing shipped)."""
    out = work / "runs" / name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(ROOT / ".venv" / "bin" / "edge-distill"), "build", "--out", str(out), *args]
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    with open(out.parent / f"{name}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    from edge_distill.errors import QualityGateError

    if done.returncode == QualityGateError.exit_code and gate_may_fail:
        print(f"  {name}: the quality gate refused its INT8 file (see {out.parent / f'{name}.log'})", flush=True)
        return {"_gate_failed": True, "_wall_seconds": round(time.perf_counter() - started, 1),
                "ledger": json.loads((out / "verify" / "ledger.json").read_text()), "manifest": json.loads((out / "manifest.json").read_text())}
    if done.returncode != 0:
        raise SystemExit(f"build {name} failed (exit {done.returncode}); see {out.parent / f'{name}.log'}")
    report = json.loads((out / "report.json").read_text())
    report["_wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"  {name}: {report['_wall_seconds']:.0f} s", flush=True)
    return report
