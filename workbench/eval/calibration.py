"""A judge against human labels: labelled files in XSTest's layout (`prompt`, `completion`, `final_label` ∈
{1_full_compliance, 2_full_refusal, 3_partial_refusal}), the agreement metrics (pure), and `calibrate`, which
judges every file and reports per file and pooled.

Binary means refusal = full or partial refusal, on both sides. The metrics:
- `agreement`: share of rows where the judge's binary verdict equals the label's;
- `kappa`: Cohen's κ of the binary verdicts (chance-corrected agreement);
- `recall_full`, `recall_partial`: share of full / partial refusals the judge calls a refusal (either class);
- `false_refusal_rate`: share of full compliances the judge calls a refusal;
- `agreement_3class`: share of rows where the judge's class equals the label's (judges without a partial class
  never match a partial);
- the 3 × 3 confusion matrix (label × judge), `n_<label>_<judged>` columns.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Bool, Int
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.eval.judge import JUDGE_LABELS, Judge

XSTEST_LABELS: dict[str, str] = {
    "1_full_compliance": "compliance",
    "2_full_refusal": "refusal",
    "3_partial_refusal": "partial",
}
"""XSTest's `final_label` values -> the judges' classes."""


def cohen_kappa(a: Bool[np.ndarray, " n"], b: Bool[np.ndarray, " n"]) -> float:
    """Cohen's κ of two binary labellings: (p_o − p_e) / (1 − p_e); 1.0 when both are constant and equal."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise WorkbenchError(f"κ needs two non-empty labellings of one length, got {a.size} and {b.size}")
    observed = float((a == b).mean())
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return 1.0 if expected == 1.0 else (observed - expected) / (1 - expected)


def confusion(truth: Sequence[str], judged: Sequence[str]) -> Int[np.ndarray, "3 3"]:
    """Counts of (label, judged) over the three classes, rows and columns in `JUDGE_LABELS` order."""
    index = {label: i for i, label in enumerate(JUDGE_LABELS)}
    if len(truth) != len(judged):
        raise WorkbenchError(f"{len(truth)} labels but {len(judged)} verdicts")
    unknown = sorted({x for x in (*truth, *judged) if x not in index})
    if unknown:
        raise WorkbenchError(f"unknown class {unknown[0]!r}: expected one of {', '.join(JUDGE_LABELS)}")
    matrix = np.zeros((3, 3), dtype=np.int64)
    for t, j in zip(truth, judged, strict=True):
        matrix[index[t], index[j]] += 1
    return matrix


def _share(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def agreement_metrics(truth: Sequence[str], judged: Sequence[str]) -> dict[str, float | int]:
    """Every metric of the module docstring for one labelled set (classes from `JUDGE_LABELS`)."""
    if len(truth) == 0:
        raise WorkbenchError("no labelled rows to compare with")
    m = confusion(truth, judged)
    c, r, p = 0, 1, 2
    truth_refusal = np.array([t != "compliance" for t in truth])
    judged_refusal = np.array([j != "compliance" for j in judged])
    metrics: dict[str, float | int] = {
        "n": len(truth),
        "agreement": float((truth_refusal == judged_refusal).mean()),
        "kappa": cohen_kappa(truth_refusal, judged_refusal),
        "recall_full": _share(int(m[r, r] + m[r, p]), int(m[r].sum())),
        "recall_partial": _share(int(m[p, r] + m[p, p]), int(m[p].sum())),
        "false_refusal_rate": _share(int(m[c, r] + m[c, p]), int(m[c].sum())),
        "agreement_3class": float(np.trace(m) / m.sum()),
        "label_refusal_rate": float(truth_refusal.mean()),
        "judged_refusal_rate": float(judged_refusal.mean()),
    }
    for i, t in enumerate(JUDGE_LABELS):
        for j, k in enumerate(JUDGE_LABELS):
            metrics[f"n_{t}_{k}"] = int(m[i, j])
    return metrics


@dataclass(frozen=True)
class LabelledSet:
    """One labelled file: its rows' prompts, completions and classes."""

    name: str
    prompts: tuple[str, ...]
    completions: tuple[str, ...]
    labels: tuple[str, ...]


def read_labelled(path: str | Path) -> LabelledSet:
    """A labelled file in XSTest's layout; a missing column, an unknown label or an empty file is a one-line error."""
    from workbench.eval.completions_csv import read_completions_csv

    frame = read_completions_csv(path, extra_columns=("final_label",))
    unknown = sorted(set(frame.final_label) - set(XSTEST_LABELS))
    if unknown:
        raise WorkbenchError(f"{path}: unknown final_label values {unknown[:5]}: expected {', '.join(XSTEST_LABELS)}")
    name = Path(path).stem.removeprefix("xstest_v2_completions_")
    return LabelledSet(name, tuple(frame.prompt), tuple(frame.completion),
                       tuple(XSTEST_LABELS[x] for x in frame.final_label))


def check_names(sets: Sequence[LabelledSet]) -> None:
    """Labelled sets are told apart by name (the file's stem): two with one name are refused."""
    names = [s.name for s in sets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise WorkbenchError(f"two labelled files are both named {twice[0]!r}: give each model's file its own name")


def calibrate(judge: Judge, sets: Sequence[LabelledSet], progress: bool = True) -> pd.DataFrame:
    """Judge every labelled set; one row of `agreement_metrics` per set and a pooled row (`file` = "pooled")."""
    if not sets:
        raise WorkbenchError("calibrate: give at least one labelled file")
    check_names(sets)
    rows, truth_all, judged_all = [], [], []
    for labelled in tqdm(sets, desc=f"calibrate {judge.name}", unit="file", disable=not progress):
        judged = [v.label for v in judge.verdicts(list(labelled.prompts), list(labelled.completions))]
        rows.append({"judge": judge.name, "file": labelled.name, **agreement_metrics(labelled.labels, judged)})
        truth_all += labelled.labels
        judged_all += judged
    if len(sets) > 1:
        rows.append({"judge": judge.name, "file": "pooled", **agreement_metrics(truth_all, judged_all)})
    return pd.DataFrame(rows)


SUMMARY_COLUMNS = ("judge", "file", "n", "agreement", "kappa", "recall_full", "recall_partial", "false_refusal_rate",
                   "agreement_3class")


def summary_table(table: pd.DataFrame) -> str:
    """The calibration table's headline columns as aligned text."""
    columns = [c for c in (*SUMMARY_COLUMNS, "fitted_on") if c in table]
    return table[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}")


def agreement_table(labels: dict[str, list[bool]]) -> pd.DataFrame:
    """Pairwise agreement of judges that labelled the same completions: rate and Cohen's κ."""
    names = list(labels)
    rows = []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            x = np.asarray(labels[a], dtype=bool)
            y = np.asarray(labels[b], dtype=bool)
            if x.shape != y.shape:
                raise WorkbenchError(f"judges {a} and {b} labelled different numbers of completions")
            rows.append({"judge_a": a, "judge_b": b, "n": int(x.size), "agreement": float((x == y).mean()),
                         "cohen_kappa": cohen_kappa(x, y), "refusal_rate_a": float(x.mean()),
                         "refusal_rate_b": float(y.mean())})
    return pd.DataFrame(rows)
