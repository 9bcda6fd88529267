"""Atomic file and directory writes, so that an interrupted run never leaves a half-written artifact behind; the one
streamed file hash."""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename the temporary file onto `path` (same directory, so the rename is atomic).

    The file gets the permissions a plain `open` would give it (mkstemp's temporary files are private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks (a multi-GB checkpoint never sits in memory whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def refuse_nonempty_dir(path: str | Path, force: bool, what: str = "export directory") -> None:
    """Refuse to write over `path` when it is a file or a non-empty directory, unless `force`."""
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())) and not force:
        raise WorkbenchError(f"{what} {path} exists and is not empty: choose another or pass --force")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Write a directory atomically: yields its `<path>.partial` sibling (removed first if left over, not created);
    on success that replaces `path` (whatever was there is removed), on an error it is removed and `path` is left as
    it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    tmp.replace(path)
