"""The wheel, not the editable install: built from the checkout it holds every package and data file under
edge_distill/ and export/ (export/ as edge_distill/export/), and installed into a fresh venv that cannot see the
checkout, its CLI runs the demo build.  An editable install finds a package that the wheel misses; this does not."""

from __future__ import annotations

import ast
import email.parser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> where its files are inside the wheel (and the installed package)
SHIPPED = {"edge_distill": "edge_distill", "export": "edge_distill/export"}
# what the build copy leaves out: VCS, venvs and build outputs (.gitignore's entries), never sources
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", ".pytest_cache",
                                     ".hypothesis", "__pycache__", "*.py[cod]")


def _is_bytecode(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo", ".pyd")


def _expected() -> dict[str, str]:
    """Every source and data file under the shipped folders -> its name inside the wheel."""
    out = {}
    for folder, installed in SHIPPED.items():
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and not _is_bytecode(path.relative_to(ROOT)):
                out[f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"] = path.relative_to(ROOT).as_posix()
    return out


def _source_version() -> str:
    tree = ast.parse((ROOT / "edge_distill" / "versions.py").read_text())
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "__version__" for t in node.targets))


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the checkout, so stale build/ output can neither leak into it nor be left behind."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    # the Makefile's `make wheel` command: the build backend from this venv, nothing downloaded
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src])
    (built,) = (tmp / "dist").glob("edge_distill-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A venv of the base interpreter with the wheel installed in it; the dependencies (torch, tensorflow, ...) come
    from this venv's site-packages through a .pth line, which adds the folder to sys.path but, unlike a site dir, does
    not run the .pth files in it: the editable install's finder (__editable__.edge_distill-*.pth) never loads."""
    tmp = tmp_path_factory.mktemp("installed")
    venv = tmp / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # this venv's pip, run by the new interpreter (pip --python): installs into the new venv, offline, and before
    # the .pth exists it sees no other edge-distill to uninstall or be satisfied by
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel])
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "_edge_distill_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "work"  # every command runs here, not in the checkout
    work.mkdir()
    return {"venv": venv, "python": python, "cli": venv / "bin" / "edge-distill", "env": env, "cwd": work}


def test_the_wheel_holds_every_package_and_data_file(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        version = email.parser.Parser().parsestr(z.read(metadata).decode())["Version"]
    payload = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    expected = _expected()

    def packages(files):
        return {str(Path(f).parent).replace("/", ".") for f in files if f.endswith(".py")}

    missing_packages = sorted(packages(expected) - packages(payload))
    assert not missing_packages, f"packages missing from the wheel: {missing_packages}"
    missing = sorted(f"{expected[n]} (as {n})" for n in set(expected) - payload)
    assert not missing, "files missing from the wheel:\n" + "\n".join(missing)
    extra = sorted(payload - set(expected))
    assert not extra, "files in the wheel that the source tree does not have:\n" + "\n".join(extra)
    assert not [n for n in names if _is_bytecode(Path(n))]
    assert version == _source_version()


def test_the_installed_wheel_imports_from_itself_and_its_cli_runs(installed):
    run = dict(env=installed["env"], cwd=installed["cwd"])
    venv = installed["venv"].resolve()
    # every module of the installed package imports, each from the venv, none from the checkout
    listing = _run([installed["python"], "-c", """if True:
        import importlib, json, pkgutil, edge_distill
        names = [m.name for m in pkgutil.walk_packages(edge_distill.__path__, "edge_distill.") if not m.name.endswith("__main__")]
        print(json.dumps({n: importlib.import_module(n).__file__ for n in ["edge_distill", *names]}))"""], **run)
    files = json.loads(listing.stdout.strip().splitlines()[-1])
    assert {"edge_distill.export.agent", "edge_distill.stages", "edge_distill.tasks"} <= set(files)
    outside = {n: f for n, f in files.items() if not Path(f).resolve().is_relative_to(venv)}
    assert not outside, f"imported from outside the installed wheel: {outside}"
    assert not [f for f in files.values() if Path(f).resolve().is_relative_to(ROOT)]

    assert "build" in _run([installed["cli"], "--help"], **run).stdout
    assert _run([installed["cli"], "--version"], **run).stdout.split() == ["edge-distill", _source_version()]
    listed = _run([installed["cli"], "profiles", "list"], **run).stdout.split()  # the profiles' .toml package data
    assert {"rpi4", "rpi-zero-2w", "android-lowend", "host"} <= set(listed)


# The demo build with short training: the stages that lean on the package's files (profiles, convert, verify, the
# bench agent and the bundle templates from export/) run as in `make demo`.  The demo itself trains for ~40 s on an
# idle 2-core host (150 s measured here on a busy one) and runs under -m slow.
SHORT = ["--teacher-epochs", "2", "--student-epochs", "6", "--bench-warmup", "2", "--bench-runs", "20"]


@pytest.mark.parametrize("flags", [pytest.param(SHORT, id="short-training"), pytest.param([], id="demo", marks=pytest.mark.slow)])
def test_the_installed_wheel_runs_the_demo_build(installed, flags):
    out = installed["cwd"] / ("rpi4-short" if flags else "rpi4")
    _run([installed["cli"], "build", "--profile", "rpi4", "--out", out, "--quiet", *flags], env=installed["env"],
         cwd=installed["cwd"])
    report = json.loads((out / "report.json").read_text())
    assert report["ledger"]["passed"]
    files = {f["variant"]: f["path"] for f in report["conversion"]["files"]}
    int8, shipped = out / files["tflite_int8"], out / files[report["conversion"]["gate"]["deploy_variant"]]
    assert int8 == out / "student/student_int8.tflite" and int8.read_bytes()[4:8] == b"TFL3"
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(int8), num_threads=1)
    assert [d["dtype"].__name__ for d in (*details.get_input_details(), *details.get_output_details())] == ["int8", "int8"]
    for name in ("report.md", "report.html", "manifest.json"):
        assert (out / name).is_file(), name
    assert report["bench"]["results"]  # the bench agent, edge_distill/export/agent.py, ran from the wheel
    # the Raspberry Pi bundle holds the shipped file and the wheel's copy of export/infer.py
    assert (out / "bundle/raspberry-pi/model.tflite").read_bytes() == shipped.read_bytes()
    assert (out / "bundle/raspberry-pi/infer.py").read_bytes() == (ROOT / "export/infer.py").read_bytes()
