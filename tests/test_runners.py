"""Runners: a real sshd on 127.0.0.1, the real qemu-user arm64 root, adb with and without a device.

The ssh tests start OpenSSH's ``sshd`` from a temporary directory (its own host key, an authorized key,
port picked free) and log in to it as the current user; they skip only when ``sshd`` is not installed
(`make test` installs openssh-server, so CI runs them).  The qemu end-to-end test needs the arm64 root from
``edge-distill runner setup qemu-arm64`` and is marked slow.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from system_packages import require_package, skip_reason, sshd_path
from tflite_models import full_int8_tflite

from edge_distill.bench import (AgentOptions, BenchResult, bench_model, cross_runtime_fidelity, make_runner,
                                runner_names)
from edge_distill.bench.qemu import QemuRoot, root_dir
from edge_distill.bench.ssh import SshTarget
from edge_distill.cli import main as cli_main
from edge_distill.errors import BenchError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "export" / "agent.py"
N_CLASSES, SIDE = 4, 6
RUNS = dict(warmup=1, runs=5)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict[str, Path]:
    """A tiny full-INT8 image classifier and a labelled .npz it scores perfectly by construction."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    rng = np.random.default_rng(3)
    templates = rng.choice([-1.0, 1.0], size=(N_CLASSES, SIDE * SIDE)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=48)
    x = (templates[y] + 0.25 * rng.standard_normal((48, SIDE * SIDE))).astype(np.float32)
    x_img = x.reshape(-1, SIDE, SIDE, 1)
    inp = tf.keras.Input((SIDE, SIDE, 1), batch_size=1)
    dense = tf.keras.layers.Dense(N_CLASSES)
    keras_model = tf.keras.Model(inp, dense(tf.keras.layers.Flatten()(inp)))
    dense.set_weights([templates.T / (SIDE * SIDE), np.zeros(N_CLASSES, np.float32)])
    out = tmp_path_factory.mktemp("runner models")
    (out / "int8.tflite").write_bytes(full_int8_tflite(keras_model, x_img))
    # A name with a space, a quote and shell syntax: reaches the device only if every argument is quoted.
    odd = out / "it's $(touch pwned) int8.tflite"
    shutil.copy(out / "int8.tflite", odd)
    np.savez(out / "data.npz", x=x_img, y=y)
    return {"int8": out / "int8.tflite", "odd": odd, "npz": out / "data.npz"}


# ---- specs ---------------------------------------------------------------------------------------

def test_registry_and_specs(capsys):
    assert cli_main(["runner", "setup", "ssh"]) == 2 and "has no setup step" in capsys.readouterr().err
    assert runner_names() == ["adb", "local", "qemu-arm64", "ssh"]
    assert make_runner("local").spec == "local"
    t = SshTarget.parse("ssh://pi@raspberrypi.local:2222?python=/home/pi/ed/bin/python")
    assert (t.user, t.host, t.port, t.python) == ("pi", "raspberrypi.local", 2222, "/home/pi/ed/bin/python")
    t = SshTarget.parse("ssh://10.0.0.7")
    assert (t.user, t.host, t.port, t.python) == (None, "10.0.0.7", None, "python3")
    assert SshTarget.parse("ssh://me@[::1]:22").destination(for_scp=True) == "me@[::1]"


@pytest.mark.parametrize("spec, message", [
    ("nope", "Unknown bench runner 'nope'"),
    ("ssh", "needs a destination"),
    ("ssh://pi:secret@host", "contains a password"),
    ("ssh://pi@host:notaport", "invalid port"),
    ("ssh://pi@host/some/path", "has a path"),
    ("ssh://-oProxyCommand=x@host", "characters a login name cannot have"),
    ("ssh://pi@host?identity=/k", "unknown option"),
    ("local://x", "takes no parameters"),
    ("qemu-arm64://x", "takes no parameters"),
    ("", "invalid"),
])
def test_bad_specs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_runner(spec)


def test_agent_predictions_need_npz(model):
    proc = subprocess.run([sys.executable, str(AGENT), str(model["int8"]), "--predictions"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--predictions needs --npz" in json.loads(proc.stdout)["error"]
    assert AgentOptions(1, 0, 1, predictions=True).argv()[-1] == "--predictions"


# ---- ssh -----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    daemon = sshd_path()
    require_package("openssh-server", daemon is not None, "a real sshd on 127.0.0.1 for the ssh:// runner")
    require_package("openssh-client", shutil.which("ssh-keygen") is not None and shutil.which("ssh") is not None, "ssh, scp and ssh-keygen")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "ssh_config").write_text(
        f"Host *\n  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {d / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([daemon, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(d / "sshd.log", "w"))
    for _ in range(100):  # up to 10 s for sshd to listen
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("sshd did not start listening within 10 s")
    old = os.environ.get("EDGE_DISTILL_SSH_CONFIG")
    os.environ["EDGE_DISTILL_SSH_CONFIG"] = str(d / "ssh_config")
    try:
        yield {"spec": f"ssh://{getpass.getuser()}@127.0.0.1:{port}?python={sys.executable}", "port": port, "dir": d}
    finally:
        if old is None:
            os.environ.pop("EDGE_DISTILL_SSH_CONFIG", None)
        else:
            os.environ["EDGE_DISTILL_SSH_CONFIG"] = old
        proc.terminate()
        proc.wait(timeout=10)


def _remote_dirs() -> set[str]:
    return set(glob.glob("/tmp/edge-distill.*"))  # the "device" is this machine


def test_ssh_bench_quotes_every_argument_and_cleans_up(sshd, model):
    before = _remote_dirs()
    local = bench_model(model["int8"], threads=1, eval_npz=model["npz"], **RUNS)
    remote = bench_model(model["odd"], threads=1, eval_npz=model["npz"], runner=sshd["spec"], **RUNS)
    assert remote.runner == sshd["spec"] and "over ssh" in remote.where and f":{sshd['port']}" in remote.where
    assert Path(remote.model).name == model["odd"].name  # arrived on the "device" under its exact name
    assert Path(remote.model).parent.parent.name.startswith("edge-distill.")
    assert not Path("pwned").exists() and not (Path(remote.model).parent / "pwned").exists()
    assert remote.accuracy == local.accuracy == 1.0 and remote.n_eval == 48
    assert remote.model_bytes == model["odd"].stat().st_size and remote.runs == RUNS["runs"]
    assert _remote_dirs() == before  # the work directory was removed


def test_ssh_fidelity_and_cli(sshd, model, capsys):
    f = cross_runtime_fidelity(model["int8"], model["npz"], sshd["spec"])
    assert f.n == 48 and f.agreement == 1.0 and f.passed and f.disagreements == ()
    assert f.device_accuracy == f.host_accuracy == 1.0
    code = cli_main(["bench", str(model["int8"]), "--runner", sshd["spec"], "--runs", "3", "--warmup", "0",
                     "--npz", str(model["npz"])])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["accuracy"] == 1.0


def test_ssh_failures_are_bench_errors(sshd, model):
    missing_python = sshd["spec"].split("?")[0] + "?python=/no/such/python3"
    with pytest.raises(BenchError, match="exited with code 127") as info:
        bench_model(model["int8"], threads=1, runner=missing_python, **RUNS)
    assert "No such file" in info.value.message or "not found" in info.value.message
    closed = f"ssh://{getpass.getuser()}@127.0.0.1:{_free_port()}"
    with pytest.raises(BenchError, match=r"ssh runner: making a work directory on .* failed") as info:
        bench_model(model["int8"], threads=1, runner=closed, **RUNS)
    assert "ssh-copy-id" in info.value.hint


def test_ssh_build_benches_the_shipped_file_on_the_device_with_the_profiles_threads(sshd, tmp_path):
    """A board with more cores than this host is timed with the profile's threads, never the host's core count; only
    the file that ships runs on the device, the other variants and the teacher on this host, each labelled."""
    from importlib import resources

    threads = (os.cpu_count() or 1) + 2
    profile = tmp_path / "big-board.toml"
    text = (resources.files("edge_distill.profiles") / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "big-board"')
    profile.write_text(text.replace("\nthreads = 4\n", f"\nthreads = {threads}\n"))
    out = tmp_path / "run"
    assert cli_main(["build", "--profile", str(profile), "--runner", sshd["spec"], "--out", str(out), "--teacher-epochs", "1",
                     "--student-epochs", "2", "--max-int8-drop", "100", "--bench-warmup", "1", "--bench-runs", "5", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    shipped = report["conversion"]["files"]
    ships = next(f["path"] for f in shipped if f["variant"] == (report["ledger"]["gated_variant"] or "tflite_int8"))
    by_model = {Path(b["model"]).name: b for b in report["bench"]["results"]}
    device = [b for b in report["bench"]["results"] if b["runner"] == sshd["spec"]]
    assert [Path(b["model"]).name for b in device] == [Path(ships).name]
    assert device[0]["threads"] == threads and "over ssh" in device[0]["where"]
    local = [b for name, b in by_model.items() if b["runner"] == "local"]
    assert len(local) >= 3 and all(b["threads"] == min(threads, os.cpu_count() or 1) for b in local)
    assert report["fidelity"]["passed"]


# ---- adb -----------------------------------------------------------------------------------------

def test_adb_without_adb_says_no_device(model, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere on PATH
    with pytest.raises(BenchError, match="No Android device: the `adb` command is not installed") as info:
        bench_model(model["int8"], threads=1, runner="adb", **RUNS)
    assert "apt-get install adb" in info.value.hint
    with pytest.raises(ConfigError, match="characters a serial cannot have"):
        make_runner("adb://bad serial")


@pytest.mark.skipif(shutil.which("adb") is None, reason=skip_reason("adb", "the real adb client, for the no-device path"))
def test_adb_without_a_device_says_no_device(model):
    try:
        from edge_distill.bench.adb import attached_devices

        if attached_devices():
            pytest.skip("a real Android device is attached; this test checks the no-device message")
        with pytest.raises(BenchError, match="No Android device: `adb devices` lists no device"):
            bench_model(model["int8"], threads=1, runner="adb", **RUNS)
    finally:
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)  # the server `adb devices` started


# ---- qemu-arm64 ----------------------------------------------------------------------------------

def test_qemu_not_set_up_says_how(model, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_DISTILL_QEMU_ROOT", str(tmp_path / "no-root"))
    if shutil.which("qemu-aarch64-static") is None and shutil.which("qemu-aarch64") is None:
        with pytest.raises(BenchError, match="needs qemu-user"):
            make_runner("qemu-arm64")
        return
    with pytest.raises(BenchError, match="not set up") as info:
        bench_model(model["int8"], threads=1, runner="qemu-arm64", **RUNS)
    assert "edge-distill runner setup qemu-arm64" in info.value.hint


def _qemu_ready() -> bool:
    return (root_dir() / "ready.json").is_file() and bool(shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64"))


@pytest.mark.slow
@pytest.mark.skipif(not _qemu_ready(), reason=f"no arm64 root at {root_dir()}: run `edge-distill runner setup qemu-arm64`")
def test_qemu_arm64_end_to_end(model):
    r = bench_model(model["int8"], threads=1, eval_npz=model["npz"], runner="qemu-arm64", **RUNS)
    assert r.machine == "aarch64" and r.where.startswith("emulated aarch64") and "not a device" in r.where
    assert r.runtime == "ai_edge_litert" and r.runtime_version == QemuRoot.load().packages["ai-edge-litert"]
    assert r.accuracy == 1.0 and isinstance(r, BenchResult)
    f = cross_runtime_fidelity(model["int8"], model["npz"], "qemu-arm64")
    assert f.device_runtime.endswith("on aarch64") and f.host_runtime.endswith(f"on {os.uname().machine}")
    assert f.agreement >= 0.995 and f.passed


def test_qemu_setup_names_missing_tools(monkeypatch, tmp_path):
    from edge_distill.bench import setup_runner

    monkeypatch.setenv("PATH", str(tmp_path))  # none of qemu-user-static, debootstrap, dpkg-deb
    with pytest.raises(BenchError, match="needs qemu-user-static, debootstrap, dpkg-deb") as info:
        setup_runner("qemu-arm64", root=tmp_path / "root", progress=lambda line: None)
    assert "apt-get install qemu-user-static debootstrap" in info.value.hint
    assert not (tmp_path / "root" / "ready.json").exists()
    with pytest.raises(ConfigError, match="suite"):
        setup_runner("qemu-arm64", root=tmp_path / "root", suite="../etc", progress=lambda line: None)
