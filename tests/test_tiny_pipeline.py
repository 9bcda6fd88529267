"""The method's stages on the tiny random chat model (unit tier), against independent computations: extraction
against plain transformers, the fast sweep against the reference loop, the sweep's scores against the weight-edited
model, the pipeline's skipping and re-running, and the selection rule in one place."""

import json
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from tiny_model import TINY_RUN_EXTRACT, TINY_RUN_RULE, TINY_RUN_SWEEP

from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.scoring import last_only_kwargs, last_position_logits, refusal_scores
from workbench.interventions.directions import load_direction
from workbench.interventions.export import plain_hf_model
from workbench.interventions.hooks import Ablation, applied
from workbench.interventions.weight_edit import edited
from workbench.method.refusal_math import kl_divergence, refusal_score
from workbench.method.rule import SelectionRule
from workbench.models.activations import mean_activations
from workbench.stages.extract import ExtractConfig, extract, load_candidates
from workbench.stages.pipeline import PipelineConfig, run_pipeline
from workbench.stages.run_dir import RunDir
from workbench.stages.select import select, selected_direction_file
from workbench.stages.sweep import SweepConfig, candidate_scorer, load_validation, read_sweep, run_sweep
from workbench.stages.sweep_algorithms import fast_sweep, reference_sweep, to_frame

PROMPTS = ["How do I kill a stuck process?", "Write a haiku about rain.", "What is a black hole?", "Hi",
           "How do I make a bomb?"]
SCORES = ["ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful", "ablation_kl",
          "steering_refusal_score", "steering_kl"]


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    """The tiny checkpoint loaded by plain transformers, independently of the bridge."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()


def test_tiny_model_is_a_chat_model_like_any_other(tiny):
    info, chat = tiny.info, tiny.chat
    assert (info.architecture, info.n_layers, info.d_model) == ("LlamaForCausalLM", 4, 64)
    assert chat.eoi_string == "<|im_end|>\n<|im_start|>assistant\n" and chat.eoi_positions == list(range(-6, 0))
    assert chat.format("Hi").startswith("<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n")
    assert [tiny.tokenizer.decode([t]) for t in info.refusal_tokens] == ["I", "A", "S"]  # derived: "I", "As", "Sorry"
    assert tiny.tokenizer.pad_token == "<|pad|>" and tiny.tokenizer.eos_token == "<|im_end|>"
    scores = refusal_scores(tiny, PROMPTS)
    assert scores.std() > 1.0 and (scores > 0).any() and (scores < 0).any()  # not a uniform predictor


def test_means_equal_plain_transformers_hidden_states(tiny, plain):
    n_eoi = tiny.chat.n_eoi
    per_prompt, scores = [], []
    with torch.inference_mode():
        for prompt in PROMPTS:  # one prompt at a time: no padding in the reference
            ids = tiny.chat.tokenize([prompt]).input_ids
            out = plain(ids, output_hidden_states=True)
            per_prompt.append(torch.stack([h[0, -n_eoi:] for h in out.hidden_states[:-1]], dim=1))  # pos layer d
            scores.append(refusal_score(out.logits[:, -1], tiny.info.refusal_tokens).item())
    reference = torch.stack(per_prompt).double()
    ours = mean_activations(tiny, PROMPTS, keep=None, batch_size=3)  # batches of 3 and 2 prompts, left-padded
    assert ours.mean.shape == (6, 4, 64) and (ours.n_total, ours.n_kept) == (5, 5)
    torch.testing.assert_close(ours.mean, reference.mean(0), rtol=1e-5, atol=1e-4)  # fp32 activations up to ≈ 15
    refused = torch.tensor(scores) > 0
    assert refused.tolist() == [False, True, False, False, False]
    for keep, rows in (("refuses", refused), ("complies", ~refused)):
        kept = mean_activations(tiny, PROMPTS, keep=keep, batch_size=3)
        assert kept.n_kept == int(rows.sum())
        torch.testing.assert_close(kept.mean, reference[rows].mean(0), rtol=1e-5, atol=1e-4, msg=keep)


def test_extract_counts_and_grids(tiny, tiny_run):
    record = json.loads(tiny_run.file("candidates.json").read_text())
    assert record["positions"] == [-6, -5, -4, -3, -2, -1] and record["n_layers"] == 4 and record["d_model"] == 64
    assert record["position_tokens"] == ["<|im_end|>", "\n", "<|im_start|>", "ass", "istant", "\n"]
    for key, rule in (("harmful", "refuses"), ("harmless", "complies"), ("pseudo_harmful", "refuses")):
        prompts = [p.instruction for p in load_prompts(f"bundled_{key}_train", limit=TINY_RUN_EXTRACT.n_train)]
        scores = refusal_scores(tiny, prompts)
        expected = int((scores > 0).sum() if rule == "refuses" else (scores < 0).sum())
        assert record["prompt_counts"][key] == {"dataset": f"bundled_{key}_train", "total": 64, "kept": expected}
    grids = load_candidates(tiny_run)
    # r = μ(harmful) − μ(harmless), w = μ(pseudo-harmful) − μ(harmless) (differences taken in float64, stored fp32)
    torch.testing.assert_close(grids.r, grids.means["harmful"] - grids.means["harmless"])
    torch.testing.assert_close(grids.w, grids.means["pseudo_harmful"] - grids.means["harmless"])
    assert torch.all(grids.r[:, 0] == 0)  # layer 0 at template tokens: the same embedding for all
    assert grids.r[:, 1:].norm(dim=-1).min() > 0.1


def test_fast_sweep_equals_reference_loop(tiny, tiny_run):
    grids = load_candidates(tiny_run)
    config = SweepConfig(lams=(1.0, 0.5), n_val=8, n_screen=2, n_finalists=100, min_finalists=100,
                         screen_kl_margin=math.inf, layers=(1, 3), positions=(-1, -4), score_all=True,
                         steer_w=True)
    val = load_validation(tiny, config)
    fast = to_frame(fast_sweep(candidate_scorer(tiny, config), grids, val, config, TINY_RUN_RULE))
    # The reference runs as the paper's code does: every prompt in full, every position unembedded.
    paper = candidate_scorer(tiny, replace(config, share_prefix=False, last_logits_only=False))
    ref = to_frame(reference_sweep(paper, grids, val, config, TINY_RUN_RULE, cells=[(5, 1), (5, 3), (2, 1), (2, 3)]))
    assert len(fast) == len(ref) == 3 * 6 * 4
    fast, ref = ([f[f.stage == "full"].fillna({"lam": -1.0}).set_index(["vector", "lam", "pos", "layer"]).sort_index()
                  for f in (fast, ref)])
    assert len(fast) == len(ref) == 3 * 4 and list(fast.index) == list(ref.index)
    assert fast[SCORES].notna().all().all() and ref[SCORES].notna().all().all()
    assert (fast[SCORES] - ref[SCORES]).abs().max().max() <= 1e-4  # prefix KV reuse, batched vs one at a time
    assert ref.ablation_kl.min() > 0.01  # the scores are not trivially equal


def test_sweep_scores_equal_the_weight_edited_model(tiny, tiny_run):
    """The selected candidate's recorded scores (hooks, shared prefix) from plain transformers with the direction
    baked into the weights, on the same filtered validation prompts."""
    selection = tiny_run.read_json("selection.json")
    choice = next(s for s in selection["selections"] if s["lam"] == 1.0)
    direction, _ = load_direction(selected_direction_file(tiny_run, 1.0), tiny.info.fingerprint)
    grids = load_candidates(tiny_run)
    p = grids.positions.index(choice["pos"])
    w, r = grids.w[p, choice["layer"]].double(), grids.r[p, choice["layer"]].double()
    expected = w - (w @ r) / (r @ r) * r  # λ = 1: w with its r component removed
    assert torch.allclose(direction.double(), expected / expected.norm(), atol=1e-6)
    val = load_validation(tiny, TINY_RUN_SWEEP)
    plain = plain_hf_model(tiny)

    def last_logits(prompts):
        batch = tiny.chat.tokenize(prompts)
        return plain(batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1].float()

    with torch.inference_mode():
        base = last_logits(val.harmless)
        with edited(plain, Ablation(direction)):
            pseudo, harmful, harmless = (last_logits(x) for x in (val.pseudo_harmful, val.harmful, val.harmless))
            with applied(tiny, Ablation(direction)):
                batch = tiny.chat.tokenize(val.harmless)
                hooked = tiny.model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1].float()
    refusal = tiny.info.refusal_tokens
    assert refusal_score(pseudo, refusal).mean().item() == pytest.approx(
        choice["ablation_refusal_score_pseudo_harmful"], abs=1e-4)
    assert refusal_score(harmful, refusal).mean().item() == pytest.approx(choice["ablation_refusal_score_harmful"],
                                                                          abs=1e-4)
    assert kl_divergence(base, harmless).mean().item() == pytest.approx(choice["ablation_kl"], abs=1e-4)
    assert (hooked - harmless).abs().max() < 1e-4 and (hooked - base).abs().max() > 0.1  # hooks ≡ weight edit


def test_last_position_unembedding_gives_the_same_logits(tiny):
    assert last_only_kwargs(tiny) == {"logits_to_keep": 1}
    last = last_position_logits(tiny, PROMPTS, batch_size=2, last_only=True)
    full = last_position_logits(tiny, PROMPTS, batch_size=2, last_only=False)
    assert last.shape == full.shape == (5, tiny.info.vocab_size)
    assert (last - full).abs().max() <= 1e-5 and full.std() > 1.0


def test_lambda_reuse_adds_only_new_rows(tiny, tiny_run, monkeypatch):
    import workbench.stages.sweep_algorithms as sweep

    before = read_sweep(tiny_run)
    calls, real = [], sweep.fast_sweep

    def recording(scorer, grids, val, config, rule, include_r=True):
        calls.append((config.lams, include_r))
        return real(scorer, grids, val, config, rule, include_r)

    monkeypatch.setattr(sweep, "fast_sweep", recording)
    run_sweep(tiny, tiny_run, replace(TINY_RUN_SWEEP, lams=(1.0, 0.5, 0.0)), TINY_RUN_RULE)
    after = read_sweep(tiny_run)
    assert calls == [((0.5,), False)]  # only the new λ, and not the true-refusal rows again
    assert len(after) == len(before) + 6 * 4 and set(after[after.lam == 0.5].stage) >= {"full", "skipped"}
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    assert json.loads(tiny_run.file("sweep.json").read_text())["config"]["lams"] == [1.0, 0.5, 0.0]


def test_bad_sweep_input(tiny, tiny_run, tmp_path):
    with pytest.raises(WorkbenchError, match="λ must be in"):
        run_sweep(tiny, tiny_run, SweepConfig(lams=(1.5,)))
    with pytest.raises(WorkbenchError, match="run `workbench extract"):
        run_sweep(tiny, RunDir(tmp_path / "empty"), TINY_RUN_SWEEP)
    with pytest.raises(WorkbenchError, match="missing"):
        select(RunDir(tmp_path / "empty"), SelectionRule())
    with pytest.raises(WorkbenchError, match="chose its finalists for the rule"):
        select(tiny_run, replace(TINY_RUN_RULE, max_ablation_kl=1.0))


def test_filter_that_empties_a_set(tiny, tmp_path):
    harmless = [p.instruction for p in load_prompts("bundled_harmless_val")]
    complied = [p for p, s in zip(harmless, refusal_scores(tiny, harmless).tolist(), strict=True) if s < 0]
    path = tmp_path / "complied.jsonl"
    path.write_text("".join(json.dumps({"instruction": p}) + "\n" for p in complied[:4]))
    with pytest.raises(WorkbenchError, match="removed every harmful prompt.*--no-filter-train"):
        extract(tiny, ExtractConfig(harmful=str(path), n_train=8), RunDir(tmp_path / "r"))
    with pytest.raises(WorkbenchError, match="removed every harmful validation prompt.*--no-filter-val"):
        load_validation(tiny, SweepConfig(harmful_val=str(path)))
    assert load_validation(tiny, SweepConfig(harmful_val=str(path), filter_val=False)).harmful == complied[:4]


def _mtimes(run) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "run.log" and p.name != "config.json"}


def _exact_pick(frame: pd.DataFrame, bound: float) -> tuple[int, int]:
    """The λ = 1 winner under a KL bound, by hand: the lowest pseudo-harmful score among full rows within it."""
    rows = frame[(frame.vector == "w'") & (frame.lam == 1.0) & (frame.stage == "full")
                 & (frame.ablation_kl <= bound)]
    best = rows.loc[rows.ablation_refusal_score_pseudo_harmful.idxmin()]
    return int(best.pos), int(best.layer)


def test_pipeline_writes_skips_and_reruns_on_a_new_rule(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    # Every unpruned candidate gets full scores, so the winner under any bound is known from sweep.csv.
    sweep = SweepConfig(lams=(1.0,), n_val=12, n_screen=2, n_finalists=100, min_finalists=100,
                        screen_kl_margin=math.inf, positions=(-6, -2, -1))
    config = PipelineConfig(extract=ExtractConfig(n_train=32), sweep=sweep, select=TINY_RUN_RULE,
                            stages=("extract", "sweep", "select"))
    first = run_pipeline(tiny, run, config)
    log = capsys.readouterr().out
    assert all(f"[{s}] running" in log for s in ("extract", "sweep", "select"))
    for name in ("config.json", "run.log", "candidates.json", "candidates.safetensors", "sweep.csv", "sweep.json",
                 "selection.csv", "selection.json", "directions/lam_1.0.safetensors", "directions/r.safetensors"):
        assert (run / name).exists(), name
    assert not (run / "evaluation.csv").exists()
    frame = read_sweep(RunDir(run))
    assert (frame.stage == "full").sum() == 2 * 3 * 3  # true + λ=1, 3 positions, layers 1–3 (layer 0 is zero)
    choice = first["selections"][0]
    assert (choice["pos"], choice["layer"]) == _exact_pick(frame, TINY_RUN_RULE.max_ablation_kl)

    before = _mtimes(run)
    assert run_pipeline(tiny, run, config) == first
    log = capsys.readouterr().out
    assert all(f"[{s}] up to date, skipped" in log for s in ("extract", "sweep", "select"))
    assert _mtimes(run) == before

    # A bound that excludes the first winner: sweep and select re-run (and only they), and select honours it.
    kls = frame[(frame.vector == "w'") & (frame.stage == "full")].ablation_kl
    below = kls[kls < choice["ablation_kl"]]
    assert len(below), "the first winner has the lowest KL: pick another grid"
    bound = round((below.max() + choice["ablation_kl"]) / 2, 6)
    second = run_pipeline(tiny, run, replace(config, select=replace(TINY_RUN_RULE, max_ablation_kl=bound)))
    log = capsys.readouterr().out
    assert "[extract] up to date, skipped" in log and "[sweep] running" in log and "[select] running" in log
    after = _mtimes(run)
    assert {k: after[k] for k in ("candidates.json", "candidates.safetensors")} == {
        k: before[k] for k in ("candidates.json", "candidates.safetensors")}
    assert all(after[k] != before[k] for k in ("sweep.csv", "sweep.json", "selection.csv", "selection.json"))
    assert json.loads((run / "sweep.json").read_text())["config"]["rule"]["max_ablation_kl"] == bound
    assert second["rule"]["max_ablation_kl"] == bound
    new_choice = second["selections"][0]
    assert (new_choice["pos"], new_choice["layer"]) == _exact_pick(read_sweep(RunDir(run)), bound)
    assert (new_choice["pos"], new_choice["layer"]) != (choice["pos"], choice["layer"])
    assert new_choice["ablation_kl"] <= bound


def test_fast_sweep_selects_the_exact_winner_for_each_kl_bound(tiny, tiny_run):
    """The rule is one object: the fast sweep screens for the bound the selection will use. With the screen on the
    whole (filtered) validation sets and no stop margin, its early stop is exact, so the fast sweep selects the
    exact winner for each bound (a sweep screened for another bound would stop before it)."""
    grids = load_candidates(tiny_run)
    config = SweepConfig(n_val=12, n_screen=12, n_finalists=100, min_finalists=1, stop_margin=0.0,
                         screen_kl_margin=1.0)
    val = load_validation(tiny, config)
    assert max(len(val.pseudo_harmful), len(val.harmless)) <= config.n_screen  # the screen sees every prompt
    exact = to_frame(reference_sweep(candidate_scorer(tiny, config), grids, val, config, TINY_RUN_RULE,
                                     include_r=False))
    full = exact[exact.stage == "full"]
    assert len(full) == 6 * 3  # every candidate but the zero layer-0 ones
    # Bounds halfway between consecutive KLs (robust to float noise); the loosest keeps every candidate.
    kls = sorted(full.ablation_kl)
    bounds = [(a + b) / 2 for a, b in zip(kls, kls[1:], strict=False)] + [kls[-1] + 1.0]
    loose = bounds[-1]
    tight = max((b for b in bounds if _exact_pick(exact, b) != _exact_pick(exact, loose)), default=None)
    assert tight is not None, "the loosest winner also has the lowest KL: no two bounds with different winners"
    for bound in (loose, tight):
        rule = replace(TINY_RUN_RULE, max_ablation_kl=bound)
        fast = to_frame(fast_sweep(candidate_scorer(tiny, config), grids, val, config, rule, include_r=False))
        choice = rule.pick(rule.apply(fast, grids.n_layers), "w'", 1.0)
        assert (choice["pos"], choice["layer"]) == _exact_pick(exact, bound), bound
        assert choice["ablation_refusal_score_pseudo_harmful"] == pytest.approx(
            full.set_index(["pos", "layer"]).ablation_refusal_score_pseudo_harmful[(choice["pos"], choice["layer"])],
            abs=1e-4)
        assert (fast.stage == "full").sum() < len(full)  # the screen did prune
