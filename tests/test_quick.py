"""The quick start, end to end: `workbench run --config configs/quick.toml` on the wired control, from the
bundled prompt sets only (model tier, slow)."""

import json

import pandas as pd
import pytest

from workbench.cli import main
from workbench.paths import REPO_ROOT
from workbench.stages.run_dir import RunDir
from workbench.stages.status import stage_states

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_quick_config_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "no-benchmarks"))  # it needs no benchmark data
    (tmp_path / "no-benchmarks").mkdir()
    run = RunDir(tmp_path / "quick")
    assert main(["run", "--config", str(REPO_ROOT / "configs" / "quick.toml"), "--run", str(run.path)]) == 0
    selection = json.loads(run.file("selection.json").read_text())["selections"]
    assert [s["lam"] for s in selection] == [1.0] and 10 <= selection[0]["layer"] <= 16
    assert selection[0]["ablation_refusal_score_pseudo_harmful"] < 0 < selection[0]["ablation_refusal_score_harmful"]
    for name in ("fig4_sweep", "fig4_diagnostics", "fig3_lambda"):
        assert run.file(f"figures/{name}.html").exists(), name
    table = pd.read_csv(run.file("figures/table1.csv"), index_col=0)
    assert list(table.n) == [16, 16, 16]
    cooking, harmful, harmless = (table.loc[d] for d in ("bundled_cooking_test", "bundled_harmful_test",
                                                          "bundled_harmless_test_no_food"))
    # the planted false refusal goes; harmless prompts stay answered; most harmful prompts stay refused
    assert cooking.baseline <= 0.25 and cooking["ablate_w_lam1.0"] >= cooking.baseline + 0.5
    assert harmless["ablate_w_lam1.0"] >= 0.9
    assert harmful["ablate_w_lam1.0"] <= 0.25
    states = {s.stage: s.state for s in stage_states(run)}
    assert states == {"extract": "done", "token_means": "not needed", "sweep": "done", "select": "done",
                      "diagnose": "done", "evaluate": "done", "capability": "not run", "gate": "not run",
                      "frontier": "not run", "figures": "done"}
