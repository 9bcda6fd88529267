"""The named interventions of a run: what `evaluate`, `capability` and the figures call each intervention.

From a selection (`selection.json` and its `directions/`):
- `baseline`: nothing;
- `ablate_w_lam<λ>`: ablate the selected w' at each selected λ;
- `ablate_w_raw`: ablate raw w at the reference cell (the selection with the largest λ);
- `ablate_r`: ablate r, the Arditi true-refusal selection if the rule found one, else r at the reference cell;
- `actadd_r_a<α>`: add α·r (raw) at r's layer, and `ablate_w_lam<λ>+actadd_r_a<α>` for every λ, α;
- with a gate (`directions/gate.safetensors`, written by `workbench gate`): `gated_ablate_w_lam<λ>`, the w′ it
  gates ablated only for prompts the gate reads as not harmful (`interventions.gate.Gated`; no weight form);
- with `ablation` including "harmless_mean": the affine variant (`hooks.Ablation.offsets`) of each of the three
  ablations, named with the suffix `_affine` (`ablate_w_lam1.0_affine`, `ablate_w_raw_affine`,
  `ablate_r_affine`); offsets from the direction file (`offsets_harmless_mean`) or the run's token means.
  Without "zero", the zero ablations (and their combinations with additions) are left out.
`parse_name` inverts the names (`ablation_of` says zero or affine); `signature` hashes an intervention's content
(offsets included) so results are reused only if equal.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.interventions.directions import OFFSETS_KEY, load_direction, read_direction_file
from workbench.interventions.gate import GATE_FILE, Gated, load_gate
from workbench.interventions.hooks import ABLATION_TARGETS, BASELINE, Ablation, Addition, Combined, Intervention
from workbench.method.refusal_math import affine_offsets
from workbench.method.vectors import GATED_W_PRIME, W_PRIME, R, W, combined

GATED_PREFIX = "gated_"
"""Name prefix of a gated intervention in the catalogue (`gated_ablate_w_lam1.0`)."""
AFFINE_SUFFIX = "_affine"
"""Name suffix of an affine ablation (to the harmless mean) in the catalogue."""


AnyIntervention = Intervention | Gated
"""What a catalogue entry applies: a hook intervention, or one gated per prompt."""


@dataclass(frozen=True, eq=False)
class NamedIntervention:
    name: str
    intervention: AnyIntervention
    description: dict = field(default_factory=dict)


def lam_name(lam: float) -> str:
    return f"ablate_w_lam{float(lam)}"


def gated_name(lam: float) -> str:
    return GATED_PREFIX + lam_name(lam)


def alpha_name(alpha: float) -> str:
    return f"actadd_r_a{float(alpha)}"


def parse_name(name: str) -> tuple[float | None, float | None]:
    """(λ of an ablated w′, α of an added r) named by an intervention (None where absent); inverse of the above."""
    lam = alpha = None
    for part in name.split("+"):
        if part.startswith("ablate_w_lam"):
            lam = float(part.removeprefix("ablate_w_lam").removesuffix(AFFINE_SUFFIX))
        elif part.startswith("actadd_r_a"):
            alpha = float(part.removeprefix("actadd_r_a"))
    return lam, alpha


def describe_name(name: str) -> dict:
    """The explicit columns of a named intervention: `vector` (a label of `workbench.method.vectors`: none, w', w, r,
    w'+r, gated w'), `lam`, `alpha` (None where absent) and `ablation` (zero, harmless_mean, or None when nothing is
    ablated)."""
    if name.startswith(GATED_PREFIX):
        return {**describe_name(name.removeprefix(GATED_PREFIX)), "vector": GATED_W_PRIME}
    parts = [p.removesuffix(AFFINE_SUFFIX) for p in name.split("+")]
    vectors = []
    for part in parts:
        if part.startswith("ablate_w_lam"):
            vectors.append(W_PRIME)
        elif part == "ablate_w_raw":
            vectors.append(W)
        elif part == "ablate_r" or part.startswith("actadd_r_a"):
            vectors.append(R)
    lam, alpha = parse_name(name)
    ablates = any(p.startswith("ablate_") for p in parts)
    return {"vector": combined(vectors), "lam": lam, "alpha": alpha,
            "ablation": ablation_of(name) if ablates else None}


def ablation_of(name: str) -> str:
    """What the ablations of a named intervention set the projection to: "harmless_mean" for `..._affine`, else
    "zero"."""
    return "harmless_mean" if any(p.endswith(AFFINE_SUFFIX) for p in name.split("+")) else "zero"


def signature(intervention: AnyIntervention) -> str:
    """A content hash of an intervention (directions, offsets, layers, coefficients): completions are reused only if
    equal."""
    digest = hashlib.sha256()
    if isinstance(intervention, Gated):
        gate = intervention.gate
        digest.update(f"gated:{gate.layer}:{gate.pos}:{gate.threshold!r}".encode())
        digest.update(gate.probe.detach().float().cpu().numpy().tobytes())
    for part in intervention.parts:
        if isinstance(part, Ablation):
            digest.update(b"ablate")
            digest.update(part.direction.detach().float().cpu().numpy().tobytes())
            if part.strength != 1.0:
                digest.update(f"strength:{part.strength!r}".encode())
            if part.offsets is not None:
                digest.update(b"offsets")
                digest.update(part.offsets.detach().float().cpu().numpy().tobytes())
        else:
            digest.update(f"add:{part.layer}:{part.coeff!r}".encode())
            digest.update(part.vector.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _affine(item: NamedIntervention, file: Path | None,
            token_means: Float[Tensor, "n_layer d_model"] | None) -> NamedIntervention:
    """The affine variant of a named ablation: offsets from its direction file when it holds them, else M·ĉ from the
    run's token means."""
    ablation = item.intervention
    assert isinstance(ablation, Ablation)
    offsets = None
    if file is not None:
        from safetensors import safe_open

        read_direction_file(file, ())  # missing or damaged: the checked error
        with safe_open(str(file), "pt") as f:
            offsets = f.get_tensor(OFFSETS_KEY).float() if OFFSETS_KEY in set(f.keys()) else None
    if offsets is None:
        if token_means is None:
            raise WorkbenchError(f"no affine-ablation offsets for {item.name} (its direction file has none and no "
                                 "token means were given): run `workbench evaluate --ablation harmless_mean`, which "
                                 "computes the run's token means")
        offsets = affine_offsets(token_means, ablation.direction.float())
    name = item.name + AFFINE_SUFFIX
    return NamedIntervention(name, Ablation(ablation.direction, name, offsets),
                             {**item.description, "ablation": "harmless_mean"})


def build_interventions(
    selection: dict, root: Path, fingerprint: str, d_model: int, alphas: tuple[float, ...],
    ablation: tuple[str, ...] = ("zero",), token_means: Float[Tensor, "n_layer d_model"] | None = None,
) -> list[NamedIntervention]:
    """Every intervention a selection defines (see the module docstring); `root` is the directory its
    `direction_file` paths are relative to (the run directory). `ablation`: "zero" gives the ablations as before,
    "harmless_mean" their affine variants (`_affine`), with offsets from the direction files or `token_means`."""
    unknown = [a for a in ablation if a not in ABLATION_TARGETS]
    if unknown or not ablation:
        raise WorkbenchError(f"unknown ablation {', '.join(unknown) or '(none given)'}: use "
                             f"{' and/or '.join(ABLATION_TARGETS)}")
    check_selection(selection, root)
    out = [NamedIntervention("baseline", BASELINE, {"kind": "baseline"})]
    ablations = {}
    for s in selection["selections"]:
        direction, meta = load_direction((root / s["direction_file"]), fingerprint, d_model)
        name = lam_name(s["lam"])
        ablations[float(s["lam"])] = Ablation(direction, name)
        out.append(NamedIntervention(name, ablations[float(s["lam"])],
                                     {"kind": "ablate_w", "lam": float(s["lam"]), "pos": int(s["pos"]),
                                      "layer": int(s["layer"]), "file": s["direction_file"]}))
    reference = max(selection["selections"], key=lambda s: float(s["lam"]))
    raw = read_direction_file(root / reference["direction_file"], ("raw_w", "raw_r"))[0]
    raw_w, raw_r = raw["raw_w"], raw["raw_r"]
    cell = {"pos": int(reference["pos"]), "layer": int(reference["layer"])}
    out.append(NamedIntervention("ablate_w_raw", Ablation(raw_w, "ablate_w_raw"),
                                 {"kind": "ablate_w_raw", **cell, "file": reference["direction_file"]}))
    r_file = (root / "directions/r.safetensors")
    if r_file.exists():
        _, meta = load_direction(r_file, fingerprint, d_model)
        r = read_direction_file(r_file, ("raw_r",))[0]["raw_r"]
        if not all(str(meta.get(k, "")).lstrip("-").isdigit() for k in ("pos", "layer")):
            raise WorkbenchError(f"direction file {r_file} has no integer 'pos' and 'layer' in its metadata: "
                                 f"re-run `workbench select --run {root}` to rewrite it")
        r_cell, r_source = {"pos": int(meta["pos"]), "layer": int(meta["layer"])}, "Arditi selection (r.safetensors)"
    else:
        r, r_cell, r_source = raw_r, cell, "r at the reference cell (the Arditi rule selected no true direction)"
    out.append(NamedIntervention("ablate_r", Ablation(r, "ablate_r"),
                                 {"kind": "ablate_r", **r_cell, "source": r_source}))
    for alpha in alphas:
        add = Addition(r, r_cell["layer"], float(alpha), alpha_name(alpha))
        out.append(NamedIntervention(alpha_name(alpha), add,
                                     {"kind": "actadd_r", "alpha": float(alpha), **r_cell, "source": r_source}))
        for lam, ablated in ablations.items():
            out.append(NamedIntervention(f"{lam_name(lam)}+{alpha_name(alpha)}", Combined((ablated, add)),
                                         {"kind": "ablate_w+actadd_r", "lam": lam, "alpha": float(alpha)}))
    gate_file = root / GATE_FILE
    if gate_file.exists():
        gate = load_gate(gate_file)
        gate.check_model(fingerprint, d_model, where=f"gate {gate_file}")
        lam = float(gate.meta.get("gates_lam", max(ablations)))
        if lam not in ablations:
            raise WorkbenchError(f"gate {gate_file} gates w′ at λ = {lam}, which this selection does not hold: re-run "
                                 f"`workbench gate --run {root}`")
        out.append(NamedIntervention(gated_name(lam), Gated(ablations[lam], gate, gated_name(lam)),
                                     {"kind": "gated_ablate_w", "lam": lam, "gate_pos": gate.pos,
                                      "gate_layer": gate.layer, "gate_threshold": gate.threshold,
                                      "gate_bound": gate.bound}))
    if "harmless_mean" in ablation:
        files = {lam_name(s["lam"]): root / s["direction_file"] for s in selection["selections"]}
        files["ablate_r"] = r_file if r_file.exists() else None
        affine = [_affine(item, files.get(item.name), token_means) for item in out
                  if isinstance(item.intervention, Ablation)]
        if "zero" not in ablation:  # no zero ablations, alone or combined
            out = [item for item in out if not any(isinstance(p, Ablation) for p in item.intervention.parts)]
        out += affine
    return out


SELECTION_KEYS = ("lam", "pos", "layer", "direction_file")
"""What every entry of `selection.json`'s `selections` holds (among the sweep's scores)."""


def check_selection(selection: dict, root: Path) -> None:
    """Refuse a `selection.json` whose selections are missing or malformed (a one-line error naming the file)."""
    path, hint = root / "selection.json", f"re-run `workbench select --run {root}` to rewrite it"
    entries = selection.get("selections")
    if not isinstance(entries, list):
        raise WorkbenchError(f"{path} is corrupted ('selections' is not a list): {hint}")
    if not entries:
        raise WorkbenchError(f"{path} has no selections, so there is nothing to evaluate: {hint}")
    for i, entry in enumerate(entries):
        missing = [k for k in SELECTION_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise WorkbenchError(f"{path} is corrupted (selection {i} has no {', '.join(map(repr, missing))}): {hint}")


def choose(items: list[NamedIntervention], names: tuple[str, ...] | None) -> list[NamedIntervention]:
    if names is None:
        return items
    known = {i.name: i for i in items}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise WorkbenchError(f"unknown intervention(s) {', '.join(unknown)}; this run defines: {', '.join(known)}")
    return [known[n] for n in names]
