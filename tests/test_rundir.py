import pytest

from edge_distill.errors import RunDirError
from edge_distill.rundir import RunDir


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(RuntimeError):
        with run.atomic_path("a/model.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not (tmp_path / "run/a/model.bin").exists()
    assert list((tmp_path / "run/a").iterdir()) == []


def test_stage_reuse_requires_same_key_and_intact_files(tmp_path):
    run = RunDir(tmp_path)
    path = run.write_text("x/out.txt", "hello")
    run.record_stage("s", "k1", {"v": 1}, [path], 0.5)
    assert run.finished_stage("s", "k1")["result"] == {"v": 1}
    assert run.finished_stage("s", "k2") is None
    path.write_text("tampered")
    assert run.finished_stage("s", "k1") is None


def test_refuses_paths_outside_the_run_dir(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="outside"):
        run.path("../escape.txt")


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="Cannot write"):
        RunDir(blocker / "run")
