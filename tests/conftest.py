"""Shared fixtures. Tiers: unit tests need nothing; `model` tests load the real default model (offline);
`data` tests read the benchmark copies through WORKBENCH_DATA_DIR."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def stock_model():
    from workbench.models import load_model

    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def organism():
    """The registered model organism (stock + committed adapter), loaded once per session."""
    from workbench.models import load_model

    return load_model("smollm2-135m-safety")


@pytest.fixture(scope="session")
def selected_run(organism, tmp_path_factory):
    """A small real run on the organism: candidates from 32 bundled prompts per set, two layers at the last EOI
    position swept at λ=1 and 0, selected with a loose KL bound (so that something is always selected)."""
    from workbench.stages.extract import ExtractConfig, extract
    from workbench.stages.run_dir import RunDir
    from workbench.method.rule import SelectionRule
    from workbench.stages.select import select
    from workbench.stages.sweep import SweepConfig, run_sweep

    run = RunDir(tmp_path_factory.mktemp("selected_run"))
    extract(organism, ExtractConfig(n_train=32), run)
    rule = SelectionRule(max_ablation_kl=10.0, true_max_ablation_kl=10.0)
    run_sweep(organism, run, SweepConfig(lams=(1.0, 0.0), n_val=8, n_screen=4, n_finalists=2, layers=(9, 15),
                                         positions=(-1,)), rule)
    select(run, rule)
    return run


@pytest.fixture(scope="session")
def data_dir():
    from pathlib import Path

    root = os.environ.get("WORKBENCH_DATA_DIR")
    if not root:
        pytest.skip("WORKBENCH_DATA_DIR is not set (CI points it at ../shared/datasets)")
    return Path(root)
