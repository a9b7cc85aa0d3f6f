"""Separate Python environments that hold only a device runtime, for running the agent as a device would.

    python = runtime_venv(("tflite-runtime==2.14.0", "numpy<2"))
    subprocess.run([str(python), "agent.py", "model.tflite"], env=venv_environ())

The host's own environment carries the converter's runtime (onnx2tf's ai-edge-litert pin, numpy 1.x, torch,
tensorflow); a device installs whatever is current.  A runtime venv is a plain ``python -m venv`` with the
given requirements and nothing else, created once per (requirements, base Python) and cached in
``cache_root`` (``$EDGE_DISTILL_RUNTIME_CACHE``, else ``$XDG_CACHE_HOME/edge-distill/runtimes``, else
``~/.cache/edge-distill/runtimes``):

    <requirements>-<hash>/             the venv
    <requirements>-<hash>/ready.json   written last (temp file + rename): requirements, base Python, what pip installed
    <requirements>-<hash>.lock         held (flock) while one process checks or builds it

Only a venv with ``ready.json`` is ever used: one left by an interrupted or failed install is removed and
built again.  The venv is built in place (not renamed into place) because pip writes its own absolute path
into the scripts it installs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from ..console import get_console
from ..errors import BenchError, ConfigError
from .runners import run_streaming, user_cache_dir, venv_environ  # noqa: F401  (venv_environ: part of this module's API)

_PIP_HINTS = dict(timeout_hint="Check that the package index is reachable, then try again.",
                  failure_hint="Check that the package index is reachable and that every requirement has a wheel for this Python "
                               "and machine; the unfinished venv is never used.")

READY = "ready.json"
_PROBE = "import json, platform, sys; print(json.dumps([platform.python_version(), platform.machine(), " \
         "getattr(sys, '_base_executable', sys.executable)]))"


def default_cache_root() -> Path:
    return user_cache_dir("EDGE_DISTILL_RUNTIME_CACHE", "runtimes")


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent first builds of one venv are then the caller's concern
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel if this process dies, so a crash never wedges it
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _identity(base_python: str) -> tuple[str, str, str]:
    """(version, machine, base executable) of the interpreter that will create the venv."""
    try:
        proc = subprocess.run([base_python, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, env=venv_environ())
        version, machine, base = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise ConfigError(f"Base Python {base_python!r} for a runtime venv does not run: {exc}.",
                          "Pass the path of a working python3 (3.8 or newer).") from None
    return version, machine, base


def _is_ready(venv: Path) -> bool:
    # The interpreter link is checked too: a venv whose base Python was removed or upgraded cannot start.
    return (venv / READY).is_file() and _python_in(venv).exists()


def _requirements(requirements: tuple[str, ...]) -> tuple[str, ...]:
    reqs = tuple(str(r).strip() for r in requirements)
    if not reqs or any(not r or r.startswith("-") for r in reqs):
        raise ConfigError(f"Runtime venv requirements {requirements!r} are invalid.",
                          "Give pip requirement specifiers, e.g. ('tflite-runtime==2.14.0', 'numpy<2').")
    return reqs


def _venv_dir(reqs: tuple[str, ...], root: Path, identity: tuple[str, str, str]) -> Path:
    key = hashlib.sha256(json.dumps([reqs, *identity]).encode()).hexdigest()[:12]
    slug = "_".join(reqs)
    for op, word in (("==", "-"), ("<=", "-le"), (">=", "-ge"), ("!=", "-ne"), ("~=", "-compat"), ("<", "-lt"), (">", "-gt")):
        slug = slug.replace(op, word)
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", slug).strip("-")[:60]  # readable; the hash tells venvs apart
    return root / f"{slug}-{key}"


def find_runtime_venv(requirements: tuple[str, ...], cache_root: Path | str | None = None, *,
                      base_python: str | os.PathLike | None = None) -> Path | None:
    """The Python of the finished venv that ``runtime_venv`` would return for these arguments, or None: builds nothing."""
    reqs = _requirements(requirements)
    base = str(base_python) if base_python is not None else sys.executable
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    venv = _venv_dir(reqs, root, _identity(base))
    return _python_in(venv) if _is_ready(venv) else None


def runtime_venv(requirements: tuple[str, ...], cache_root: Path | str | None = None, *,
                 base_python: str | os.PathLike | None = None, timeout_s: float = 1800,
                 progress: Callable[[str], None] | None = None) -> Path:
    """The Python of a venv holding exactly ``requirements`` (pip specifiers), created on first use.

    ``base_python`` creates the venv (default: the interpreter beneath this one — ``venv`` never nests,
    so a venv made from inside the host's venv starts from the same base Python, with none of its
    packages).  Raises ``BenchError`` when pip cannot install the requirements (no network, no wheel)."""
    reqs = _requirements(requirements)
    say = progress or get_console().info
    base = str(base_python) if base_python is not None else sys.executable
    version, machine, base_exe = _identity(base)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    venv = _venv_dir(reqs, root, (version, machine, base_exe))
    python = _python_in(venv)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{venv.name}.lock"):
        if _is_ready(venv):
            return python
        if venv.exists():
            say(f"runtime venv {venv} is unfinished (an interrupted install): removing it")
            shutil.rmtree(venv)
        t0 = time.monotonic()
        say(f"[1/3] runtime venv for {' '.join(reqs)}: Python {version} ({base_exe}), in {venv}")
        try:
            run_streaming([base, "-m", "venv", str(venv)], say, "Creating the runtime venv", 300, env=venv_environ(), indent="      ",
                          **_PIP_HINTS)
            say(f"[2/3] pip install {' '.join(reqs)}")
            run_streaming([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                           "--progress-bar", "off", *reqs], say, f"pip install {' '.join(reqs)}", timeout_s, env=venv_environ(),
                          indent="      ", **_PIP_HINTS)
            say("[3/3] recording what was installed")
            listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                                    capture_output=True, text=True, timeout=120, env=venv_environ())
            try:
                packages = {p["name"]: p["version"] for p in json.loads(listed.stdout)}
            except (ValueError, TypeError, KeyError):
                raise BenchError(f"pip list in the new runtime venv {venv} failed (exit code {listed.returncode}): "
                                 f"{listed.stderr.strip()[-500:]}", "Try again; the unfinished venv is never used.") from None
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)  # never leave a half-installed venv (it would be redone anyway)
            raise
        stamp = {"requirements": list(reqs), "python_version": version, "machine": machine, "base_python": base_exe,
                 "packages": packages, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "setup_seconds": round(time.monotonic() - t0, 1)}
        tmp = venv / (READY + ".partial")
        tmp.write_text(json.dumps(stamp, indent=2) + "\n")
        os.replace(tmp, venv / READY)  # written last: only a finished venv is ever used
        wanted = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}
        got = ", ".join(f"{n} {v}" for n, v in sorted(packages.items()) if n.lower().replace("_", "-") in wanted)
        say(f"runtime venv ready in {stamp['setup_seconds']} s: {got or ', '.join(reqs)}")
    return python


def runtime_packages(python: Path | str) -> dict[str, str]:
    """What pip installed into a venv that ``runtime_venv`` made (name → version), from its ``ready.json``."""
    stamp = Path(python).parent.parent / READY
    try:
        return dict(json.loads(stamp.read_text())["packages"])
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"{stamp} is missing or unreadable ({exc}): not a finished runtime venv.",
                         "Call runtime_venv() again; it rebuilds unfinished venvs.") from None
