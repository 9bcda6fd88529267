"""The named interventions of a run: what `evaluate`, `capability` and the figures call each intervention.

From a selection (`selection.json` and its `directions/`):
- `baseline`: nothing;
- `ablate_false_lam<λ>`: ablate the selected w' at each selected λ;
- `ablate_false_raw`: ablate raw w at the reference cell (the selection with the largest λ);
- `ablate_true`: ablate r, the Arditi true-refusal selection if the rule found one, else r at the reference cell;
- `actadd_true_a<α>`: add α·r (raw) at r's layer, and `ablate_false_lam<λ>+actadd_true_a<α>` for every λ, α.
`parse_name` inverts the names; `signature` hashes an intervention's content so results are reused only if equal.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.interventions.directions import load_direction
from workbench.interventions.hooks import BASELINE, Ablation, Addition, Combined, Intervention


@dataclass(frozen=True, eq=False)
class NamedIntervention:
    name: str
    intervention: Intervention
    description: dict = field(default_factory=dict)


def lam_name(lam: float) -> str:
    return f"ablate_false_lam{float(lam)}"


def alpha_name(alpha: float) -> str:
    return f"actadd_true_a{float(alpha)}"


def parse_name(name: str) -> tuple[float | None, float | None]:
    """(λ of an ablated w′, α of an added r) named by an intervention (None where absent); inverse of the above."""
    lam = alpha = None
    for part in name.split("+"):
        if part.startswith("ablate_false_lam"):
            lam = float(part.removeprefix("ablate_false_lam"))
        elif part.startswith("actadd_true_a"):
            alpha = float(part.removeprefix("actadd_true_a"))
    return lam, alpha


def signature(intervention: Intervention) -> str:
    """A content hash of an intervention (directions, layers, coefficients): completions are reused only if equal."""
    digest = hashlib.sha256()
    for part in intervention.parts:
        if isinstance(part, Ablation):
            digest.update(b"ablate")
            digest.update(part.direction.detach().float().cpu().numpy().tobytes())
        else:
            digest.update(f"add:{part.layer}:{part.coeff!r}".encode())
            digest.update(part.vector.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_interventions(
    selection: dict, root: Path, fingerprint: str, d_model: int, alphas: tuple[float, ...]
) -> list[NamedIntervention]:
    """Every intervention a selection defines (see the module docstring); `root` is the directory its
    `direction_file` paths are relative to (the run directory)."""
    from safetensors import safe_open

    if not selection["selections"]:
        raise WorkbenchError(f"{root / 'selection.json'} has no selections: nothing to evaluate")
    out = [NamedIntervention("baseline", BASELINE, {"kind": "baseline"})]
    ablations = {}
    for s in selection["selections"]:
        direction, meta = load_direction((root / s["direction_file"]), fingerprint, d_model)
        name = lam_name(s["lam"])
        ablations[float(s["lam"])] = Ablation(direction, name)
        out.append(NamedIntervention(name, ablations[float(s["lam"])],
                                     {"kind": "ablate_false", "lam": float(s["lam"]), "pos": int(s["pos"]),
                                      "layer": int(s["layer"]), "file": s["direction_file"]}))
    reference = max(selection["selections"], key=lambda s: float(s["lam"]))
    with safe_open(str(root / reference["direction_file"]), "pt") as f:
        raw_false, raw_true = f.get_tensor("raw_false"), f.get_tensor("raw_true")
    cell = {"pos": int(reference["pos"]), "layer": int(reference["layer"])}
    out.append(NamedIntervention("ablate_false_raw", Ablation(raw_false, "ablate_false_raw"),
                                 {"kind": "ablate_false_raw", **cell, "file": reference["direction_file"]}))
    true_file = (root / "directions/true.safetensors")
    if true_file.exists():
        _, meta = load_direction(true_file, fingerprint, d_model)
        with safe_open(str(true_file), "pt") as f:
            r = f.get_tensor("raw_true")
        r_cell, r_source = {"pos": int(meta["pos"]), "layer": int(meta["layer"])}, "Arditi selection (true.safetensors)"
    else:
        r, r_cell, r_source = raw_true, cell, "r at the reference cell (the Arditi rule selected no true direction)"
    out.append(NamedIntervention("ablate_true", Ablation(r, "ablate_true"),
                                 {"kind": "ablate_true", **r_cell, "source": r_source}))
    for alpha in alphas:
        add = Addition(r, r_cell["layer"], float(alpha), alpha_name(alpha))
        out.append(NamedIntervention(alpha_name(alpha), add,
                                     {"kind": "actadd_true", "alpha": float(alpha), **r_cell, "source": r_source}))
        for lam, ablation in ablations.items():
            out.append(NamedIntervention(f"{lam_name(lam)}+{alpha_name(alpha)}", Combined((ablation, add)),
                                         {"kind": "ablate_false+actadd_true", "lam": lam, "alpha": float(alpha)}))
    return out


def choose(items: list[NamedIntervention], names: tuple[str, ...] | None) -> list[NamedIntervention]:
    if names is None:
        return items
    known = {i.name: i for i in items}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise WorkbenchError(f"unknown intervention(s) {', '.join(unknown)}; this run defines: {', '.join(known)}")
    return [known[n] for n in names]
