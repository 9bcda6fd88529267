"""What one offset per layer gives up: the harmless mean projection on a run's selected direction per token class,
and (`--behaviour`) what ablating with one offset per layer vs one per layer and token class does.

    python benchmarks/affine_offsets.py --run RUN [--lam 1.0] [--n 64] [--behaviour [--n-val 32]]

The affine ablation (docs/interventions.md) sets the projection at every block input to μ_l = M_l·ĉ, the mean
over every harmless token but the first. Prints, per layer, the harmless mean projection of the prompt tokens
(template and instruction), of each EOI position, and of all tokens (μ_l), with the spread between classes.

`--behaviour` compares four ways of treating ĉ on the run's validation sets (its sweep config): none, zero-ablation,
affine with μ_l (`Ablation(offsets=...)`, exportable as a bias) and affine per token class
(`hooks.token_class_ablation_hooks`: prompt tokens, each EOI position, generated tokens = μ_l; hooks only). For
each, on the first N prompts of each set (unfiltered): mean refusal score, mean KL on harmless val against no
intervention, and greedy compliance (substring judge, 48 new tokens).
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from workbench.data import load_prompts  # noqa: E402
from workbench.eval.generation import hooked_generate  # noqa: E402
from workbench.eval.judge import SubstringJudge  # noqa: E402
from workbench.eval.scoring import last_position_logits  # noqa: E402
from workbench.interventions.directions import load_direction  # noqa: E402
from workbench.interventions.hooks import ablation_hooks, token_class_ablation_hooks  # noqa: E402
from workbench.method.refusal_math import kl_divergence, refusal_score  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.stages.run_dir import RunDir  # noqa: E402
from workbench.stages.select import selected_direction_file  # noqa: E402
from workbench.stages.token_means import token_class_projections  # noqa: E402


def behaviour(lm, run: RunDir, direction: torch.Tensor, table: pd.DataFrame, eoi: list[str], n_val: int
              ) -> pd.DataFrame:
    sweep = run.read_json("sweep.json", keys=("config",))["config"]
    sets = {"pseudo_harmful_val": sweep["pseudo_harmful_val"], "harmful_val": sweep["harmful_val"],
            "harmless_val": sweep["harmless_val"]}
    prompts = {k: [p.instruction for p in load_prompts(name, limit=n_val)] for k, name in sets.items()}
    mu = torch.tensor(table["all"].to_numpy(), dtype=torch.float32)
    variants = {
        "none": [],
        "zero": ablation_hooks(direction, lm.info.n_layers),
        "affine (per layer)": ablation_hooks(direction, lm.info.n_layers, mu),
        "affine (per token class)": token_class_ablation_hooks(
            direction, torch.tensor(table["prompt"].to_numpy(), dtype=torch.float32),
            torch.tensor(table[eoi].to_numpy().T.copy(), dtype=torch.float32), mu),
    }
    judge = SubstringJudge()
    base_harmless = last_position_logits(lm, prompts["harmless_val"])  # KL reference: no intervention
    rows = []
    for name, hooks in variants.items():
        row = {"variant": name}
        for key, instructions in prompts.items():
            logits = last_position_logits(lm, instructions, fwd_hooks=hooks)
            row[f"rs_{key}"] = float(refusal_score(logits, lm.info.refusal_tokens).mean())
            if key == "harmless_val":
                row["kl_harmless"] = float(kl_divergence(base_harmless, logits).mean())
            with lm.model.hooks(fwd_hooks=hooks):
                answers = hooked_generate(lm, instructions, 48, 32, desc=f"{name}: {key}")
            row[f"comply_{key}"] = 1 - sum(judge(answers)) / len(answers)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=64, help="harmless training prompts")
    parser.add_argument("--behaviour", action="store_true", help="also compare the ablation variants' behaviour")
    parser.add_argument("--n-val", type=int, default=32, help="validation prompts per set (--behaviour)")
    args = parser.parse_args()
    run = RunDir(args.run).require_dir()
    record = run.read_json("candidates.json", keys=("config", "model"))
    lm = load_model(record["model"]["name"])
    direction, _ = load_direction(selected_direction_file(run, args.lam), lm.info.fingerprint, lm.info.d_model)
    prompts = [p.instruction for p in load_prompts(record["config"]["harmless"], limit=args.n)]
    frame = token_class_projections(lm, prompts, direction)
    table = frame.pivot(index="layer", columns="token_class", values="mean_projection")
    eoi = [f"eoi{p}" for p in lm.chat.eoi_positions]
    table["spread"] = table[["prompt", *eoi]].max(axis=1) - table[["prompt", *eoi]].min(axis=1)
    print(f"harmless mean projection on ŵ′ (λ={args.lam}) of {run.path}, {len(prompts)} prompts")
    print(table[["prompt", *eoi, "all", "spread"]].to_string(float_format=lambda v: f"{v:+.2f}"))
    if args.behaviour:
        result = behaviour(lm, run, direction, table, eoi, args.n_val)
        print(f"\nablation variants of ŵ′ (λ={args.lam}), {args.n_val} validation prompts per set "
              "(rs: mean refusal score; kl: harmless val vs none; comply: greedy compliance, 48 tokens)")
        print(result.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))


if __name__ == "__main__":
    main()
