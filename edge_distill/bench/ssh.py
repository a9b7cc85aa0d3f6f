"""The ``ssh://user@host[:port]`` runner: the agent on a board reached over OpenSSH (Raspberry Pi, any Linux).

    edge-distill bench student_int8.tflite --runner ssh://pi@raspberrypi.local
    edge-distill bench student_int8.tflite --runner 'ssh://pi@10.0.0.7:2222?python=/home/pi/ed/bin/python'

It makes a private temporary directory on the device (``mktemp -d``), copies the agent, the model and
the test data there with ``scp``, runs the device's Python on them, collects the one JSON object and
removes the directory again.  Every remote argument is quoted with ``shlex.quote``, so file names with
spaces or shell characters reach the device unchanged.

Authentication is whatever your ssh client does (keys, agent, ``~/.ssh/config``); it never prompts
(``BatchMode=yes``).  ``EDGE_DISTILL_SSH_CONFIG=path`` passes ``-F path`` to ssh and scp, to point at an
identity file or known-hosts file without touching ``~/.ssh``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import BenchError, ConfigError
from .runners import RUNNERS, AgentOptions, Runner, parse_agent_output, run_command

_HOST_RE = re.compile(r"^[A-Za-z0-9._:-]+$")  # names, IPv4, IPv6 literals (brackets already stripped)
_USER_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")
SETUP_TIMEOUT_S = 60.0  # mkdir / copy / clean-up; the agent run itself gets the caller's timeout


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int | None
    python: str  # the interpreter on the device

    @classmethod
    def parse(cls, spec: str) -> "SshTarget":
        how = "Use ssh://user@host or ssh://user@host:port (optionally ?python=/path/to/python3)."
        parts = urlsplit(spec)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ConfigError(f"Runner {spec!r} is not an ssh URL.", how)
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError(f"Runner {spec!r} has a path; the ssh runner takes only user, host and port.", how)
        if parts.password is not None:
            raise ConfigError(f"Runner {spec!r} contains a password.",
                              "Passwords are never passed on the command line; use an ssh key (ssh-copy-id).")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"Runner {spec!r} has an invalid port.", how) from None
        user = unquote(parts.username) if parts.username else None
        host = parts.hostname
        if user is not None and not _USER_RE.match(user):
            raise ConfigError(f"ssh user {user!r} in {spec!r} has characters a login name cannot have.", how)
        if not _HOST_RE.match(host) or host.startswith("-"):
            raise ConfigError(f"ssh host {host!r} in {spec!r} is not a host name or address.", how)
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"python"})
        if unknown:
            raise ConfigError(f"Runner {spec!r} has unknown option(s): {', '.join(unknown)}.", how)
        python = query.get("python", ["python3"])[-1]
        if not python:
            raise ConfigError(f"Runner {spec!r} has an empty python= option.", how)
        return cls(user, host, port, python)

    def destination(self, for_scp: bool = False) -> str:
        host = f"[{self.host}]" if for_scp and ":" in self.host else self.host  # scp needs IPv6 literals bracketed
        return f"{self.user}@{host}" if self.user else host

    def label(self) -> str:
        return self.destination() + (f":{self.port}" if self.port else "")


@RUNNERS.register("ssh")
class SshRunner(Runner):
    """The agent on a remote machine over OpenSSH; numbers are the remote machine's own."""

    name = "ssh"

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    @classmethod
    def from_spec(cls, spec: str) -> "SshRunner":
        if spec == "ssh":
            raise ConfigError("The ssh runner needs a destination.", "Use --runner ssh://user@host[:port].")
        target = SshTarget.parse(spec)
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise BenchError(f"The ssh runner needs the {tool!r} command, which is not installed here.",
                                 "Install the OpenSSH client (Debian: apt-get install openssh-client).")
        runner = cls(target)
        runner.spec = spec
        return runner

    # ---- the ssh / scp command lines ----------------------------------------------------------------
    def _common(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15"]
        config = os.environ.get("EDGE_DISTILL_SSH_CONFIG")
        if config:
            opts = ["-F", config] + opts
        return opts

    def _ssh(self, remote_argv: list[str]) -> list[str]:
        port = ["-p", str(self.target.port)] if self.target.port else []
        # ssh joins its arguments into one string for the remote shell: quote each one ourselves.
        return ["ssh", *self._common(), *port, "--", self.target.destination(), shlex.join(remote_argv)]

    def _scp(self, files: list[Path], remote_dir: str) -> list[str]:
        port = ["-P", str(self.target.port)] if self.target.port else []
        # Old scp (protocol "-O") passes the remote path through the remote shell, new scp (SFTP) does not;
        # the directory comes from mktemp, so it has no characters that either would change.
        return ["scp", "-q", *self._common(), *port, "--", *map(str, files), f"{self.target.destination(for_scp=True)}:{remote_dir}/"]

    def _check(self, proc, what: str, label: str) -> None:
        if proc.returncode != 0:
            err = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise BenchError(f"ssh runner: {what} on {self.target.label()} failed for {label} "
                             f"(exit code {proc.returncode}):\n{err}",
                             "Check that `ssh " + self.target.label() + "` logs in without a password prompt "
                             "(ssh-copy-id), and that the device has python3 with numpy and ai-edge-litert "
                             "(or tflite-runtime with \"numpy<2\").")

    # ---- Runner -------------------------------------------------------------------------------------
    def run_agent(self, agent: Path, model: Path, options: AgentOptions, eval_npz: Path | None,
                  timeout_s: float) -> dict[str, Any]:
        label = model.name
        proc = run_command(self._ssh(["mktemp", "-d", "/tmp/edge-distill.XXXXXXXX"]), label, SETUP_TIMEOUT_S,
                           "ssh runner: making a work directory")
        self._check(proc, "making a work directory", label)
        remote_dir = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if not re.fullmatch(r"/tmp/edge-distill\.[A-Za-z0-9]+", remote_dir):
            raise BenchError(f"ssh runner: mktemp on {self.target.label()} printed {remote_dir!r}, not a directory.",
                             "The device needs a POSIX shell with mktemp (any Linux does).")
        try:
            # Each file keeps its own name in a fresh directory; agent.py cannot collide with a model
            # called agent.py because the model goes into a subdirectory.
            files = [agent] + ([eval_npz] if eval_npz is not None else [])
            proc = run_command(self._ssh(["mkdir", f"{remote_dir}/model"]), label, SETUP_TIMEOUT_S, "ssh runner: mkdir")
            self._check(proc, "making a work directory", label)
            for group, dest in ((files, remote_dir), ([model], f"{remote_dir}/model")):
                proc = run_command(self._scp(group, dest), label, max(SETUP_TIMEOUT_S, timeout_s), "ssh runner: copying files")
                self._check(proc, "copying files", label)
            argv = [self.target.python, f"{remote_dir}/{agent.name}", f"{remote_dir}/model/{model.name}", *options.argv()]
            if eval_npz is not None:
                argv += ["--npz", f"{remote_dir}/{eval_npz.name}"]
            proc = run_command(self._ssh(argv), label, timeout_s, "Benchmark over ssh")
            if proc.returncode == 255:  # ssh's own failure (connection lost), not the agent's
                self._check(proc, "running the agent", label)
            return parse_agent_output(label, proc.returncode, proc.stdout, proc.stderr)
        finally:
            # Best effort: a device that went away must not turn a result (or an error) into a new error.
            try:
                run_command(self._ssh(["rm", "-rf", "--", remote_dir]), label, SETUP_TIMEOUT_S, "ssh runner: clean-up")
            except BenchError:
                pass

    def where(self, facts: dict[str, Any]) -> str:
        what = facts.get("board") or facts.get("cpu_model") or "unknown CPU"
        return f"device {facts.get('machine', 'unknown')} ({what}, {facts.get('hostname', '?')}) over ssh {self.target.label()}"
