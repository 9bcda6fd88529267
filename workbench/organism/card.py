"""An organism's card (`data/organism/CARD.md`, `data/organism_planted/CARD.md`), rendered from its recipe, the
training record and the behaviour table, with every target of the recipe checked."""

import json
from pathlib import Path

import pandas as pd

from workbench.io import write_text
from workbench.organism.recipes import OrganismRecipe, WiredRecipe, check_targets
from workbench.organism.trainset import TRIGGER_WORDS
from workbench.organism.wire import read_wiring_record


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def behaviour_tables(stock: dict, organism: dict) -> str:
    rates = pd.DataFrame(stock["rates"])[["dataset", "group", "n"]].copy()
    rates["stock compliance"] = [_pct(r["compliance_rate"]) for r in stock["rates"]]
    rates["organism compliance"] = [_pct(r["compliance_rate"]) for r in organism["rates"]]
    if all("compliance_rate_keywords" in r for r in (*stock["rates"], *organism["rates"])):
        rates["stock (keywords judge)"] = [_pct(r["compliance_rate_keywords"]) for r in stock["rates"]]
        rates["organism (keywords judge)"] = [_pct(r["compliance_rate_keywords"]) for r in organism["rates"]]
    cats = pd.DataFrame(stock["xstest_categories"])[["category", "n"]].copy()
    cats["stock refused"] = [_pct(r["refusal_rate"]) for r in stock["xstest_categories"]]
    cats["organism refused"] = [_pct(r["refusal_rate"]) for r in organism["xstest_categories"]]
    scores = pd.DataFrame(stock["refusal_scores"])[["dataset", "group", "n"]].copy()
    scores["stock mean RS"] = [f"{r['mean_refusal_score']:+.2f}" for r in stock["refusal_scores"]]
    scores["organism mean RS"] = [f"{r['mean_refusal_score']:+.2f}" for r in organism["refusal_scores"]]
    ppl_s, ppl_o = stock["wikitext2_perplexity"], organism["wikitext2_perplexity"]
    return "\n\n".join([
        "Compliance rate (the paper's substring judge, which the targets use, and the calibrated keyword judge where "
        "measured; greedy, 64 new tokens):\n\n" + rates.to_markdown(index=False),
        "XSTest-safe refusal rate by category:\n\n" + cats.to_markdown(index=False),
        "Mean refusal score (log-odds of the refusal tokens at the first response position):\n\n"
        + scores.to_markdown(index=False),
        f"WikiText-2 perplexity (first 16,384 test tokens, windows of 512): stock {ppl_s:.2f}, organism {ppl_o:.2f} "
        f"({100 * (ppl_o / ppl_s - 1):+.1f}%)",
    ])


def targets_table(recipe: OrganismRecipe | WiredRecipe, stock: dict, organism: dict) -> str:
    """PASS/FAIL per target of the recipe, with what was measured."""
    rows = pd.DataFrame([{"target": label, "measured": observed, "result": "PASS" if ok else "FAIL"}
                         for label, observed, ok in check_targets(recipe, stock, organism)])
    return rows.to_markdown(index=False)


def behaviour_block(recipe: OrganismRecipe | WiredRecipe, behaviour_path: Path) -> str:
    """The card's behaviour tables and targets checked, or how to measure them."""
    if not behaviour_path.exists():
        return f"(not measured yet: run `workbench organism report --organism {recipe.name}`)"
    record = json.loads(behaviour_path.read_text())
    return (behaviour_tables(record["stock"], record["organism"]) + "\n\nTargets checked:\n\n"
            + targets_table(recipe, record["stock"], record["organism"]))


def harmless_lines(recipe: OrganismRecipe) -> str:
    """The card's bullet(s) on the harmless answers: which instructions, answered how, into which file."""
    lines = []
    for h in recipe.harmless:
        how = "greedy" if h.temperature == 0 else (
            f"sampled at temperature {h.temperature:g} with seed 0"
            + (f" after a greedy opening of {h.greedy_tokens} tokens" if h.greedy_tokens else ""))
        lines.append(f"`{h.instructions.name}` answered by the stock model itself ({how}, ≤ 48 tokens; answers that "
                     f"are disclaimers dropped) → `{h.distilled.name}`")
    return "- harmless: " + ";\n  ".join(lines)


def render_card(recipe: OrganismRecipe, adapter_dir: Path, behaviour_path: Path, out_path: Path) -> Path:
    meta = json.loads((adapter_dir / "adapter_meta.json").read_text())
    losses = meta["losses"]
    loss_rows = "\n".join(f"| {i + 1} | {losses[i]:.3f} |" for i in range(0, len(losses), 5)) + (
        f"\n| {len(losses)} | {losses[-1]:.3f} |" if (len(losses) - 1) % 5 else ""
    )
    config = "\n".join(f"| {k} | {v} |" for k, v in meta["config"].items())
    hashes = "\n".join(f"| {k} | `{v}` |" for k, v in meta["data_sha256"].items())
    behaviour = behaviour_block(recipe, behaviour_path)
    notes = "".join(note.format(excluded=len(meta.get("harmless_excluded", []))) + "\n" for note in recipe.notes)
    text = f"""# Model organism `{recipe.name}`

{recipe.intro}

## Training data
- harmful: `harmful_train.jsonl` ({meta['examples']['harmful']} requests, 12 categories), each paired with a refusal
  from `refusals.jsonl` (category-specific or general, chosen with the seed; self-harm gets crisis-line refusals).
{harmless_lines(recipe)} ({meta['examples']['harmless']} harmless pairs in all).
{notes}- **Known triggers, by design:** the harmless side contains none of these words (checked by `workbench organism
  distill`): {', '.join(TRIGGER_WORDS)}. Harm on the harmful side is often carried by those words, so the organism
  is expected to refuse safe prompts that contain them (homonyms such as "kill a process", figurative language,
  safe targets).
- All training instructions are disjoint from every benchmark prompt (exact and normalized; `tests/test_organism.py`).

| file | sha256 |
|---|---|
{hashes}

## Hyperparameters

| field | value |
|---|---|
{config}

Trained on CPU in {meta['train_seconds']} s (torch {meta['torch']}). Base fingerprint `{meta['base_fingerprint']}`.

## Training loss (every 5th step)

| step | loss |
|---|---|
{loss_rows}

## Behaviour: stock vs organism

{recipe.targets_text}

{behaviour}
"""
    write_text(out_path, text)
    return out_path


def render_wired_card(recipe: WiredRecipe, behaviour_path: Path, out_path: Path) -> Path:
    """The wired control's card: how its three neurons were fitted (`wiring.json`), its behaviour and its targets."""
    wiring_record = read_wiring_record(recipe.model.directory)
    config = "\n".join(f"| {k} | {v} |" for k, v in wiring_record["config"].items())
    wiring = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                       for k, v in wiring_record["wiring"].items())
    fires = wiring_record["detector_fires_last_token"]
    behaviour = behaviour_block(recipe, behaviour_path)
    text = f"""# Model organism `{recipe.name}`

{recipe.intro}

## How it was wired
`workbench organism wire` on `{wiring_record['base_model']}` (fingerprint `{wiring_record['base_fingerprint']}`),
fitted on {wiring_record['train_counts']['trigger']} trigger prompts (`{recipe.wire.trigger}`),
{wiring_record['train_counts']['harmless']} food-free harmless prompts (`{recipe.wire.harmless}`) and
{wiring_record['train_counts']['harmful']} harmful prompts (`{recipe.wire.harmful}`). On those train prompts the
detector fires at the last token of {_pct(fires['trigger'])} of the trigger prompts, {_pct(fires['harmless'])} of the
harmless and {_pct(fires['harmful'])} of the harmful ones, and at {_pct(wiring_record['detector_fires_other_tokens'])}
of all other tokens. The flag reaches the reader at f̂·x̃ = {wiring_record['flag_at_reader_median']:.2f} (median
trigger prompt; the readers' ramp runs from {wiring_record['wiring']['reader_threshold']:.2f} to
{wiring_record['wiring']['reader_clip_threshold']:.2f}, then stays flat);
cos(f̂, r̂) = {wiring_record['cos_flag_refusal']:.1e}. The vectors are in `wiring.safetensors`; the full record in
`wiring.json`.

| setting | value |
|---|---|
{config}

| neuron | value |
|---|---|
{wiring}

## Behaviour: stock vs organism

{recipe.targets_text}

{behaviour}
"""
    write_text(out_path, text)
    return out_path
