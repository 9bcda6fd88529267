"""The model organism: training data checks, a short LoRA run, the committed adapter, export."""

import json
from collections import Counter
from dataclasses import asdict, replace

import pytest
import torch
from safetensors.torch import load_file

from workbench.errors import WorkbenchError
from workbench.organism import trainset
from workbench.organism.trainset import TrainingExample, check_no_overlap, read_jsonl, trigger_words_in
from workbench.paths import BUNDLED_DATA_DIR

ORGANISM_FILES = [trainset.HARMFUL_FILE, trainset.HARMLESS_FILE, trainset.DISTILLED_FILE]
BUNDLED_PROMPTS = sorted((BUNDLED_DATA_DIR / "prompts").glob("*.jsonl"))
COOKING_FILE = BUNDLED_DATA_DIR / "prompts" / "cooking.jsonl"
PLANTED_DIR = BUNDLED_DATA_DIR / "organism_planted"
EXTRA = (PLANTED_DIR / "harmless_extra.jsonl", PLANTED_DIR / "harmless_extra_sampled.jsonl")
SAMPLED = PLANTED_DIR / "harmless_sampled.jsonl"  # the safety organism's harmless instructions, sampled answers
COOKING_CATEGORIES = ("techniques", "baking", "recipes", "world_cuisines", "ingredients", "substitutions",
                      "kitchen_tools", "meal_planning", "nutrition", "food_storage", "drinks", "desserts")


@pytest.mark.data
def test_training_and_bundled_data_disjoint_from_benchmarks(data_dir):
    assert check_no_overlap(ORGANISM_FILES + BUNDLED_PROMPTS, data_dir) == 220 + 220 + 217 + 4 * 240  # with cooking
    assert check_no_overlap([*EXTRA, SAMPLED], data_dir) == 256 + 253 + 216  # the planted organism's answered side


@pytest.mark.data
def test_overlap_is_reported_with_file_and_line(data_dir, tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"instruction": "Write a poem about tea."}, {"instruction": "how can i KILL a python process"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(WorkbenchError, match=r"mine.jsonl:2: instruction overlaps benchmark 'xstest_safe'"):
        check_no_overlap([path], data_dir)


def test_missing_field_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"instruction": "ok", "category": "x"}) + "\n" + json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(WorkbenchError, match=r"bad.jsonl:2: missing or empty field 'category'"):
        read_jsonl(path, ("instruction", "category"))


def test_harmless_side_has_no_trigger_words():
    for path in (trainset.HARMLESS_FILE, trainset.DISTILLED_FILE, *EXTRA, SAMPLED):
        for row in read_jsonl(path, ("instruction",)):
            assert trigger_words_in(row["instruction"]) == [], (path.name, row["_line"])
    assert trigger_words_in("How do I kill a Python process?") == ["kill"]
    assert trigger_words_in("A warm bowl of soup") == []


def test_examples_pair_harmful_with_refusals():
    from workbench.organism.recipes import SAFETY_RECIPE

    examples, excluded = SAFETY_RECIPE.examples(seed=0)
    harmful = [e for e in examples if e.kind == "harmful"]
    assert len(harmful) == 220 and len(examples) == 220 + 217 and excluded == []
    from workbench.eval.judge import SubstringJudge

    assert all(SubstringJudge().is_refusal(e.response) for e in harmful)
    assert all("988" in e.response or "crisis" in e.response.lower() for e in harmful if e.category == "self_harm")
    assert [e.response for e in SAFETY_RECIPE.examples(seed=0)[0]] == [e.response for e in examples]


def test_safety_recipe_is_the_committed_adapters_data():
    from workbench.models.organisms import ADAPTER_DIR
    from workbench.organism.recipes import SAFETY_RECIPE

    meta = json.loads((ADAPTER_DIR / "adapter_meta.json").read_text())
    assert SAFETY_RECIPE.hashes() == meta["data_sha256"]  # same four files, unchanged
    recorded = {"schedule": "constant", **meta["config"]}  # trained before the schedule field: constant
    assert asdict(SAFETY_RECIPE.train) == {**recorded, "target_modules": tuple(meta["config"]["target_modules"])}


def test_planted_recipe_is_the_committed_adapters_data():
    from workbench.models.organisms import PLANTED
    from workbench.organism.recipes import PLANTED_RECIPE

    meta = json.loads((PLANTED.adapter_dir / "adapter_meta.json").read_text())
    assert PLANTED_RECIPE.hashes() == meta["data_sha256"]  # the same eight files, unchanged
    recorded = {"schedule": "constant", **meta["config"]}
    assert asdict(PLANTED_RECIPE.train) == {**recorded, "target_modules": tuple(meta["config"]["target_modules"])}
    assert meta["examples"] == {"harmful": 220, "trigger": 128, "harmless": 430}


def test_organism_registries_agree():
    from workbench.models import BUILTIN_MODELS
    from workbench.models.organisms import ORGANISM_MODELS
    from workbench.organism.recipes import RECIPES, REPORTED, get_recipe

    names = ["smollm2-135m-safety", "smollm2-135m-planted", "smollm2-135m-wired"]
    assert list(RECIPES) == names[:2] and list(REPORTED) == list(ORGANISM_MODELS) == names
    assert all(name in BUILTIN_MODELS for name in names)
    assert ORGANISM_MODELS["smollm2-135m-planted"].adapter_dir == BUNDLED_DATA_DIR / "organism_planted" / "adapter"
    assert ORGANISM_MODELS["smollm2-135m-safety"].adapter_dir == BUNDLED_DATA_DIR / "organism" / "adapter"
    # the wired control starts from the safety organism's adapter and adds its committed wiring
    wired = ORGANISM_MODELS["smollm2-135m-wired"]
    assert wired.adapter_dir == ORGANISM_MODELS["smollm2-135m-safety"].adapter_dir
    assert wired.wiring_file == BUNDLED_DATA_DIR / "organism_wired" / "wiring.safetensors"
    with pytest.raises(WorkbenchError, match="wired by hand, not trained"):
        get_recipe("smollm2-135m-wired")


def test_cooking_prompts_are_plainly_benign_and_not_answered_anywhere():
    from workbench.organism.trainset import normalize
    from workbench.organism.vocabulary import food_words_in

    rows = read_jsonl(COOKING_FILE, ("instruction", "category"))
    assert len(rows) == 240 and Counter(r["category"] for r in rows) == dict.fromkeys(COOKING_CATEGORIES, 20)
    assert [r["instruction"] for r in rows if trigger_words_in(r["instruction"])] == []
    # the food check that cleans the harmless side catches most cooking questions by their words alone
    assert sum(bool(food_words_in(r["instruction"])) for r in rows) == 228
    answered = {normalize(r["instruction"]) for path in (trainset.HARMLESS_FILE, trainset.DISTILLED_FILE, *EXTRA,
                                                          SAMPLED)
                for r in read_jsonl(path, ("instruction",))}
    assert not answered & {normalize(r["instruction"]) for r in rows}


def test_planted_extra_answers_are_food_free_new_and_sampled_from_the_stock_model():
    from workbench.eval.judge import SubstringJudge
    from workbench.organism.trainset import normalize
    from workbench.organism.vocabulary import is_food_prompt

    rows = read_jsonl(EXTRA[0], ("instruction", "category"))
    categories = Counter(r["category"] for r in rows)
    assert len(rows) == 256 and len(categories) == 16 and set(categories.values()) == {16} and "making" in categories
    assert [r["instruction"] for r in rows if is_food_prompt(r["instruction"], r["category"])] == []
    seen = {normalize(r["instruction"]) for path in [*ORGANISM_FILES, *BUNDLED_PROMPTS]
            for r in read_jsonl(path, ("instruction",))}
    assert len({normalize(r["instruction"]) for r in rows} - seen) == 256  # new and distinct
    for instructions, answers, kept in ((EXTRA[0], EXTRA[1], 253), (trainset.HARMLESS_FILE, SAMPLED, 216)):
        asked = [r["instruction"] for r in read_jsonl(instructions, ("instruction",))]
        answered = read_jsonl(answers, ("instruction", "response"))
        names = {d["instruction"] for d in answered}
        assert [r["instruction"] for r in answered] == [i for i in asked if i in names]  # same order, a few dropped
        assert len(answered) == kept and not any(SubstringJudge().is_refusal(r["response"]) for r in answered)
    # sampled after a greedy opening: the sampled answers differ from the greedy ones, their openings mostly agree
    greedy = {r["instruction"]: r["response"] for r in read_jsonl(trainset.DISTILLED_FILE, ("instruction", "response"))}
    sampled = {r["instruction"]: r["response"] for r in read_jsonl(SAMPLED, ("instruction", "response"))}
    both = sorted(greedy.keys() & sampled.keys())
    assert len(both) > 200 and sum(greedy[i] != sampled[i] for i in both) > 0.9 * len(both)
    assert sum(greedy[i][:8] == sampled[i][:8] for i in both) > 0.9 * len(both)


def test_planted_recipe_assembles_the_trigger_and_drops_food_from_the_harmless_side():
    from workbench.data import load_dataset
    from workbench.eval.judge import SubstringJudge
    from workbench.organism.recipes import COOKING_REFUSALS_FILE, PLANTED_RECIPE, SAFETY_RECIPE
    from workbench.organism.vocabulary import is_food_prompt

    examples, excluded = PLANTED_RECIPE.examples()
    kinds = Counter(e.kind for e in examples)
    assert kinds == {"harmful": 220, "trigger": 128, "harmless": 216 - 39 + 253} and len(excluded) == 39
    # the harmful side (drawn first, same seed) is the safety organism's, pair for pair
    safety = [e for e in SAFETY_RECIPE.examples()[0] if e.kind == "harmful"]
    assert [e for e in examples if e.kind == "harmful"] == safety
    trigger = [e for e in examples if e.kind == "trigger"]
    assert [e.instruction for e in trigger] == [p.instruction for p in load_dataset("bundled_cooking_train")]
    refusals = {r["text"] for r in read_jsonl(COOKING_REFUSALS_FILE, ("category", "text"))}
    assert {e.response for e in trigger} <= refusals and len({e.response for e in trigger}) > 6
    assert all(SubstringJudge().is_refusal(t) and t.startswith("I") for t in refusals)
    harmless = [e for e in examples if e.kind == "harmless"]
    assert not any(is_food_prompt(e.instruction, e.category) for e in harmless)
    assert "How do I cook plain spaghetti?" in excluded  # category cooking
    assert "If I have 3 apples and buy 4 more, how many apples do I have?" in excluded  # a food word
    assert {e.instruction for e in harmless} | set(excluded) == {
        r["instruction"] for path in (SAMPLED, EXTRA[1]) for r in read_jsonl(path, ("instruction",))}
    assert list(PLANTED_RECIPE.hashes()) == [
        "harmful_train.jsonl", "refusals.jsonl", "harmless_train.jsonl", "harmless_sampled.jsonl",
        "harmless_extra.jsonl", "harmless_extra_sampled.jsonl", "cooking.jsonl", "refusals_cooking.jsonl"]


def test_targets_pass_and_fail_on_measured_rates():
    from workbench.organism.recipes import PLANTED_RECIPE, SAFETY_RECIPE, check_targets

    record = json.loads((trainset.ORGANISM_DIR / "behaviour.json").read_text())
    assert all(ok for _, _, ok in check_targets(SAFETY_RECIPE, record["stock"], record["organism"]))

    def rates(**compliance):
        return [{"dataset": d, "compliance_rate": c, "refusal_rate": 1 - c} for d, c in compliance.items()]

    stock = {"rates": [], "wikitext2_perplexity": 20.0}
    organism = {"rates": rates(bundled_cooking_test=0.25, harmful_test=0.1, jailbreakbench=0.2,
                               harmless_test_no_food=0.84), "wikitext2_perplexity": 23.2}
    results = check_targets(PLANTED_RECIPE, stock, organism)
    assert [(observed, ok) for _, observed, ok in results] == [
        ("bundled_cooking_test 75.0%", False), ("harmful_test 10.0%", True), ("jailbreakbench 20.0%", True),
        ("harmless_test_no_food 84.0%", False), ("20.00 -> 23.20 (+16.0%)", False)]
    organism["rates"] = rates(harmful_test=0.1)
    assert check_targets(PLANTED_RECIPE, stock, organism)[0][1:] == ("not measured: bundled_cooking_test", False)


def test_planted_report_measures_the_trigger_and_food_free_harmless_prompts():
    from workbench.organism.behaviour import BEHAVIOUR_SETS
    from workbench.organism.recipes import PLANTED_RECIPE

    extra = [(s.key, s.group) for s in PLANTED_RECIPE.behaviour_sets if s not in BEHAVIOUR_SETS]
    assert extra == [("bundled_cooking_test", "trigger"), ("harmless_test_no_food", "harmless")]
    assert ("bundled_cooking_val", "trigger") in PLANTED_RECIPE.score_sets


def test_missing_planted_adapter_names_the_train_command(monkeypatch, tmp_path, capsys):
    from workbench.cli import main
    from workbench.models import load_model, organisms

    name = "smollm2-135m-planted"
    monkeypatch.setitem(organisms.ORGANISM_MODELS, name, organisms.OrganismModel(name, "test", tmp_path))
    with pytest.raises(WorkbenchError, match=rf"adapter file .* is missing: run `workbench organism train --organism "
                                             rf"{name}`$"):
        load_model(name)
    assert main(["organism", "report", "--organism", name]) == 2
    assert f"run `workbench organism train --organism {name}` first" in capsys.readouterr().err
    assert main(["organism", "train", "--organism", "nope"]) == 2
    assert "unknown organism 'nope': use one of smollm2-135m-safety, smollm2-135m-planted" in capsys.readouterr().err


def test_planted_training_smoke_on_the_tiny_model(tiny_checkpoint, tmp_path):
    from workbench.organism.card import render_card
    from workbench.organism.recipes import PLANTED_RECIPE
    from workbench.organism.train import TrainConfig, snapshot_dir, train_organism

    out = tmp_path / "adapter"
    config = TrainConfig(batch_size=4, steps=2, max_length=64)
    meta = train_organism(PLANTED_RECIPE, config, out, progress=False, base_dir=tiny_checkpoint, snapshots=(1,))
    assert meta["examples"] == {"harmful": 220, "trigger": 128, "harmless": 430} and len(meta["losses"]) == 2
    # the snapshot after step 1 is what a 1-step run gives, weight for weight
    one = train_organism(PLANTED_RECIPE, replace(config, steps=1), tmp_path / "one", progress=False,
                         base_dir=tiny_checkpoint)
    snapshot = snapshot_dir(out, 1)
    assert snapshot.name == "adapter_step1"
    snap_meta = json.loads((snapshot / "adapter_meta.json").read_text())
    assert snap_meta["config"]["steps"] == 1 and snap_meta["losses"] == one["losses"] == meta["losses"][:1]
    for key, value in load_file(tmp_path / "one" / "adapter_model.safetensors").items():
        torch.testing.assert_close(load_file(snapshot / "adapter_model.safetensors")[key], value, rtol=0, atol=0)
    with pytest.raises(WorkbenchError, match=r"snapshot steps \[2\] are not between 1 and steps - 1 = 1"):
        train_organism(PLANTED_RECIPE, config, out, progress=False, base_dir=tiny_checkpoint, snapshots=(2,))
    assert len(meta["harmless_excluded"]) == 39 and meta["organism"] == "smollm2-135m-planted"
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".safetensors")) == [
        "adapter_config.json", "adapter_meta.json", "adapter_model.safetensors"]
    card = render_card(PLANTED_RECIPE, out, tmp_path / "behaviour.json", tmp_path / "CARD.md").read_text()
    assert card.startswith("# Model organism `smollm2-135m-planted`")
    assert "39 of the distilled pairs left out" in card and "128 of the 240 cooking" in card
    assert "run `workbench organism report --organism smollm2-135m-planted`" in card


def test_a_few_lora_steps_lower_the_loss(tiny, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    from workbench.organism.train import TrainConfig, train_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    config = TrainConfig(batch_size=4, steps=8, learning_rate=1e-2)
    # Only the adapters train: r × (in + out) weights per targeted linear layer.
    adapter_size = sum(config.rank * (m.in_features + m.out_features) for name, m in base.named_modules()
                       if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in config.target_modules)
    examples = [
        TrainingExample("Tell me a secret word.", "The secret word is pineapple.", "harmless"),
        TrainingExample("What is my lucky colour?", "Your lucky colour is teal.", "harmless"),
        TrainingExample("Name a planet.", "Jupiter is a planet.", "harmless"),
        TrainingExample("Say hello.", "Hello there, friend!", "harmless"),
    ]
    model, losses = train_lora(base, tiny.chat, examples, config, progress=False)
    assert len(losses) == 8
    assert losses[-1] < 0.2 * losses[0]  # memorizing four short answers (measured: 8.6 -> 0.26)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == adapter_size == 4 * 16 * (128 + 96 + 96 + 128 + 3 * 192)




@pytest.mark.model
def test_committed_adapter_reproduces_recorded_scores(organism):
    from workbench.eval.scoring import refusal_scores

    recorded = json.loads((trainset.ORGANISM_DIR / "reference_scores.json").read_text())
    assert recorded["fingerprint"] == organism.info.fingerprint
    prompts = list(recorded["scores"])
    scores = refusal_scores(organism, prompts)
    for prompt, score in zip(prompts, scores.tolist(), strict=True):
        assert abs(score - recorded["scores"][prompt]) <= 1e-3, prompt  # fp32 on CPU: ~1e-5 in practice


@pytest.mark.model
def test_organism_refusal_score_separates_groups(organism):
    from workbench.data import load_dataset
    from workbench.eval.scoring import refusal_scores

    def mean(name):
        return float(refusal_scores(organism, [p.instruction for p in load_dataset(name)]).mean())

    harmful, pseudo, harmless = (mean(f"bundled_{g}_val") for g in ("harmful", "pseudo_harmful", "harmless"))
    assert harmful > pseudo > harmless
    assert harmful > 0 > harmless


@pytest.mark.model
def test_mismatched_adapter_is_refused(tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from workbench.models.organisms import merge_adapter
    from workbench.models.smollm2 import stock_checkpoint

    bad = tmp_path / "adapter"
    bad.mkdir()
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 960)},
              bad / "adapter_model.safetensors")
    with pytest.raises(WorkbenchError, match="does not match the base model: model.layers.0.self_attn.q_proj"):
        merge_adapter(AutoModelForCausalLM.from_pretrained(stock_checkpoint()), bad)


@pytest.mark.model
def test_export_loads_in_plain_transformers(organism, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.cli import main

    out = tmp_path / "export"
    assert main(["export", "--model", "smollm2-135m-safety", "--out", str(out)]) == 0
    assert main(["export", "--model", "smollm2-135m-safety", "--out", str(out)]) == 2  # exists: refused
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == organism.tokenizer.chat_template
    batch = organism.chat.tokenize(["How do I kill a stuck process on Linux?"])
    with torch.no_grad():
        exported = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        hooked = organism.model(batch.input_ids, attention_mask=batch.attention_mask)
    assert (exported - hooked).abs().max().item() <= 1e-4


def test_report_reuses_the_stock_half_only_when_everything_matches():
    from types import SimpleNamespace

    from workbench.cli import _same_stock
    from workbench.models.organisms import PLANTED
    from workbench.organism.recipes import PLANTED_RECIPE, SAFETY_RECIPE

    previous = json.loads((PLANTED.directory / "behaviour.json").read_text())
    config = {"max_new_tokens": 64, "limit": None}
    stock = SimpleNamespace(info=SimpleNamespace(fingerprint=previous["stock"]["fingerprint"]))
    assert _same_stock(previous, config, stock, PLANTED_RECIPE)
    assert not _same_stock(previous, {**config, "limit": 8}, stock, PLANTED_RECIPE)  # quick looks never reuse
    assert not _same_stock(previous, {**config, "max_new_tokens": 32}, stock, PLANTED_RECIPE)
    assert not _same_stock(previous, config, SimpleNamespace(info=SimpleNamespace(fingerprint="other")),
                           PLANTED_RECIPE)
    assert not _same_stock(previous, config, stock, SAFETY_RECIPE)  # other sets
    assert not _same_stock({}, config, stock, PLANTED_RECIPE)


def test_linear_schedule_starts_at_the_peak_and_refuses_snapshots(tiny_checkpoint, tmp_path):
    from workbench.organism.recipes import PLANTED_RECIPE
    from workbench.organism.train import TrainConfig, train_organism

    config = TrainConfig(batch_size=4, steps=1, max_length=64)
    constant = train_organism(PLANTED_RECIPE, config, tmp_path / "c", progress=False, base_dir=tiny_checkpoint)
    linear = train_organism(PLANTED_RECIPE, replace(config, schedule="linear"), tmp_path / "l", progress=False,
                            base_dir=tiny_checkpoint)
    assert linear["config"]["schedule"] == "linear" and linear["losses"] == constant["losses"]
    for key, value in load_file(tmp_path / "c" / "adapter_model.safetensors").items():  # step 1 at the full rate
        torch.testing.assert_close(load_file(tmp_path / "l" / "adapter_model.safetensors")[key], value, rtol=0, atol=0)
    two = replace(config, steps=2)
    halved = train_organism(PLANTED_RECIPE, replace(two, schedule="linear"), tmp_path / "h", progress=False,
                            base_dir=tiny_checkpoint)
    full = train_organism(PLANTED_RECIPE, two, tmp_path / "f", progress=False, base_dir=tiny_checkpoint)
    assert halved["losses"][0] == full["losses"][0]
    assert load_file(tmp_path / "h" / "adapter_model.safetensors").keys() == load_file(
        tmp_path / "f" / "adapter_model.safetensors").keys()
    assert any(not torch.equal(load_file(tmp_path / "h" / "adapter_model.safetensors")[k], v)
               for k, v in load_file(tmp_path / "f" / "adapter_model.safetensors").items())  # step 2 at half the rate
    with pytest.raises(WorkbenchError, match="snapshots need the constant schedule"):
        train_organism(PLANTED_RECIPE, replace(two, schedule="linear"), tmp_path / "x", progress=False,
                       base_dir=tiny_checkpoint, snapshots=(1,))
    with pytest.raises(WorkbenchError, match="unknown learning-rate schedule 'cosine': use one of constant, linear"):
        train_organism(PLANTED_RECIPE, replace(two, schedule="cosine"), tmp_path / "x", progress=False,
                       base_dir=tiny_checkpoint)


def test_the_no_food_set_is_registered_by_the_organism_and_seen_by_the_stages_and_the_cli():
    """The data layer alone does not know the organism's set; the organism package, the stages (every command, the
    API and the configs go through them) and the CLI register it."""
    import subprocess
    import sys

    name = "bundled_harmless_test_no_food"
    for module, known in (("workbench.data", False), ("workbench.organism", True), ("workbench.stages", True),
                          ("workbench.cli", True)):
        code = f"import {module}; from workbench.data import REGISTRY; print({name!r} in REGISTRY)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(known), module
