"""Atomic writes: all or nothing, with ordinary file permissions."""

import os
import stat

import pytest

from workbench.errors import WorkbenchError
from workbench.io import atomic_dir, atomic_write, file_sha256, refuse_nonempty_dir, write_json


def test_atomic_write_gives_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == '{\n  "x": 1\n}\n'


def test_interrupted_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.csv").write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "keep.csv", fail)
    assert (tmp_path / "keep.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (tmp_path / "out.partial").mkdir()  # left over by an interrupted write: cleared first
    (tmp_path / "out.partial" / "stale.txt").write_text("stale")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "old.txt").read_text() == "old"
    with atomic_dir(out) as tmp:
        assert not tmp.exists()
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuse_nonempty_dir(tmp_path):
    refuse_nonempty_dir(tmp_path / "missing", force=False)
    (tmp_path / "empty").mkdir()
    refuse_nonempty_dir(tmp_path / "empty", force=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WorkbenchError, match="export directory .*full exists and is not empty: .* --force"):
        refuse_nonempty_dir(tmp_path / "full", force=False)
    refuse_nonempty_dir(tmp_path / "full", force=True)


def test_file_sha256_streams_in_chunks(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert file_sha256(path) == expected and file_sha256(path, chunk_bytes=1) == expected

