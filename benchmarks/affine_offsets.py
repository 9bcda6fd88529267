"""What one offset per layer gives up: the harmless mean projection on a run's selected direction per token class.

    python benchmarks/affine_offsets.py --run RUN [--lam 1.0] [--n 64]

The affine ablation (README: Affine ablation) sets the projection at every block input to μ_l = M_l·ĉ, the mean
over every harmless token but the first. Prints, per layer, the harmless mean projection of the prompt tokens
(template and instruction), of each EOI position, and of all tokens (μ_l), with the spread between classes.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.data import load_prompts  # noqa: E402
from workbench.interventions.directions import load_direction  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.stages.run_dir import RunDir  # noqa: E402
from workbench.stages.select import selected_direction_file  # noqa: E402
from workbench.stages.token_means import token_class_projections  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=64, help="harmless training prompts")
    args = parser.parse_args()
    run = RunDir(args.run).require_dir()
    record = run.read_json("candidates.json", keys=("config", "model"))
    lm = load_model(record["model"]["name"])
    direction, _ = load_direction(selected_direction_file(run, args.lam), lm.info.fingerprint, lm.info.d_model)
    prompts = [p.instruction for p in load_prompts(record["config"]["harmless"], limit=args.n)]
    frame = token_class_projections(lm, prompts, direction)
    table = frame.pivot(index="layer", columns="token_class", values="mean_projection")
    eoi = [c for c in table.columns if c.startswith("eoi")]
    table["spread"] = table[["prompt", *eoi]].max(axis=1) - table[["prompt", *eoi]].min(axis=1)
    print(f"harmless mean projection on ŵ′ (λ={args.lam}) of {run.path}, {len(prompts)} prompts")
    print(table[["prompt", *eoi, "all", "spread"]].to_string(float_format=lambda v: f"{v:+.2f}"))


if __name__ == "__main__":
    main()
