"""`workbench compare`: two runs side by side, read from their artifacts without loading any model.

- the selections: per λ (and r) each run's cell and scores;
- the rates (`evaluation.csv`): compliance per dataset × intervention × judge in run A and B, and B − A;
- where both runs judged completions of the same prompts for a dataset × intervention (completion rows matched by
  prompt text, the k-th repeat of a prompt with the k-th), the paired difference of compliance on the matched prompts
  with Newcombe's interval for paired proportions (`eval.stats.newcombe_paired_interval`) and the number matched.

Runs on different models (fingerprints differ) are still compared, and the comparison says so.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.eval.stats import newcombe_paired_interval, paired_counts
from workbench.io import atomic_write, write_json
from workbench.stages.run_dir import RunDir, rewrite_hint
from workbench.viz.report import selection_frame

RATE_KEYS = ["dataset", "intervention", "judge"]
SELECTION_COMPARED = ("ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful", "ablation_kl")
"""The selection scores shown for both runs (the rule's scores)."""


@dataclass(frozen=True)
class RunComparison:
    selections: pd.DataFrame | None
    """Per selection (`w' λ=<λ>`, `r`): each run's cell and scores (`_a`, `_b`), and whether the cells agree."""
    rates: pd.DataFrame | None
    """Per dataset × intervention × judge: `n_a`, `rate_a`, `n_b`, `rate_b`, `diff` (B − A, compliance), and where
    completions pair up `matched`, `a_only` / `b_only` (prompts only A / only B complied on), `paired_diff`,
    `paired_low`, `paired_high`."""
    models: tuple[dict | None, dict | None]
    """Each run's model record (None where the run has none)."""

    @property
    def same_model(self) -> bool | None:
        """Whether the fingerprints agree (None where a run records no model)."""
        a, b = self.models
        return None if a is None or b is None else a.get("fingerprint") == b.get("fingerprint")


def selection_side_by_side(a: dict, b: dict) -> pd.DataFrame:
    """Two `selection.json`s side by side: one row per λ selected in either (then r), each run's cell and scores."""

    def keyed(selection: dict) -> pd.DataFrame:
        frame = selection_frame(selection).reindex(columns=["vector", "lam", "pos", "layer", *SELECTION_COMPARED])
        frame.insert(0, "selection", [f"w' λ={lam}" if vector == "w'" else "r"
                                      for vector, lam in zip(frame.vector, frame.lam, strict=True)])
        return frame.drop(columns=["vector"])

    left, right = keyed(a), keyed(b)
    merged = left.merge(right.drop(columns=["lam"]), on="selection", how="outer", suffixes=("_a", "_b"))
    lams = merged.selection.map(dict(zip(left.selection, left.lam, strict=True)) | dict(zip(right.selection,
                                                                                            right.lam, strict=True)))
    merged = merged.assign(lam=lams).sort_values("lam", ascending=False, na_position="last", kind="stable")
    merged["same_cell"] = (merged.pos_a == merged.pos_b) & (merged.layer_a == merged.layer_b)
    columns = ["selection", "pos_a", "layer_a", "pos_b", "layer_b", "same_cell",
               *(f"{s}_{side}" for s in SELECTION_COMPARED for side in "ab")]
    return merged[columns].reset_index(drop=True)


def rates_side_by_side(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two `evaluation.csv`s side by side: per dataset × intervention × judge in either, `n` and compliance `rate`
    in each, and `diff` = rate B − rate A (empty where one run lacks the row)."""
    keep = [*RATE_KEYS, "n", "rate"]
    merged = a[keep].merge(b[keep], on=RATE_KEYS, how="outer", suffixes=("_a", "_b"))
    merged["diff"] = merged.rate_b - merged.rate_a
    for column in ("n_a", "n_b"):
        merged[column] = merged[column].astype("Int64")
    return merged.sort_values(RATE_KEYS, kind="stable").reset_index(drop=True)


def _complied(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per prompt (text, repeat index): complied (not refused by `column`'s judge)."""
    return pd.DataFrame({"instruction": frame.instruction.to_numpy(),
                         "repeat": frame.groupby("instruction").cumcount().to_numpy(),
                         "complied": ~frame[column].astype(bool).to_numpy()})


def paired_rates(a: pd.DataFrame, b: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Compliance of the same prompts in two runs: per dataset × intervention × judge that labelled every completion
    in both, the prompts matched by text, `matched` (how many), `a_only` / `b_only` (complied on in one run only), the
    paired difference B − A and Newcombe's interval of it at `level`."""
    from workbench.stages.evaluate import judge_columns

    judges_a, judges_b = judge_columns(a), judge_columns(b)
    rows = []
    for (dataset, intervention), part_a in a.groupby(["dataset", "intervention"], sort=True):
        part_b = b[(b.dataset == dataset) & (b.intervention == intervention)]
        if part_b.empty:
            continue
        for judge in (j for j in judges_a if j in judges_b):
            column_a, column_b = judges_a[judge], judges_b[judge]
            if part_a[column_a].isna().any() or part_b[column_b].isna().any():
                continue  # this judge did not label every completion (as summarize skips it)
            pairs = _complied(part_a, column_a).merge(_complied(part_b, column_b), on=["instruction", "repeat"],
                                                      suffixes=("_a", "_b"))
            row = {"dataset": dataset, "intervention": intervention, "judge": judge, "matched": len(pairs)}
            if len(pairs):
                # first: B, so that the difference is B − A
                counts = paired_counts(pairs.complied_b.to_numpy(), pairs.complied_a.to_numpy())
                low, high = newcombe_paired_interval(counts, level)
                row |= {"a_only": counts.second_only, "b_only": counts.first_only, "paired_diff": counts.difference,
                        "paired_low": low, "paired_high": high}
            rows.append(row)
    columns = [*RATE_KEYS, "matched", "a_only", "b_only", "paired_diff", "paired_low", "paired_high"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({c: "Int64" for c in ("matched", "a_only", "b_only")})


def _model(run: RunDir) -> dict | None:
    if run.file("candidates.json").exists():
        return run.model_record()
    if run.file("config.json").exists():
        record = run.read_json("config.json", keys=("model",))["model"]
        return record if isinstance(record, dict) else None
    return None


def _check_comparable(a: RunDir, b: RunDir) -> tuple[bool, bool]:
    """(both have a selection, both have an evaluation), refused when the two have nothing in common."""
    has = {run: (run.file("selection.json").exists(), run.file("evaluation.csv").exists()) for run in (a, b)}
    for run, (selection, evaluation) in has.items():
        if not (selection or evaluation):
            raise WorkbenchError(f"{run.path} has no selection.json or evaluation.csv to compare: run "
                                 f"{rewrite_hint('selection.json', run.path)} and "
                                 f"{rewrite_hint('evaluation.csv', run.path)} first")
    both = (has[a][0] and has[b][0], has[a][1] and has[b][1])
    if not any(both):
        lacking = b if has[a][1] else a  # the one with a selection but no evaluation
        raise WorkbenchError(f"{a.path} and {b.path} have nothing in common to compare (one has only a selection, "
                             f"the other only an evaluation): run {rewrite_hint('evaluation.csv', lacking.path)} first")
    return both


def compare_runs(a: RunDir, b: RunDir, level: float = 0.95) -> RunComparison:
    """Read and compare two run directories (see the module docstring)."""
    from workbench.stages.evaluate import read_completions, read_evaluation

    for run in (a, b):
        if not run.path.is_dir():
            raise WorkbenchError(f"run directory {run.path} does not exist or is not a directory: give two run "
                                 "directories made by `workbench run` (or the stage commands)")
    both_selected, both_evaluated = _check_comparable(a, b)
    selections = (selection_side_by_side(a.read_json("selection.json", keys=("selections", "r")),
                                         b.read_json("selection.json", keys=("selections", "r")))
                  if both_selected else None)
    rates = None
    if both_evaluated:
        rates = rates_side_by_side(read_evaluation(a), read_evaluation(b))
        if all(any(run.path.glob("completions/*/*.meta.json")) for run in (a, b)):
            rates = rates.merge(paired_rates(read_completions(a), read_completions(b), level), on=RATE_KEYS,
                                how="left")
    return RunComparison(selections, rates, (_model(a), _model(b)))


def model_note(comparison: RunComparison, a: RunDir, b: RunDir) -> str | None:
    """A line saying the two runs are on different models (or that one records none); None when they agree."""
    model_a, model_b = comparison.models
    if comparison.same_model is None:
        missing = a if model_a is None else b
        return (f"{missing.path} records no model (no candidates.json or config.json): cannot tell whether the "
                "models agree")
    if not comparison.same_model:
        return (f"the runs are on different models: A {model_a.get('name')!r} (fingerprint "
                f"{model_a.get('fingerprint')}), B {model_b.get('name')!r} (fingerprint {model_b.get('fingerprint')})")
    return None


def default_out(a: RunDir, b: RunDir) -> Path:
    return Path("runs") / "compare" / f"{a.path.name}_vs_{b.path.name}"


def write_comparison(comparison: RunComparison, a: RunDir, b: RunDir, out: str | Path) -> list[Path]:
    """`selections.csv`, `rates.csv` (where the runs have them) and `comparison.json` (the runs, their models, whether
    they agree) under `out`; returns the files written."""
    out = Path(out)
    written = []
    for name, frame in (("selections.csv", comparison.selections), ("rates.csv", comparison.rates)):
        if frame is not None:
            written.append(atomic_write(out / name, lambda tmp, f=frame: f.to_csv(tmp, index=False)))
    written.append(write_json(out / "comparison.json", json.loads(json.dumps(
        {"a": str(a.path), "b": str(b.path), "models": list(comparison.models), "same_model": comparison.same_model,
         "note": model_note(comparison, a, b)}, default=str))))
    return written
