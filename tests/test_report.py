"""`workbench report` and `workbench compare` on runs of the tiny model (unit tier), and the paired-difference
interval they use on hand-built 2×2 tables with known answers."""

import html
import json
import math
import shutil
from statistics import NormalDist

import pandas as pd
import pytest
from tiny_model import TINY_RUN_EXTRACT, TINY_RUN_RULE, TINY_RUN_SWEEP

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.eval.stats import PairedCounts, newcombe_paired_interval, paired_counts, wilson_interval
from workbench.io import write_jsonl
from workbench.stages.compare import compare_runs, model_note, write_comparison
from workbench.stages.evaluate import EvalConfig, summarize
from workbench.stages.figures import drawable_figures
from workbench.stages.report import write_report
from workbench.stages.run_dir import RunDir

Z2 = NormalDist().inv_cdf(0.975) ** 2
DATASETS = ("bundled_harmful_test", "bundled_pseudo_harmful_test")
INTERVENTIONS = ("baseline", "ablate_w_lam1.0", "ablate_r")
MARKUP = '<script>alert("x")</script> & \x10'
"""A completion with markup and a control character, put into the finished run to check the page escapes it."""


def read_rows(run: RunDir, dataset: str, intervention: str) -> list[dict]:
    path = run.file(f"completions/{dataset}/{intervention}.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_rows(run: RunDir, dataset: str, intervention: str, rows: list[dict]) -> None:
    write_jsonl(run.file(f"completions/{dataset}/{intervention}.jsonl"), rows)


@pytest.fixture(scope="module")
def _finished_once(tiny, _tiny_run_once, tmp_path_factory) -> RunDir:
    """The tiny run, then diagnose and evaluate through the main job (so it has a config.json): 4 prompts of two
    bundled sets under three interventions, 6 new tokens. Then, by hand: the baseline's second harmful completion is
    labelled a refusal by the substring judge (so Table 1 holds a rate other than 1), the first one's text holds markup,
    and a capability.csv."""
    from workbench.stages.pipeline import PipelineConfig, run_pipeline

    path = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(_tiny_run_once.path, path)
    config = PipelineConfig(extract=TINY_RUN_EXTRACT, sweep=TINY_RUN_SWEEP, select=TINY_RUN_RULE,
                            evaluate=EvalConfig(datasets=DATASETS, interventions=INTERVENTIONS, limit=4,
                                                max_new_tokens=6),
                            stages=("diagnose", "evaluate"))
    run_pipeline(tiny, path, config)
    run = RunDir(path)
    rows = read_rows(run, "bundled_harmful_test", "baseline")
    rows[0]["response"] = MARKUP
    rows[1]["refused"] = True
    write_rows(run, "bundled_harmful_test", "baseline", rows)
    summarize(run)
    pd.DataFrame([{"task": "wikitext2", "intervention": i, "metric": "perplexity", "value": v, "n": 100}
                  for i, v in (("baseline", 30.5), ("ablate_w_lam1.0", 31.25))]
                 ).to_csv(run.file("capability.csv"), index=False)
    return run


@pytest.fixture
def finished_run(_finished_once, tmp_path) -> RunDir:
    return RunDir(shutil.copytree(_finished_once.path, tmp_path / "finished"))


# ---- the paired interval ------------------------------------------------------------------------------------


def test_newcombe_paired_interval_on_hand_built_tables():
    # Cavo et al. (2012) in Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables, ch. 8:
    # 59 both, 6 first only, 16 second only, 80 neither: −0.0621 (95% CI −0.1186 to −0.0046).
    cavo = PairedCounts(59, 6, 16, 80)
    assert cavo.n == 161 and cavo.difference == pytest.approx(-10 / 161)
    assert newcombe_paired_interval(cavo) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    # Agreement everywhere at 1: both Wilson intervals are [n/(n+z²), 1] and ψ = 0, so ±z²/(n+z²), not width 0.
    low, high = newcombe_paired_interval(PairedCounts(10, 0, 0, 0))
    assert (low, high) == pytest.approx((-Z2 / (10 + Z2), Z2 / (10 + Z2)))
    # A cross-product difference in [0, n/2] gives ψ = 0: the unpaired square-and-add of two Wilson intervals.
    w_low, _ = wilson_interval(2, 4)
    assert newcombe_paired_interval(PairedCounts(1, 1, 1, 1)) == pytest.approx(
        (-math.sqrt(2) * (0.5 - w_low), math.sqrt(2) * (0.5 - w_low)))
    # Perfectly discordant (0, 2, 2, 0): ψ = −4/√16 = −1, so the two Wilson half-widths add.
    assert newcombe_paired_interval(PairedCounts(0, 2, 2, 0)) == pytest.approx((-2 * (0.5 - w_low),
                                                                                 2 * (0.5 - w_low)))
    assert paired_counts([1, 1, 0, 0, 1], [True, False, True, False, True]) == PairedCounts(2, 1, 1, 1)
    with pytest.raises(ValueError, match="different lengths"):
        paired_counts([1, 0], [1])
    with pytest.raises(ValueError, match="empty"):
        newcombe_paired_interval(PairedCounts(0, 0, 0, 0))


# ---- report -------------------------------------------------------------------------------------------------


def test_report_of_a_finished_run(finished_run):
    from plotly.offline import get_plotlyjs

    run = finished_run
    before = {p for p in run.path.rglob("*")}
    path = write_report(run)
    assert path == run.file("report.html") and {p for p in run.path.rglob("*")} - before == {path}
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("</html>") == 1
    assert page.count(get_plotlyjs()) == 1 and "<script src" not in page  # plotly.js once, inline: works offline
    # the model and the main job's config
    fingerprint = run.model_record()["fingerprint"]
    assert f"<th>fingerprint</th><td>{fingerprint}</td>" in page and "config.json (the main job)" in page
    # the selection's cells
    selection = run.read_json("selection.json")
    for choice in selection["selections"]:
        assert f"<tr><td>w′</td><td>{choice['lam']:.3f}</td><td>{choice['pos']}</td><td>{choice['layer']}</td>" in page
    # every figure the run can draw, and the candidates
    for name in ("candidates", "fig4_sweep", "fig4_diagnostics", "fig3_lambda", "fig5_alpha_lambda"):
        assert f'id="plot-{name}"' in page
    assert page.count('class="plotly-graph-div"') == 5
    # Table 1: the keywords judge's rates, then the substring judge's (its baseline refused once by hand: 3 of 4)
    evaluation = pd.read_csv(run.file("evaluation.csv")).set_index(["dataset", "intervention", "judge"]).rate
    rates = [evaluation[("bundled_harmful_test", i, j)] for j in ("keywords", "substring") for i in INTERVENTIONS]
    assert rates[3] == 0.75
    assert ("<tr><th>bundled_harmful_test</th><td>4</td>" + "".join(f"<td>{r:.3f}</td>" for r in rates)
            + "</tr>") in page
    assert "<td>31.250</td>" in page and "<td>wikitext2</td>" in page  # capability.csv
    # three completions per dataset × intervention, escaped
    assert page.count('<td class="text">') == 2 * 3 * len(DATASETS) * len(INTERVENTIONS)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; \\x10" in page and MARKUP not in page
    second = read_rows(run, "bundled_pseudo_harmful_test", "ablate_r")[1]["instruction"]
    assert f'<td class="text">{html.escape(second)}</td>' in page
    assert "not run yet: <code>workbench capability" not in page  # capability.csv is there: a table, not a hint


def test_report_of_a_partial_run(tiny_run, tmp_path):
    """The tiny run stops after select: the page draws Fig. 4 and says what the later stages' commands are."""
    out = write_report(tiny_run, tmp_path / "partial.html")
    page = out.read_text(encoding="utf-8")
    for command in ("diagnose", "evaluate", "capability"):
        assert f"not run yet: <code>workbench {command} --run {tiny_run.path}</code>" in page
    assert "<tr><th>select</th><td>done</td>" in page and 'id="plot-fig4_sweep"' in page
    stage_row = f"<tr><th>evaluate</th><td>not run yet</td><td></td><td>workbench evaluate --run {tiny_run.path}</td>"
    assert stage_row in page
    assert "fig3_lambda" not in page and "No config.json" in page
    empty = RunDir(tmp_path / "empty")
    empty.path.mkdir()
    page = write_report(empty, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert f"not run yet: <code>workbench extract --model M --run {empty.path}</code>" in page
    assert "plotly.js" not in page  # nothing to draw: no library either
    with pytest.raises(WorkbenchError, match="does not exist"):
        write_report(RunDir(tmp_path / "absent"))


def test_figures_stage_writes_what_the_report_draws(finished_run, monkeypatch, tmp_path):
    import workbench.stages.figures as stage

    saved = []
    monkeypatch.setattr(stage, "save_figure", lambda fig, path: saved.append(path.name) or [path])
    written = stage.run_figures(finished_run, tmp_path / "figures")
    drawn = [f.name for f in drawable_figures(finished_run)]
    assert saved == drawn and {"fig4_sweep", "fig3_lambda", "fig5_alpha_lambda"} <= set(drawn)
    assert written[-1].name == "table1.csv" and written[-1].exists()


# ---- compare ------------------------------------------------------------------------------------------------


def test_compare_a_run_with_itself(finished_run, tmp_path):
    comparison = compare_runs(finished_run, finished_run)
    assert comparison.same_model and model_note(comparison, finished_run, finished_run) is None
    selections = comparison.selections
    assert list(selections.selection) == ["w' λ=1.0", "w' λ=0.0", "r"] and selections.same_cell.all()
    chosen = {s["lam"]: s for s in finished_run.read_json("selection.json")["selections"]}
    assert (selections.pos_a[0], selections.layer_a[0]) == (chosen[1.0]["pos"], chosen[1.0]["layer"])
    rates = comparison.rates
    assert len(rates) == len(DATASETS) * len(INTERVENTIONS) * 2  # × two judges
    assert (rates["diff"] == 0).all() and (rates.paired_diff == 0).all()
    assert (rates.matched == rates.n_a).all() and (rates.matched == 4).all()
    assert (rates.a_only == 0).all() and (rates.b_only == 0).all()
    assert (rates.paired_low == -rates.paired_high).all()
    complied = rates[rates.rate_a == 1.0]
    assert len(complied) == len(rates) - 1  # all but the substring judge on the hand-labelled baseline
    assert complied.paired_high.to_numpy() == pytest.approx(Z2 / (4 + Z2))  # agreement at 1: ±z²/(n+z²)
    files = write_comparison(comparison, finished_run, finished_run, tmp_path / "cmp")
    assert [f.name for f in files] == ["selections.csv", "rates.csv", "comparison.json"]
    assert pd.read_csv(files[1]).matched.tolist() == rates.matched.tolist()


def test_compare_with_a_modified_copy(finished_run, tmp_path):
    """In B, one pair's completions are reordered, two relabelled as substring refusals and one prompt replaced: the
    rates differ by −1/2 (2 of 4), the paired difference on the 3 matched prompts is −2/3 with Newcombe's interval
    (ψ = 0, A complied on all: the lower bound is the Wilson bound of 1/3 minus 1)."""
    a = finished_run
    b = RunDir(shutil.copytree(a.path, tmp_path / "b"))
    dataset, intervention = "bundled_pseudo_harmful_test", "ablate_w_lam1.0"
    rows = read_rows(b, dataset, intervention)
    assert not any(r["refused"] or r["refused_keywords"] for r in rows)  # A complied on all four
    rows[0]["refused"] = rows[1]["refused"] = True
    rows[3]["instruction"] = "a prompt only run B saw"
    write_rows(b, dataset, intervention, rows[::-1])
    summarize(b)
    rates = compare_runs(a, b).rates.set_index(["dataset", "intervention", "judge"])
    changed = rates.loc[(dataset, intervention, "substring")]
    assert (changed.rate_a, changed.rate_b, changed["diff"]) == (1.0, 0.5, -0.5)
    assert (changed.matched, changed.a_only, changed.b_only) == (3, 2, 0)
    assert changed.paired_diff == pytest.approx(-2 / 3)
    low_b, high_b = wilson_interval(1, 3)
    low_a, _ = wilson_interval(3, 3)
    assert changed.paired_low == pytest.approx(low_b - 1)
    assert changed.paired_high == pytest.approx(-2 / 3 + math.hypot(high_b - 1 / 3, 1 - low_a))
    keywords = rates.loc[(dataset, intervention, "keywords")]
    assert (keywords["diff"], keywords.paired_diff, keywords.matched) == (0.0, 0.0, 3)
    others = rates.drop(index=[(dataset, intervention, "substring"), (dataset, intervention, "keywords")])
    assert (others["diff"] == 0).all() and (others.matched == 4).all()

    record = json.loads(b.file("candidates.json").read_text())
    record["model"]["fingerprint"] = "0" * 16
    b.file("candidates.json").write_text(json.dumps(record))
    comparison = compare_runs(a, b)
    assert comparison.same_model is False and "different models" in model_note(comparison, a, b)
    assert comparison.rates is not None  # still compared


def test_compare_refuses_runs_with_nothing_to_compare(finished_run, tiny_run, tmp_path):
    with pytest.raises(WorkbenchError, match="absent does not exist"):
        compare_runs(finished_run, RunDir(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="has no selection.json or evaluation.csv to compare"):
        compare_runs(RunDir(tmp_path / "empty"), finished_run)
    only_rates = RunDir(tmp_path / "only_rates")
    only_rates.path.mkdir()
    shutil.copy(finished_run.file("evaluation.csv"), only_rates.file("evaluation.csv"))
    with pytest.raises(WorkbenchError, match=f"nothing in common.*workbench evaluate --run {tiny_run.path}"):
        compare_runs(only_rates, tiny_run)
    selections_only = compare_runs(tiny_run, finished_run)
    assert selections_only.rates is None and selections_only.selections.same_cell.all()


def test_cli_report_and_compare(finished_run, tmp_path, capsys, monkeypatch):
    import workbench.models

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(workbench.models, "load_model", fail)
    assert main(["report", "--run", str(finished_run.path), "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html") and (tmp_path / "r.html").exists()
    assert main(["compare", str(finished_run.path), str(finished_run.path), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "selections (A vs B)" in out and "paired_low" in out and "note:" not in out
    assert (tmp_path / "cmp" / "rates.csv").exists()
    assert main(["compare", str(finished_run.path), str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent does not exist" in err[0]
