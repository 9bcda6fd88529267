"""The cost model of docs/SCALING.md, checked against a finished run: forward work per stage and its measured time.

    python benchmarks/cost_model.py --run runs/default [--run runs/qwen1.5b ...]

For each run directory (its `candidates.json`, `sweep.csv`/`sweep.json`, `interventions.json`, completion sidecars,
`capability.csv` and the stage times in `run.json`) prints, per stage, the work in *prompt rows* (one prompt through
the model once; a sweep row shares the template prefix's KV cache and unembeds the last position only), the wall
time from `run.json`, and seconds per row:

- extract: every training prompt once (the filter reads the same pass): Σ prompts of the three sets;
- sweep: validation baselines (every validation prompt before the filter) + the screen (each screened or fully
  scored candidate × (min(n_screen, target set) + n_screen harmless)) + full scores (each fully scored candidate ×
  its sets: w′ pseudo-harmful + harmless for KL + harmful (when its KL is within the bound), r harmful + harmless +
  harmless again for steering);
- evaluate: prompts × (dataset, intervention) pairs, each a prefill then `max_new_tokens` decoding steps (reported
  as prompt rows and as generated tokens);
- capability: WikiText-2 windows × interventions (and multiple-choice questions where run).
The ratio of two runs' seconds per row at the same stage is what a bigger model costs per row on the same machine.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from workbench.stages.run_dir import RunDir, stage_times


def extract_rows(run: Path) -> int:
    counts = json.loads((run / "candidates.json").read_text(encoding="utf-8"))["prompt_counts"]
    return sum(int(c["total"]) for c in counts.values())


def sweep_rows(run: Path) -> dict[str, int]:
    from workbench.data import load_prompts

    record = json.loads((run / "sweep.json").read_text(encoding="utf-8"))
    config, kept = record["config"], {k: int(v["kept"]) for k, v in record["validation"].items()}
    totals = {key: len(load_prompts(config[f"{key}_val"], limit=config.get("n_val"))) for key in kept}
    sweep = pd.read_csv(run / "sweep.csv")
    n = int(config.get("n_screen", 6))
    bound = float(config.get("rule", {}).get("max_ablation_kl", 0.2))
    screened = sweep[sweep.stage.isin(["screened", "full"])]
    screen = 0
    if config.get("mode", "fast") == "fast":
        for vector, rows in screened.groupby("vector"):
            target = kept["pseudo_harmful" if vector == "w'" else "harmful"]
            screen += len(rows) * (min(n, target) + min(n, kept["harmless"]))
    full = 0
    for row in sweep[sweep.stage == "full"].itertuples():
        if row.vector == "w'":
            full += kept["pseudo_harmful"] + kept["harmless"] + (kept["harmful"] if row.ablation_kl <= bound else 0)
        else:
            full += kept["harmful"] + 2 * kept["harmless"]
    return {"baselines": sum(totals.values()), "screen": screen, "full": full,
            "candidates": int((sweep.stage != "skipped").sum()), "fully_scored": int((sweep.stage == "full").sum())}


def evaluate_work(run: Path) -> tuple[int, int]:
    """(prompt rows, generated-token budget) of the evaluation's completion files."""
    rows = tokens = 0
    for meta in (run / "completions").glob("*/*.meta.json"):
        settings = json.loads(meta.read_text(encoding="utf-8"))
        rows += int(settings.get("n", 0))
        tokens += int(settings.get("n", 0)) * int(settings.get("max_new_tokens", 0))
    return rows, tokens


def capability_rows(run: Path) -> int | None:
    """WikiText-2 windows × interventions, plus multiple-choice questions × interventions (one row each)."""
    meta = run / "capability.meta.json"
    if not meta.exists():
        return None
    rows = 0
    for key, settings in json.loads(meta.read_text(encoding="utf-8")).items():
        task = key.split("/")[0]
        if task == "wikitext2":
            rows += -(-int(settings["perplexity_tokens"]) // int(settings.get("window", 512)))
        elif task == "arc_challenge":
            rows += int(settings.get("n_arc") or 0)
        elif task == "mmlu":
            rows += int(settings.get("n_mmlu") or 0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, help="a finished run directory (repeatable)")
    args = parser.parse_args()
    table = []
    for path in map(Path, args.run):
        seconds = stage_times(RunDir(path))
        model = json.loads((path / "config.json").read_text(encoding="utf-8"))["model"]["name"]
        work = {"extract": extract_rows(path)}
        if (path / "sweep.json").exists():
            sweep = sweep_rows(path)
            work["sweep"] = sweep["baselines"] + sweep["screen"] + sweep["full"]
            print(f"{model}: sweep {sweep['candidates']} candidates scored, {sweep['fully_scored']} fully "
                  f"({sweep['fully_scored'] / max(1, sweep['candidates']):.0%}); rows: baselines {sweep['baselines']}, "
                  f"screen {sweep['screen']}, full {sweep['full']}")
        if (path / "completions").exists():
            rows, tokens = evaluate_work(path)
            work["evaluate"] = rows
            print(f"{model}: evaluate {rows} prompts, {tokens} new-token budget")
        if (rows := capability_rows(path)) is not None:
            work["capability"] = rows
        for stage, rows in work.items():
            wall = seconds.get(stage)
            table.append({"model": model, "stage": stage, "rows": rows, "seconds": wall,
                          "s_per_row": None if wall is None or not rows else round(wall / rows, 4)})
    frame = pd.DataFrame(table)
    print(frame.to_string(index=False))
    models = list(dict.fromkeys(frame.model))
    if len(models) == 2:  # the second run given against the first
        wide = frame.pivot(index="stage", columns="model", values="s_per_row")
        a, b = models
        print(f"seconds per row, {b} / {a}:")
        print((wide[b] / wide[a]).dropna().round(2).to_string())


if __name__ == "__main__":
    main()
