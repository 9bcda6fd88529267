"""Benchmark files downloaded from their pinned sources (`workbench.data_sources`) into a data directory, verified.

Each file streams into a temporary file beside its destination, is checked against its pinned size and sha256, and
only then is renamed into place, so an interrupted or wrong download leaves nothing in the data directory. A file
already there with the pinned digest is kept without a request. A mirror laid out like the data directory (for
example `python -m http.server` over a copy) replaces the public URLs with `base_url`.
"""

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from workbench.data_sources import PinnedFile, SourceTable
from workbench.errors import WorkbenchError
from workbench.io import atomic_write, file_sha256

CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for a connection: offline, a fetch fails in about this long (there are no retries)."""
READ_TIMEOUT_S = 60.0
"""Seconds to wait for the next bytes of an answer."""
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class FetchedFile:
    """What a fetch did with one file."""

    path: str
    """Relative to the data directory."""
    action: str
    """"fetched" (downloaded and verified) or "kept" (already there with the pinned sha256)."""
    url: str | None
    """Where it was downloaded from (None when kept)."""


def is_intact(file: PinnedFile, data_dir: Path) -> bool:
    """The file is in `data_dir` with its pinned size and sha256."""
    path = Path(data_dir) / file.path
    return path.is_file() and path.stat().st_size == file.size and file_sha256(path) == file.sha256


def file_url(file: PinnedFile, base_url: str | None = None) -> str:
    """`base_url/<path in the data directory>` for a mirror, otherwise the pinned public URL."""
    if base_url is not None:
        return f"{base_url.rstrip('/')}/{quote(file.path)}"
    if file.url is None:
        raise WorkbenchError(f"{file.path} has no public source{f' ({file.no_source})' if file.no_source else ''}: "
                             "give --base-url a mirror that holds it")
    return file.url


def new_client() -> httpx.Client:
    """A client with a short connect timeout and no retries, following redirects."""
    return httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S), follow_redirects=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _download(client: httpx.Client, file: PinnedFile, url: str, tmp: Path) -> None:
    """Stream `url` into `tmp` and check it against `file`'s size and sha256; a WorkbenchError otherwise."""
    what = f"{file.path} from {url}"
    digest, received = hashlib.sha256(), 0
    try:
        with client.stream("GET", url) as answer:
            if answer.status_code == 404:
                raise WorkbenchError(f"{what}: not found (HTTP 404): the source has moved; give --base-url a mirror")
            if answer.status_code != 200:
                raise WorkbenchError(f"{what}: HTTP {answer.status_code} {answer.reason_phrase}: try again later")
            with open(tmp, "wb") as out:
                for block in answer.iter_bytes(CHUNK_BYTES):
                    received += len(block)
                    if received > file.size:
                        raise WorkbenchError(f"{what}: more than the pinned {file.size} bytes: the source has changed")
                    digest.update(block)
                    out.write(block)
    except httpx.TimeoutException as exc:
        raise WorkbenchError(f"{what}: timed out ({type(exc).__name__}): check the network, or give --base-url a "
                             "mirror") from None
    except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
        raise WorkbenchError(f"{what}: cannot connect ({_one_line(exc)}): check the network, or give --base-url a "
                             "mirror") from None
    except httpx.HTTPError as exc:
        raise WorkbenchError(f"{what}: download interrupted ({_one_line(exc)}): run the fetch again") from None
    if received != file.size:
        raise WorkbenchError(f"{what}: got {received} bytes, expected {file.size}: run the fetch again")
    if digest.hexdigest() != file.sha256:
        raise WorkbenchError(f"{what}: sha256 {digest.hexdigest()}, expected {file.sha256}: the source has changed, "
                             "nothing was written")


def _missing_dirs(path: Path, data_dir: Path) -> list[Path]:
    """The folders between `data_dir` (included) and `path` that do not exist yet, deepest first."""
    missing, folder = [], path.parent
    while not folder.exists():
        missing.append(folder)
        if folder == data_dir or folder == folder.parent:
            break
        folder = folder.parent
    return missing


def fetch_file(file: PinnedFile, data_dir: Path, base_url: str | None = None,
               client: httpx.Client | None = None) -> FetchedFile:
    """Download `file` into `data_dir` unless it is already there intact; on any failure a one-line WorkbenchError
    naming the file, the URL and the problem, and neither the file, a temporary file nor a new folder is left."""
    data_dir = Path(data_dir)
    if is_intact(file, data_dir):
        return FetchedFile(file.path, "kept", None)
    url = file_url(file, base_url)
    destination = data_dir / file.path
    created = _missing_dirs(destination, data_dir)
    own_client = client is None
    client = client or new_client()
    try:
        atomic_write(destination, lambda tmp: _download(client, file, url, tmp))
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break  # something else is in it
        raise
    finally:
        if own_client:
            client.close()
    return FetchedFile(file.path, "fetched", url)


def check_fetchable(names: Iterable[str], table: SourceTable, base_url: str | None = None) -> None:
    """Refuse, before anything is downloaded, an unknown set or one with no source (a mirror serves any file)."""
    for name in names:
        if name not in table.sets:
            raise WorkbenchError(f"cannot fetch {name!r}: not a benchmark set with a pinned source (`workbench "
                                 "datasets` lists the sets)")
        reason = table.no_source(name)
        if reason is not None and not (base_url is not None and table.files_of(name)):
            raise WorkbenchError(f"cannot fetch {name!r}: {reason}: put its files in the data directory yourself")


def fetch_sets(names: Iterable[str], data_dir: Path, table: SourceTable, base_url: str | None = None,
               report: Callable[[str], None] | None = None,
               client: httpx.Client | None = None) -> list[FetchedFile]:
    """Fetch every file of the sets `names` into `data_dir` (created when missing), set by set; `report` gets a
    line per set (with its licences) and per file. Sets are checked before the first download."""
    names = list(dict.fromkeys(names))
    check_fetchable(names, table, base_url)
    say = report or (lambda line: None)
    data_dir = Path(data_dir)
    own_client = client is None
    client = client or new_client()
    done: list[FetchedFile] = []
    try:
        for name in names:
            say(f"{name} (licence: {'; '.join(table.licences(name))})")
            for file in table.files_of(name):
                result = fetch_file(file, data_dir, base_url, client)
                say(f"  {result.action:7s} {file.path} ({file.size:,} bytes)")
                done.append(result)
    finally:
        if own_client:
            client.close()
    return done
