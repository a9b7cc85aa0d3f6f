"""The ``qemu-arm64`` runner: the agent in an arm64 Debian root, executed through qemu-user on this machine.

    edge-distill runner setup qemu-arm64       # once: builds the root (~340 MB on disk, a minute or two)
    edge-distill bench student_int8.tflite --runner qemu-arm64 --npz test_nhwc.npz

What it is good for: proving that the model loads and computes the same answers in the **aarch64
build** of the TFLite runtime that a Raspberry Pi or phone runs (a different binary, different SIMD
kernels).  What it is not: a timing.  Every aarch64 instruction is translated in software, so its
latencies describe the emulator, and results say so in ``where``.

The root lives outside any run directory, in a cache that ``root_dir()`` names
(``$EDGE_DISTILL_QEMU_ROOT``, else ``$XDG_CACHE_HOME/edge-distill/qemu-arm64``, else
``~/.cache/edge-distill/qemu-arm64``):

    rootfs/     Debian (bookworm by default) for arm64: python3 and its libraries
    site/       the aarch64 wheels of numpy (this machine's version) and ai-edge-litert (the default device runtime's)
    ready.json  written last: what was installed, and the smoke test's answer

Setup never executes an arm64 program through binfmt_misc or chroot (a container usually allows
neither): debootstrap runs only its first, download-and-unpack stage (``--foreign``), the remaining
packages are unpacked with ``dpkg-deb -x`` (Python needs none of their maintainer scripts), and every
run calls ``qemu-aarch64-static -L rootfs`` explicitly so the guest's dynamic loader and libraries come
from the root.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BenchError, ConfigError
from .runners import RUNNERS, AgentOptions, Runner, parse_agent_output, run_command, run_streaming, user_cache_dir

_SETUP_HINTS = dict(timeout_hint="Check the network, then rerun setup.",
                    failure_hint="Rerun `edge-distill runner setup qemu-arm64`; a half-built root is never used.",
                    missing_hint="apt-get install qemu-user-static debootstrap")

DEFAULT_SUITE = "bookworm"  # Debian 12: python3.11, the Python the host toolchain runs
DEFAULT_MIRROR = "http://deb.debian.org/debian"
WHEEL_PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
QEMU_BINARIES = ("qemu-aarch64-static", "qemu-aarch64")


def root_dir() -> Path:
    return user_cache_dir("EDGE_DISTILL_QEMU_ROOT", "qemu-arm64")


def find_qemu() -> str | None:
    for name in QEMU_BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass(frozen=True)
class QemuRoot:
    """A finished arm64 root: where it is and what it holds (from ``ready.json``)."""

    path: Path
    suite: str
    python: str  # guest path of the interpreter, e.g. /usr/bin/python3.11
    python_version: str
    packages: dict

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def site(self) -> Path:
        return self.path / "site"

    @classmethod
    def load(cls, path: Path | None = None) -> "QemuRoot":
        path = Path(path) if path is not None else root_dir()
        stamp = path / "ready.json"
        if not stamp.is_file():
            raise BenchError(f"The qemu-arm64 runner is not set up: no arm64 root at {path}.",
                             "Run `edge-distill runner setup qemu-arm64` once (downloads ~100 MB from Debian "
                             "and PyPI), or point EDGE_DISTILL_QEMU_ROOT at an existing root.")
        try:
            facts = json.loads(stamp.read_text())
            return cls(path, facts["suite"], facts["python"], facts["python_version"], facts["packages"])
        except (ValueError, KeyError) as exc:
            raise BenchError(f"The qemu-arm64 root at {path} has an unreadable ready.json ({exc}).",
                             "Rebuild it: edge-distill runner setup qemu-arm64 --force") from None

    def command(self, qemu: str, argv: list[str]) -> list[str]:
        # -L makes the guest resolve absolute paths inside rootfs first and fall back to the host, so the
        # guest's loader/libc/stdlib come from the root while host files (agent, model, data) stay visible.
        return [qemu, "-L", str(self.rootfs), str(self.rootfs) + self.python, *argv]

    def env(self) -> dict[str, str]:
        # A clean environment: nothing from the host's Python (venv, PYTHONHOME) may leak into the guest's.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME")}
        env.update(PYTHONPATH=str(self.site), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
                   TF_CPP_MIN_LOG_LEVEL="2")
        return env


@RUNNERS.register("qemu-arm64")
class QemuArm64Runner(Runner):
    """The agent under qemu-user in the arm64 root: functional check, not a timing."""

    name = "qemu-arm64"
    shares_files = True  # qemu-user -L falls back to host paths, so the guest reads and writes this machine's files

    def __init__(self, root: QemuRoot, qemu: str) -> None:
        self.root, self.qemu = root, qemu

    @classmethod
    def from_spec(cls, spec: str) -> "QemuArm64Runner":
        if spec != cls.name:
            raise ConfigError(f"Runner {spec!r} takes no parameters.",
                              "Use --runner qemu-arm64; EDGE_DISTILL_QEMU_ROOT chooses the root.")
        qemu = find_qemu()
        if qemu is None:
            raise BenchError("The qemu-arm64 runner needs qemu-user, which is not installed.",
                             "Debian/Ubuntu: apt-get install qemu-user-static")
        runner = cls(QemuRoot.load(), qemu)
        runner.spec = spec
        return runner

    def run_agent(self, agent: Path, model: Path, options: AgentOptions, eval_npz: Path | None,
                  timeout_s: float) -> dict[str, Any]:
        argv = [str(agent), str(model), *options.argv()]
        if eval_npz is not None:
            argv += ["--npz", str(eval_npz)]
        proc = run_command(self.root.command(self.qemu, argv), model.name, timeout_s, "Emulated benchmark",
                           env=self.root.env())
        return parse_agent_output(model.name, proc.returncode, proc.stdout, proc.stderr)

    def where(self, facts: dict[str, Any]) -> str:
        return (f"emulated {facts.get('machine', 'aarch64')} (qemu-user on this {platform.machine()} host, "
                f"Debian {self.root.suite}, Python {facts.get('python_version', '?')}): functional check only, "
                f"timings describe the emulator, not a device")


# ---- setup -------------------------------------------------------------------------------------------

def _host_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        raise BenchError(f"{dist} is not installed on this machine, so the arm64 root cannot match its version.",
                         "Reinstall edge-distill (pip install -e .).") from None


def setup_qemu_arm64(root: Path | None = None, *, suite: str = DEFAULT_SUITE, mirror: str = DEFAULT_MIRROR,
                     force: bool = False, progress: Callable[[str], None] = print) -> QemuRoot:
    """Build the arm64 root for the ``qemu-arm64`` runner (idempotent: a finished root is reused).

    Needs root privileges (debootstrap creates device nodes and owners), ``debootstrap``, ``dpkg-deb``
    and ``qemu-user-static``; downloads ~60 MB of Debian packages and ~40 MB of aarch64 wheels.
    """
    root = Path(root) if root is not None else root_dir()
    if not re.fullmatch(r"[a-z]+", suite):
        raise ConfigError(f"Debian suite {suite!r} is invalid.", "Use a release name such as bookworm.")
    if (root / "ready.json").is_file() and not force:
        existing = QemuRoot.load(root)
        progress(f"qemu-arm64 root already set up at {root} (Debian {existing.suite}, Python "
                 f"{existing.python_version}); use --force to rebuild it.")
        return existing
    qemu = _setup_tools()
    partial = _fresh_partial(root)
    t0 = time.monotonic()

    python, py_version = _bootstrap_root(partial, suite, mirror, progress)
    site = root / "site.partial"
    litert, numpy = _fetch_wheels(site, py_version, progress)

    os.replace(partial, root / "rootfs")
    os.replace(site, root / "site")
    candidate = QemuRoot(root, suite, python, py_version, {"ai-edge-litert": litert, "numpy": numpy})
    facts = _smoke_test(candidate, qemu, progress)
    stamp = {"suite": suite, "mirror": mirror, "python": python, "python_version": py_version,
             "packages": candidate.packages, "smoke_test": facts, "qemu": qemu,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "setup_seconds": round(time.monotonic() - t0, 1)}
    tmp = root / "ready.json.partial"
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, root / "ready.json")  # written last: only a finished root is ever used
    progress(f"qemu-arm64 root ready at {root} in {stamp['setup_seconds']} s: Python {facts['python']} aarch64, "
             f"numpy {facts['numpy']}, ai-edge-litert {facts['litert']}")
    return candidate


def _setup_tools() -> str:
    """The qemu-user binary, once every tool the setup runs is there and it runs as root."""
    qemu = find_qemu()
    missing = [tool for tool, ok in (("qemu-user-static", qemu), ("debootstrap", shutil.which("debootstrap")),
                                     ("dpkg-deb", shutil.which("dpkg-deb"))) if not ok]
    if missing:
        raise BenchError(f"Setting up qemu-arm64 needs {', '.join(missing)}, not installed here.",
                         "Debian/Ubuntu: apt-get install qemu-user-static debootstrap")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise BenchError("debootstrap must run as root to build the arm64 root.",
                         "Run the setup as root once (sudo edge-distill runner setup qemu-arm64 with "
                         "EDGE_DISTILL_QEMU_ROOT set to a directory you can read), or build it in a container.")
    return qemu


def _fresh_partial(root: Path) -> Path:
    """An empty ``rootfs.partial`` under ``root``, with every leftover of an earlier setup removed."""
    root.mkdir(parents=True, exist_ok=True)
    partial = root / "rootfs.partial"
    for stale in (partial, root / "site.partial", root / "rootfs", root / "site", root / "ready.json"):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    return partial


def _bootstrap_root(partial: Path, suite: str, mirror: str, progress: Callable[[str], None]) -> tuple[str, str]:
    """Steps 1-2: the Debian arm64 root in ``partial``; returns its Python interpreter's path and version."""
    progress(f"[1/4] debootstrap (first stage) of Debian {suite} arm64 into {partial} from {mirror}")
    run_streaming(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
                   suite, str(partial), mirror], lambda line: progress("      " + line), "debootstrap", 1800, **_SETUP_HINTS)
    debs = sorted((partial / "var/cache/apt/archives").glob("*.deb"))
    progress(f"[2/4] unpacking {len(debs)} packages with dpkg-deb (no arm64 code runs during setup)")
    for i, deb in enumerate(debs, 1):
        proc = run_command(["dpkg-deb", "-x", str(deb), str(partial)], deb.name, 300, "dpkg-deb -x")
        if proc.returncode != 0:
            raise BenchError(f"Unpacking {deb.name} failed: {proc.stderr.strip()[-300:]}", "Rerun the setup.")
        if i % 20 == 0 or i == len(debs):
            progress(f"      {i}/{len(debs)} unpacked")
        deb.unlink()  # the archives are not needed any more; the root is ~60 MB smaller without them
    pythons = sorted(p.name for p in (partial / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
    if not pythons:
        raise BenchError(f"The arm64 root has no python3 interpreter after unpacking ({partial / 'usr/bin'}).",
                         f"Check that Debian {suite} provides python3 for arm64, then rerun the setup.")
    python = "/usr/bin/" + pythons[-1]
    py_version = pythons[-1][len("python"):]
    return python, py_version


def _fetch_wheels(site: Path, py_version: str, progress: Callable[[str], None]) -> tuple[str, str]:
    """Step 3: the default device runtime's ai-edge-litert (what a board installs, not the converter's pinned one) and the
    host's numpy as aarch64 wheels in ``site``; returns both versions."""
    from .device_runtimes import DEFAULT_DEVICE_RUNTIME, parse_device_runtime

    litert, numpy = parse_device_runtime(DEFAULT_DEVICE_RUNTIME).version, _host_version("numpy")
    progress(f"[3/4] aarch64 wheels for Python {py_version}: ai-edge-litert=={litert} numpy=={numpy} (pip, on this host)")
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    run_streaming([sys.executable, "-m", "pip", "install", "--no-warn-conflicts", "--disable-pip-version-check",
                   "--target", str(site), *platforms, "--only-binary=:all:", "--python-version", py_version,
                   "--implementation", "cp", f"ai-edge-litert=={litert}", f"numpy=={numpy}"],
                  lambda line: progress("      " + line), "pip install (aarch64 wheels)", 1800, **_SETUP_HINTS)
    return litert, numpy


def _smoke_test(candidate: QemuRoot, qemu: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Step 4: what the new root reports about itself under emulation; raises unless it runs as aarch64."""
    progress("[4/4] smoke test: importing numpy and ai_edge_litert under emulation")
    probe = ("import json, platform, numpy, ai_edge_litert; from ai_edge_litert import interpreter; "
             "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
             "'numpy': numpy.__version__, 'litert': ai_edge_litert.__version__}))")
    proc = run_command(candidate.command(qemu, ["-c", probe]), "smoke test", 300, "qemu smoke test", env=candidate.env())
    try:
        facts = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"The arm64 root does not run under qemu:\n{proc.stderr.strip()[-600:]}",
                         "Rerun `edge-distill runner setup qemu-arm64 --force`.") from None
    if facts.get("machine") != "aarch64":
        raise BenchError(f"The smoke test ran on {facts.get('machine')!r}, not aarch64.", "Check the qemu installation.")
    return facts


SETUPS: dict[str, Callable[..., Any]] = {"qemu-arm64": setup_qemu_arm64}
