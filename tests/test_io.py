"""Atomic writes: all or nothing, with ordinary file permissions."""

import os
import stat

import pytest

from workbench.io import atomic_write, write_json


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
