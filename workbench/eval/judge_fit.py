"""Fitting the tunable judges on labelled files, and measuring them honestly: leave one labelled model out.

- `keywords`: greedy rule selection (`workbench.eval.keywords.select_rules`).
- `model`: a linear read-out of the judge model's residual stream (`workbench.eval.model_judge.fit_readout`); where
  it reads (layer, and the answer position or the mean over the completion) is chosen on the training files alone,
  by fitting on each and scoring on the other(s).

`leave_one_out` fits on every file but one and reports on that one, for each choice of the one; `fit` fits on all the
files given and writes the result (rules or read-out) for the judge to load.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from workbench.errors import WorkbenchError
from workbench.eval.calibration import LabelledSet, agreement_metrics, check_names
from workbench.eval.judge import JudgeOptions

FITTABLE = ("keywords", "model")


@dataclass(frozen=True)
class ReadoutSpace:
    """Where a model judge's read-out may read: layers (None: every layer from a quarter of the depth) and
    sites. The default site is the mean over the completion's tokens: read at the answer position alone, a read-out
    fitted on Llama-2's and Mistral's completions missed GPT-4's one-sentence apologetic refusals in
    leave-one-out."""

    layers: tuple[int, ...] | None = None
    sites: tuple[str, ...] = ("answer_mean",)
    l2s: tuple[float, ...] = (0.1, 0.3, 1.0)
    """L2 penalties tried (on standardized features)."""

    def layer_grid(self, n_layers: int) -> tuple[int, ...]:
        if self.layers is not None:
            bad = [layer for layer in self.layers if not 0 <= layer <= n_layers]
            if bad:
                raise WorkbenchError(f"read-out layers {bad} are outside 0..{n_layers}")
            return self.layers
        return tuple(range(max(1, n_layers // 4), n_layers + 1))


def _labels(sets: Sequence[LabelledSet]) -> list[str]:
    return [label for s in sets for label in s.labels]


@dataclass(frozen=True)
class Choice:
    """Where a read-out reads and how strongly it is penalized; `score`: its inner leave-one-out agreement."""

    layer_index: int
    site: str
    l2: float
    score: float = float("nan")


class _ModelStates:
    """A judge model's states over labelled sets at the candidate layers, computed once."""

    def __init__(self, options: JudgeOptions, sets: Sequence[LabelledSet], space: ReadoutSpace, progress: bool):
        from workbench.eval.model_judge import load_model_judge

        self.judge = load_model_judge(JudgeOptions(**{**options.__dict__, "readout": None}))
        self.layers = space.layer_grid(self.judge.model.config.num_hidden_layers)
        self.space = space
        self.states = {s.name: self._states(s, options, progress) for s in sets}

    def _states(self, labelled: LabelledSet, options: JudgeOptions, progress: bool):
        """The judge's states over one labelled set; for a registered judge model cached on disk (under the workbench
        cache) by everything they depend on: the judge model, dtype, completion cut, rubric, layers and the set's
        rows."""
        import hashlib
        import json

        from workbench.eval.model_judge import QUESTION, RUBRIC, JudgeStates, default_readout_path
        from workbench.io import atomic_write
        from workbench.paths import cache_dir

        if default_readout_path(self.judge.model_name) is None:  # a local checkpoint: not cached
            return self.judge.answer_states(labelled.prompts, labelled.completions, self.layers, progress)
        key = hashlib.sha256(json.dumps([self.judge.model_name, options.dtype, options.max_completion_tokens, RUBRIC,
                                         QUESTION, list(self.layers), labelled.prompts, labelled.completions])
                             .encode()).hexdigest()[:20]
        path = cache_dir() / "judge_states" / f"{labelled.name}-{key}.pt"
        if path.is_file():
            try:
                return JudgeStates(**torch.load(path, weights_only=True))
            except Exception:  # noqa: BLE001 — a damaged cache entry is computed again
                pass
        states = self.judge.answer_states(labelled.prompts, labelled.completions, self.layers, progress)
        atomic_write(path, lambda tmp: torch.save(dataclasses.asdict(states), tmp))
        return states

    def features(self, names: Sequence[str], layer_index: int, site: str) -> torch.Tensor:
        return torch.cat([self.states[n].site(site)[:, layer_index] for n in names])

    def fit(self, train: Sequence[LabelledSet], choice: "Choice"):
        from workbench.eval.model_judge import fit_readout

        names = [s.name for s in train]
        return fit_readout(self.features(names, choice.layer_index, choice.site), _labels(train),
                           self.layers[choice.layer_index], choice.site, self.judge.model_name, names, l2=choice.l2)

    def predict(self, readout, held: LabelledSet, choice: "Choice") -> list[str]:
        from workbench.eval.model_judge import decide

        return decide(readout.probabilities(self.features([held.name], choice.layer_index, choice.site)))

    def choose(self, train: Sequence[LabelledSet]) -> "Choice":
        """The (layer, site, L2 penalty) whose read-out, fitted on each training file but one, best predicts the one
        left out (mean binary agreement; ties: the first); with one training file, fitted and scored on it."""
        train = list(train)
        folds = [(train[:k] + train[k + 1 :], t) for k, t in enumerate(train)] if len(train) > 1 else [
            (train, train[0])]
        best, best_score = None, -1.0
        for site in self.space.sites:
            for li in range(len(self.layers)):
                for l2 in self.space.l2s:
                    choice = Choice(li, site, l2)
                    scores = [agreement_metrics(held.labels, self.predict(self.fit(fit_on, choice), held, choice))
                              ["agreement"] for fit_on, held in folds]
                    if sum(scores) / len(scores) > best_score:
                        best, best_score = choice, sum(scores) / len(scores)
        return dataclasses.replace(best, score=best_score)


def leave_one_out(name: str, sets: Sequence[LabelledSet], options: JudgeOptions | None = None,
                  space: ReadoutSpace = ReadoutSpace(), progress: bool = True) -> pd.DataFrame:
    """For each labelled set: the judge fitted on the others, measured on it (one row per set, `fitted_on` says
    which), and a pooled row over the held-out verdicts."""
    from workbench.eval.keywords import select_rules

    if name not in FITTABLE:
        raise WorkbenchError(f"judge {name!r} has nothing to fit: --leave-one-out is for {', '.join(FITTABLE)}")
    if len(sets) < 2:
        raise WorkbenchError("--leave-one-out needs at least two labelled files")
    check_names(sets)
    options = options or JudgeOptions()
    model_states = _ModelStates(options, sets, space, progress) if name == "model" else None
    rows, truth_all, judged_all = [], [], []
    for k, held in enumerate(sets):
        train = list(sets[:k]) + list(sets[k + 1 :])
        extra = {}
        if model_states is None:
            judge = select_rules([c for s in train for c in s.completions], _labels(train))
            judged = [v.label for v in judge.verdicts(held.prompts, held.completions)]
            extra["rules"] = len(judge.rules)
        else:
            choice = model_states.choose(train)
            judged = model_states.predict(model_states.fit(train, choice), held, choice)
            extra.update(layer=model_states.layers[choice.layer_index], site=choice.site, l2=choice.l2)
        rows.append({"judge": name, "file": held.name, **agreement_metrics(held.labels, judged),
                     "fitted_on": "+".join(s.name for s in train), **extra})
        truth_all += held.labels
        judged_all += judged
    rows.append({"judge": name, "file": "pooled", **agreement_metrics(truth_all, judged_all),
                 "fitted_on": "leave-one-out"})
    return pd.DataFrame(rows)


def fit(name: str, sets: Sequence[LabelledSet], out: str | Path, options: JudgeOptions | None = None,
        space: ReadoutSpace = ReadoutSpace(), progress: bool = True) -> str:
    """Fit the judge on all `sets` and write it to `out`; returns a line saying what was written."""
    from workbench.eval.keywords import XSTEST_RULES, select_rules

    if name not in FITTABLE:
        raise WorkbenchError(f"judge {name!r} has nothing to fit: `judge fit` is for {', '.join(FITTABLE)}")
    if not sets:
        raise WorkbenchError("judge fit: give at least one labelled file")
    check_names(sets)
    names = [s.name for s in sets]
    if name == "keywords":
        judge = select_rules([c for s in sets for c in s.completions], _labels(sets), progress=progress)
        judge.save(out, names)
        selected = len(judge.rules) - len(XSTEST_RULES)
        return f"XSTest's {len(XSTEST_RULES)} prefixes + {selected} rules selected on {', '.join(names)} -> {out}"
    states = _ModelStates(options or JudgeOptions(), sets, space, progress)
    choice = states.choose(list(sets))
    states.fit(list(sets), choice).save(out)
    return (f"read-out at layer {states.layers[choice.layer_index]} ({choice.site}, L2 {choice.l2:g}; chosen by "
            f"leave-one-out agreement {choice.score:.3f}), fitted on {', '.join(names)} -> {out}")
