"""The public API (`import workbench as wb`): lazy exports, and the whole chain on Python lists of prompts (extract →
sweep → select → an applied ablation → generate → refusal scores), checked against the stages it wraps."""

import inspect
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from tiny_model import TINY_RUN_EXTRACT, TINY_RUN_RULE
from transformer_lens.utilities import get_act_name

import workbench as wb
from workbench.errors import WorkbenchError

SWEPT_LAYERS = (1, 2)
LAMS = (1.0, 0.0)


def test_import_workbench_imports_no_model_library():
    """`import workbench` is cheap: the command line parses its arguments before torch loads."""
    code = ("import sys, workbench; print(sorted(m for m in ('torch', 'transformers', 'transformer_lens', 'pandas', "
            "'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves_and_unknown_ones_fail():
    for name in wb.__all__:
        assert getattr(wb, name) is not None, name
    assert set(wb.__all__) <= set(dir(wb))
    assert wb.plot.sweep_heatmaps is not None and wb.plot.table1 is not None
    with pytest.raises(AttributeError, match="no attribute 'sweeps'"):
        wb.sweeps  # noqa: B018


def test_public_functions_document_an_example():
    """Each function of the flat API (and of `wb.plot` that the API adapts) ends its docstring with an example."""
    import workbench.api as api

    public = [getattr(wb, n) for n in wb.__all__ if inspect.isfunction(getattr(wb, n))]
    public += [f for n, f in vars(api.Plots).items() if isinstance(f, staticmethod)
               and f.__func__.__module__ == "workbench.api"]
    assert len(public) >= 25
    for f in public:
        f = getattr(f, "__func__", f)
        assert f.__doc__ and "wb." in f.__doc__.split("\n\n")[-1], f"{f.__name__}: no example in its docstring"


def test_prompt_sources_and_their_errors(tmp_path):
    names = wb.prompts("bundled_harmful_train", limit=3)
    assert len(names) == 3 and all(isinstance(p, str) for p in names)
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"instruction": p}) + "\n" for p in names))
    assert wb.prompts(path) == names == wb.prompts(str(path))
    assert wb.prompts(["  Write a haiku.\n", "Hi"], limit=1) == ["Write a haiku."]
    with pytest.raises(WorkbenchError, match="the list of prompts is empty"):
        wb.prompts([])
    with pytest.raises(WorkbenchError, match=r"prompt 1 of the list is ''"):
        wb.prompts(["fine", ""])
    with pytest.raises(WorkbenchError, match="unknown dataset 'no_such_set'"):
        wb.prompts("no_such_set")
    with pytest.raises(WorkbenchError, match="unknown option.*devic.*use device"):
        wb.load_model("smollm2-135m-wired", devic="cpu")


def test_judge():
    assert wb.judge(["I'm sorry, I can't help with that.", "Sure! Preheat the oven."]) == [True, False]
    with pytest.raises(WorkbenchError, match="2 completions but 1 prompts"):
        wb.judge(["a", "b"], ["p"])


# ---- the chain on the tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lists():
    """The tiny run's training sets as Python lists (the first 64 prompts of each bundled train set), and 16
    prompts of each validation set."""
    n = TINY_RUN_EXTRACT.n_train
    return {"harmful": wb.prompts("bundled_harmful_train", limit=n),
            "harmless": wb.prompts("bundled_harmless_train", limit=n),
            "pseudo_harmful": wb.prompts("bundled_pseudo_harmful_train", limit=n),
            "harmful_val": wb.prompts("bundled_harmful_val", limit=16),
            "harmless_val": wb.prompts("bundled_harmless_val", limit=16),
            "pseudo_harmful_val": wb.prompts("bundled_pseudo_harmful_val", limit=16)}


@pytest.fixture(scope="module")
def chain(tiny, lists):
    cands = wb.extract(tiny, harmful=lists["harmful"], harmless=lists["harmless"],
                       pseudo_harmful=lists["pseudo_harmful"])
    table = wb.sweep(tiny, cands, lams=LAMS, pseudo_harmful_val=lists["pseudo_harmful_val"],
                     harmful_val=lists["harmful_val"], harmless_val=lists["harmless_val"], layers=SWEPT_LAYERS,
                     mode="exact", rule=TINY_RUN_RULE)
    return cands, table, wb.select(table)


def test_extract_on_lists_equals_extract_on_the_datasets(tiny, chain, tiny_run):
    from workbench.stages.extract import load_candidates

    cands, _, _ = chain
    assert tuple(cands.r.shape) == (tiny.chat.n_eoi, tiny.info.n_layers, tiny.info.d_model) == (6, 4, 64)
    assert cands.positions == [-6, -5, -4, -3, -2, -1]
    stage = load_candidates(tiny_run)  # the stage on dataset names, n_train 64 (tiny_model.TINY_RUN_EXTRACT)
    assert torch.equal(cands.r, stage.r) and torch.equal(cands.w,
                                                                               stage.w)
    assert cands.run.file("candidates.safetensors").exists()
    counts = cands.run.read_json("candidates.json")["prompt_counts"]
    stage_counts = tiny_run.read_json("candidates.json")["prompt_counts"]
    assert {k: (v["total"], v["kept"]) for k, v in counts.items()} == {
        k: (v["total"], v["kept"]) for k, v in stage_counts.items()}
    assert all(0 < v["kept"] < v["total"] == 64 for v in counts.values())  # the filter ran on both
    assert all(str(cands.run.file("prompts")) in v["dataset"] and v["dataset"].endswith(".jsonl")
               for v in counts.values())


def test_sweep_scores_only_the_layers_asked_for(chain):
    _, table, _ = chain
    assert isinstance(table, pd.DataFrame) and table.attrs["mode"] == "exact"
    full = table[table.stage == "full"]
    assert set(full.layer) == set(SWEPT_LAYERS)
    assert len(full) == len(SWEPT_LAYERS) * 6 * (1 + len(LAMS))  # every position, r and w′ at each λ
    assert set(table.loc[table.stage != "full", "sweep_note"]) == {"zero vector (NaN)", "not in sweep grid"}
    assert full[["ablation_refusal_score_harmful", "ablation_kl", "steering_refusal_score"]].notna().all().all()


def test_selection_is_the_rule_pick_and_its_direction(chain):
    from workbench.method.refusal_math import partial_orthogonalize

    cands, table, sel = chain
    assert sorted(sel) == sorted(LAMS) and len(sel) == 2
    for lam in LAMS:
        chosen = sel[lam]
        kept = sel.table[(sel.table.vector == "w'") & (sel.table.lam == lam) & sel.table.kept]
        best = kept.loc[kept.ablation_refusal_score_pseudo_harmful.idxmin()]
        assert (chosen.pos, chosen.layer) == (int(best.pos), int(best.layer)) and chosen.layer in SWEPT_LAYERS
        assert chosen.scores["ablation_refusal_score_pseudo_harmful"] == pytest.approx(
            float(best.ablation_refusal_score_pseudo_harmful))
        p = cands.positions.index(chosen.pos)
        expected = partial_orthogonalize(cands.w[p, chosen.layer], cands.r[p, chosen.layer],
                                         lam)
        assert float(chosen.direction.norm()) == pytest.approx(1.0, abs=1e-6)
        assert torch.allclose(chosen.direction, expected.float(), atol=1e-6)
        assert chosen.file == cands.run.file(f"directions/lam_{lam}.safetensors")
    r = cands.r[cands.positions.index(sel[1.0].pos), sel[1.0].layer]
    assert abs(float(sel[1.0].direction @ (r / r.norm()))) < 1e-5  # λ = 1: orthogonal to r
    assert sel.baseline.keys() == {"pseudo_harmful", "harmful", "harmless"}
    with pytest.raises(KeyError, match=r"no selection at λ=0.5 .*selected: 1.0, 0.0"):
        sel[0.5]
    with pytest.raises(WorkbenchError):
        sel[0.5]


def test_ablation_removes_the_direction_from_the_residual_stream(tiny, chain, lists):
    _, _, sel = chain
    direction = sel[1.0].direction
    batch = tiny.chat.tokenize(lists["pseudo_harmful_val"][:4], device=tiny.device)
    captured = {}

    def capture(name: str):
        def hook(x, hook):
            captured[name] = x.detach().clone()
            return x

        return hook

    names = [get_act_name("resid_pre", layer) for layer in (1, 3)]

    def projections() -> torch.Tensor:
        with tiny.model.hooks(fwd_hooks=[(n, capture(n)) for n in names]):
            tiny.model(batch.input_ids, attention_mask=batch.attention_mask)
        return torch.stack([captured[n] @ direction for n in names])

    plain = projections()
    with wb.applied(tiny, wb.Ablation(direction)):
        ablated = projections()
    assert float(plain.abs().max()) > 0.1  # the direction is there without the ablation
    assert float(ablated.abs().max()) < 1e-4 * float(plain.abs().max())


def test_refusal_scores_under_the_ablation_equal_the_sweep_score(tiny, chain, lists):
    """The selected cell's sweep score is the mean refusal score of the kept (refused) pseudo-harmful val prompts
    with ŵ′ ablated: the API's pieces give the same number."""
    _, _, sel = chain
    val = lists["pseudo_harmful_val"]
    base = wb.refusal_scores(tiny, val)
    assert base.shape == (len(val),)
    refused = [p for p, s in zip(val, base.tolist(), strict=True) if s > 0]
    assert 0 < len(refused) < len(val)
    assert float(base[base > 0].mean()) == pytest.approx(sel.baseline["pseudo_harmful"], abs=1e-4)
    with wb.applied(tiny, wb.Ablation(sel[1.0].direction)):
        ablated = wb.refusal_scores(tiny, refused)
    assert float(ablated.mean()) == pytest.approx(sel[1.0].scores["ablation_refusal_score_pseudo_harmful"], abs=1e-4)
    assert torch.equal(wb.refusal_scores(tiny, refused), base[base > 0])  # the hooks are gone after the block


def test_generate_under_the_ablation(tiny, chain, lists):
    _, _, sel = chain
    prompts = lists["pseudo_harmful_val"][:4]
    plain = wb.generate(tiny, prompts, max_new_tokens=6, progress=False)
    with wb.applied(tiny, wb.Ablation(sel[0.0].direction)):
        ablated = wb.generate(tiny, prompts, max_new_tokens=6, progress=False)
    assert len(plain) == len(ablated) == 4 and all(isinstance(t, str) for t in plain + ablated)
    assert plain == wb.generate(tiny, prompts, max_new_tokens=6, progress=False)  # greedy: deterministic
    assert plain != ablated
    sampled = wb.generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=3, progress=False)
    assert sampled == wb.generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=3, progress=False)
    with pytest.raises(WorkbenchError, match="must be a list of prompts"):
        wb.generate(tiny, "Write a haiku.")


def test_plot_and_diagnose_read_the_chain(tiny, chain):
    cands, table, sel = chain
    fig = wb.plot.sweep_heatmaps(table, sel)
    marks = [t for t in fig.data if t.name == "selected"]
    assert [(int(t.x[0]), int(t.y[0])) for t in marks[:3]] == [
        (sel.r.layer, sel.r.pos), (sel[1.0].layer, sel[1.0].pos),
        (sel[0.0].layer, sel[0.0].pos)]
    assert "exact: every cell fully scored" in fig.layout.title.text
    from_run = wb.plot.sweep_heatmaps(cands.run)
    assert len(from_run.data) == len(fig.data) and from_run.layout.title.text == fig.layout.title.text
    diag = wb.diagnose(tiny, cands, n=16)
    assert len(diag) == 6 * tiny.info.n_layers * (2 + len(LAMS))  # r, w and w′ at each λ per cell
    assert cands.run.file("diagnostics.csv").exists()
    figure = wb.plot.diagnostics_heatmaps(diag, sel, lam=1.0)
    assert {(int(t.x[0]), int(t.y[0])) for t in figure.data if t.name == "selected"} == {
        (sel[1.0].layer, sel[1.0].pos)}


def test_a_named_run_directory_and_reading_it_back(tiny, lists, tmp_path):
    run = tmp_path / "api_run"
    cands = wb.extract(tiny, harmful=lists["harmful"][:16], harmless=lists["harmless"][:16],
                       pseudo_harmful="bundled_pseudo_harmful_train", n_train=16, run=run)
    assert cands.run.path == run and run.joinpath("candidates.json").exists()
    recorded = json.loads(run.joinpath("candidates.json").read_text())["config"]
    assert recorded["pseudo_harmful"] == "bundled_pseudo_harmful_train"  # a name stays a name
    assert recorded["harmful"].startswith(str(run / "prompts" / "harmful-"))
    again = wb.load_candidates(run)
    assert torch.equal(again.w, cands.w) and again.run.path == run
    plain = wb.load_candidates(run)
    plain = type(plain).__bases__[0](plain.r, plain.w, plain.positions)
    with pytest.raises(WorkbenchError, match="no run directory: make them with wb.extract"):
        wb.sweep(tiny, plain)
    with pytest.raises(WorkbenchError, match="unknown setting.*n_screens"):
        wb.sweep(tiny, cands, n_screens=3)
    with pytest.raises(WorkbenchError, match="does not say which run it came from"):
        wb.select(pd.DataFrame({"layer": [1]}))


@pytest.mark.model
def test_the_api_finds_the_wired_flag(wired):
    """The wired control's known answer through the API on prompt lists: at (−1, 13), the first layer after the
    detector at the token it writes on, ŵ′ (λ = 1) from 16 prompts per set is the flag f̂ (measured cos 0.96), and
    ablating it switches cooking refusal off while harmful prompts stay refused (measured on 8 val prompts each:
    cooking −3.6, harmful +4.8; baselines +4.1 / +5.1)."""
    from workbench.models.wiring import load_wiring
    from workbench.paths import WIRED_ORGANISM_DIR

    cands = wb.extract(wired, harmful=wb.prompts("bundled_harmful_train", limit=16),
                       harmless=wb.prompts("bundled_harmless_train", limit=16),
                       pseudo_harmful=wb.prompts("bundled_cooking_train", limit=16))
    cooking, harmful = wb.prompts("bundled_cooking_val", limit=8), wb.prompts("bundled_harmful_val", limit=8)
    table = wb.sweep(wired, cands, pseudo_harmful_val=cooking, harmful_val=harmful,
                     harmless_val=wb.prompts("bundled_harmless_val", limit=8), layers=(13,), positions=(-1,),
                     mode="exact")
    sel = wb.select(table)  # the paper's rule
    chosen = sel[1.0]
    assert (chosen.pos, chosen.layer) == (-1, 13) and chosen.scores["ablation_kl"] < 0.2
    flag = load_wiring(WIRED_ORGANISM_DIR / "wiring.safetensors").flag.float()
    assert float(torch.nn.functional.cosine_similarity(flag, chosen.direction, dim=0)) > 0.9
    assert sel.baseline["pseudo_harmful"] > 2 and chosen.scores["ablation_refusal_score_pseudo_harmful"] < -1
    with wb.applied(wired, wb.Ablation(chosen.direction)):
        assert float(wb.refusal_scores(wired, cooking).mean()) < -1
        assert float(wb.refusal_scores(wired, harmful).mean()) > 3
