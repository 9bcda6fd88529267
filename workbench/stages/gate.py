"""`workbench gate`: fit the harmfulness gate of a run's selected w′ (`workbench.interventions.gate`).

1. Activations: `resid_pre` at every layer and at the last instruction token and every EOI position, for the fit sets
   (harmful vs harmless + pseudo-harmful; the paper's training splits by default) and the contrast sets (harmful vs
   pseudo-harmful prompts of *another source*: our bundled sets by default), one forward pass per prompt.
2. Probes: a difference-of-means probe per (position, layer), fitted on the fit sets only.
3. Choice: the cell with the highest AUROC of harmful vs pseudo-harmful contrast prompts, and the threshold that lets
   through at most `bound` of the harmful contrast prompts. Choosing on the fit sets' own held-back rows rewards
   probes that read the sources' style (imperative requests vs long questions) rather than harmfulness; so a contrast
   set from the same source as a fit set is refused.

Writes `gate.csv` (every cell: `pos`, `layer`, `auroc_fit`, `auroc_contrast`, and the chosen one), `gate.json` (the
choice, the sets, the contrast let-through and open rates, the contrast prompts' scores at the chosen cell, from which
`gate_at_bound` sets the threshold for any other bound) and `directions/gate.safetensors`. Never fit or choose on
a set a table reports (the Table 1 test splits, OKTest): the gate's numbers there are out of sample.
"""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch

from workbench.data import check_prompt_source, get_spec, load_prompts
from workbench.errors import WorkbenchError
from workbench.interventions.gate import GATE_FILE, Gate, save_gate
from workbench.io import atomic_write, write_json
from workbench.method.gate_probe import (
    auroc_grid,
    mean_difference_probes,
    open_rate,
    probe_scores,
    threshold_for_bound,
)
from workbench.models.activations import activation_batches
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, jsonable
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

GATE_COLUMNS = ("pos", "layer", "auroc_fit", "auroc_contrast", "chosen")


@dataclass(frozen=True)
class GateConfig:
    """What `workbench gate` fits the gate on, chooses it on, and the let-through bound it is chosen for."""

    harmful: str = "harmful_train"
    """Harmful prompts the probes are fitted on."""
    harmless: str = "harmless_train"
    """Harmless prompts the probes are fitted on (one half of the benign side)."""
    pseudo_harmful: str = "or_bench_hard_train_all"
    """Pseudo-harmful prompts the probes are fitted on (the other half of the benign side)."""
    n_fit: int | None = 128
    """Prompts per fit set (None: all)."""
    contrast_harmful: str = "bundled_harmful_train"
    """Harmful prompts of another source the cell and threshold are chosen on."""
    contrast_benign: str = "bundled_pseudo_harmful_train"
    """Pseudo-harmful prompts of that source (what the gate must let through)."""
    n_contrast: int | None = None
    """Prompts per contrast set (None: all)."""
    bound: float = 0.05
    """At most this share of the harmful contrast prompts may open the gate."""
    lam: float | None = None
    """The selected λ whose w′ the gate gates (None: the largest λ of the selection)."""
    batch_size: int = 32
    """Prompts per forward pass."""

    def validate(self) -> None:
        if not 0.0 <= self.bound <= 1.0:
            raise WorkbenchError(f"gate bound must be in [0, 1] (the share of harmful prompts let through), got "
                                 f"{self.bound}")
        for name in ("n_fit", "n_contrast"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise WorkbenchError(f"gate {name} must be at least 2 (or None for all), got {value}")
        if self.batch_size < 1:
            raise WorkbenchError(f"gate batch_size must be at least 1, got {self.batch_size}")
        fit = (self.harmful, self.harmless, self.pseudo_harmful)
        for name in (*fit, self.contrast_harmful, self.contrast_benign):
            check_prompt_source(name)
        shared = sorted({_source(c) for c in (self.contrast_harmful, self.contrast_benign)}
                        & {_source(f) for f in fit} - {None})
        if shared:
            raise WorkbenchError(f"gate: the contrast sets ({self.contrast_harmful}, {self.contrast_benign}) come from "
                                 f"the same source as the fit sets ({shared[0]}): choose the cell on prompts of "
                                 "another source (e.g. the bundled sets when fitting on the paper's splits)")


def _source(name: str) -> str | None:
    """A registered set's source (a prompts file has none known)."""
    try:
        return get_spec(name).source
    except WorkbenchError:
        return None


def _acts(lm: LoadedModel, name: str, limit: int | None, n_last: int, batch_size: int, desc: str
          ) -> torch.Tensor:
    prompts = [p.instruction for p in load_prompts(name, limit=limit)]
    if len(prompts) < 2:
        raise WorkbenchError(f"gate: set {name!r} has {len(prompts)} prompt(s); the gate needs at least 2 per set")
    batches = [a for a, _ in activation_batches(lm, prompts, None, batch_size, desc, n_last=n_last)]
    return torch.cat(batches).float()


def gated_selection(run: RunDir, lam: float | None) -> dict:
    """The selection (entry of `selection.json`) whose w′ the gate gates: at `lam`, or the largest λ."""
    selections = run.read_json("selection.json", keys=("selections", "r"))["selections"]
    if not selections:
        raise WorkbenchError(f"{run.file('selection.json')} has no selections: there is no w′ to gate")
    if lam is None:
        return max(selections, key=lambda s: float(s["lam"]))
    for s in selections:
        if float(s["lam"]) == float(lam):
            return s
    raise WorkbenchError(f"the run selected no direction at λ = {lam} (it has λ "
                         f"{', '.join(str(s['lam']) for s in selections)})")


def fit_gate(lm: LoadedModel, run: RunDir, config: GateConfig) -> dict:
    """Fit, choose and write the gate (see the module docstring); returns `gate.json`'s record.

        record = wb.fit_gate(lm, wb.RunDir("runs/default"), wb.GateConfig(bound=0.05))
    """
    config.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    gated = gated_selection(run, config.lam)
    n_last = lm.chat.n_eoi + 1
    positions = list(range(-n_last, 0))
    fit = {key: _acts(lm, getattr(config, key), config.n_fit, n_last, config.batch_size, f"gate fit {key}")
           for key in ("harmful", "harmless", "pseudo_harmful")}
    contrast = {key: _acts(lm, getattr(config, f"contrast_{key}"), config.n_contrast, n_last, config.batch_size,
                           f"gate contrast {key}") for key in ("harmful", "benign")}
    benign = torch.cat([fit["harmless"], fit["pseudo_harmful"]])
    probes = mean_difference_probes(fit["harmful"], benign)
    auroc_fit = auroc_grid(probe_scores(fit["harmful"], probes), probe_scores(benign, probes))
    harmful_scores = probe_scores(contrast["harmful"], probes)
    benign_scores = probe_scores(contrast["benign"], probes)
    auroc_contrast = auroc_grid(harmful_scores, benign_scores)
    valid = torch.nan_to_num(auroc_contrast, nan=-1.0)
    best = int(torch.argmax(valid))  # the first cell (in position, layer order) with the highest contrast AUROC
    p, layer = divmod(best, auroc_contrast.shape[1])
    probe = probes[p, layer].float()  # as the gate file stores it: its threshold and rates are the file's
    chosen_harmful = contrast["harmful"][:, p, layer].double() @ probe.double()
    chosen_benign = contrast["benign"][:, p, layer].double() @ probe.double()
    threshold = threshold_for_bound(chosen_harmful, config.bound)
    rows = [{"pos": pos, "layer": ly, "auroc_fit": float(auroc_fit[i, ly]),
             "auroc_contrast": float(auroc_contrast[i, ly]), "chosen": (i, ly) == (p, layer)}
            for i, pos in enumerate(positions) for ly in range(auroc_contrast.shape[1])]
    table = pd.DataFrame(rows, columns=list(GATE_COLUMNS))
    record = {
        "model": lm.info.name, "fingerprint": lm.info.fingerprint, "config": asdict(config),
        "pos": positions[p], "layer": layer, "threshold": threshold, "bound": config.bound,
        "position_kind": "last instruction token" if positions[p] == -n_last else "EOI token",
        "auroc_fit": float(auroc_fit[p, layer]), "auroc_contrast": float(auroc_contrast[p, layer]),
        "contrast_let_through": open_rate(chosen_harmful, threshold),
        "contrast_open_benign": open_rate(chosen_benign, threshold),
        "contrast_scores": {"harmful": chosen_harmful.tolist(), "benign": chosen_benign.tolist()},
        "n": {"fit": {k: int(v.shape[0]) for k, v in fit.items()},
              "contrast": {k: int(v.shape[0]) for k, v in contrast.items()}},
        "gates": {"lam": float(gated["lam"]), "direction_file": gated["direction_file"]},
        **provenance(),
    }
    meta = {"model": lm.info.name, "fingerprint": lm.info.fingerprint, "gates_lam": str(float(gated["lam"])),
            "fit_on": f"{config.harmful} vs {config.harmless} + {config.pseudo_harmful}",
            "chosen_on": f"{config.contrast_harmful} vs {config.contrast_benign}",
            "auroc_contrast": repr(record["auroc_contrast"])}
    save_gate(run.file(GATE_FILE), Gate(probe, layer, positions[p], threshold, config.bound, meta))
    atomic_write(run.file("gate.csv"), lambda tmp: table.to_csv(tmp, index=False))  # after the gate file: not stale
    write_json(run.file("gate.json"), jsonable(record))
    return record


def gate_at_bound(run: RunDir, bound: float) -> Gate:
    """The run's gate with its threshold set for another let-through `bound`, from the harmful contrast prompts' scores
    at its cell (`gate.json`): the same probe, a different point on the dial."""
    from workbench.interventions.gate import load_gate

    gate = load_gate(run.file(GATE_FILE))
    scores = run.read_json("gate.json", keys=("contrast_scores",))["contrast_scores"]
    harmful = torch.tensor(scores.get("harmful", []) if isinstance(scores, dict) else [], dtype=torch.float64)
    if harmful.numel() == 0:
        raise run.corrupted("gate.json", "no harmful contrast scores")
    return Gate(gate.probe, gate.layer, gate.pos, threshold_for_bound(harmful, bound), bound, gate.meta)


def read_gate_grid(run: RunDir) -> pd.DataFrame:
    """`gate.csv`, checked."""
    return run.read_csv("gate.csv", columns=GATE_COLUMNS, numeric_columns=("pos", "layer", "auroc_fit",
                                                                             "auroc_contrast"))


def _is_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    if not all(run.file(n).exists() for n in ("gate.json", "gate.csv", GATE_FILE)):
        return False
    try:
        record = run.read_json("gate.json", keys=("config", "fingerprint"))
    except WorkbenchError:
        return False
    return record["config"] == jsonable(asdict(config.gate)) and record["fingerprint"] == lm.info.fingerprint


def summary(record: dict) -> str:
    return (f"gate at (pos {record['pos']}, layer {record['layer']}): contrast AUROC {record['auroc_contrast']:.3f}, "
            f"lets through {record['contrast_let_through']:.1%} of harmful and opens for "
            f"{record['contrast_open_benign']:.1%} of pseudo-harmful contrast prompts (bound {record['bound']:g})")


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    return summary(fit_gate(lm, run, config.gate))


STAGE = Stage("gate", inputs=STAGE_INPUTS["gate"], outputs=stage_outputs("gate"), execute=_run, is_done=_is_done)
