"""Reading completion files for the judges: a UTF-8 CSV with `prompt` and `completion` columns (and any others,
kept as they are), checked so that a bad file is a one-line error before anything is judged or written."""

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError


def read_completions_csv(path: str | Path, extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The file's rows in order, every column as text. Refused: a missing file, bytes that are not UTF-8, no
    `prompt`/`completion` (or `extra_columns`) column, no rows, an empty prompt or completion."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        import io

        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise WorkbenchError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    missing = [c for c in ("prompt", "completion", *extra_columns) if c not in frame.columns]
    if missing:
        raise WorkbenchError(f"{path}: no {', '.join(repr(c) for c in missing)} column (it has "
                             f"{', '.join(frame.columns[:8]) or 'none'})")
    if frame.empty:
        raise WorkbenchError(f"{path}: no rows")
    for column in ("prompt", "completion", *extra_columns):
        empty = [i + 2 for i, v in enumerate(frame[column]) if not v.strip()]
        if empty:
            lines = ", ".join(map(str, empty[:5])) + (" …" if len(empty) > 5 else "")
            raise WorkbenchError(f"{path}: empty {column} on {len(empty)} row(s) (line {lines})")
    return frame
