"""Shared fixtures and the test tiers.

Every test is in exactly one tier (a pytest marker): `unit` (no real model, no benchmark data: exact math and the
tiny random chat model of `tests/tiny_model.py`, fixture `tiny`), `model` (loads the real default model or the
organism, offline) or `data` (reads the benchmark copies through WORKBENCH_DATA_DIR, with or without a model);
`slow` marks tests that take more than about a minute. Unmarked tests are `unit`; collection fails if a test is in
two tiers, a `unit` test uses a real model's fixture, or a test outside `data` uses `data_dir`.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402

import pytest  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"
TIERS = ("unit", "model", "data")
REAL_MODEL_FIXTURES = frozenset({"organism", "planted", "wired", "stock_model", "selected_run"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    problems = []
    for item in items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if not tiers:
            item.add_marker(pytest.mark.unit)
            tiers = {"unit"}
        fixtures = set(getattr(item, "fixturenames", ()))
        if len(tiers) > 1:
            problems.append(f"{item.nodeid} is marked {' and '.join(sorted(tiers))}: give it exactly one tier")
        elif tiers == {"unit"} and fixtures & REAL_MODEL_FIXTURES:
            used = ", ".join(sorted(fixtures & REAL_MODEL_FIXTURES))
            problems.append(f"{item.nodeid} is a unit test but uses {used}: mark it `model` (or use `tiny`)")
        elif "data_dir" in fixtures and tiers != {"data"}:
            problems.append(f"{item.nodeid} uses data_dir but is marked {tiers.pop()}: mark it `data`")
    if problems:
        raise pytest.UsageError("test tiers:\n  " + "\n  ".join(problems))


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
def planted():
    """The planted-trigger organism (stock + committed adapter of `data/organism_planted`), loaded once per session."""
    from workbench.models import load_model

    return load_model("smollm2-135m-planted")


@pytest.fixture(scope="session")
def wired():
    """The wired control (the safety organism + the three neurons of `data/organism_wired`), loaded once per session."""
    from workbench.models import load_model

    return load_model("smollm2-135m-wired")


@pytest.fixture(scope="session")
def _selected_run_once(organism, tmp_path_factory):
    """A small real run on the organism: candidates from 32 bundled prompts per set, two layers at the last EOI
    position swept at λ=1 and 0, selected with a loose KL bound (so that something is always selected)."""
    from workbench.method.rule import SelectionRule
    from workbench.stages.extract import ExtractConfig, extract
    from workbench.stages.run_dir import RunDir
    from workbench.stages.select import select
    from workbench.stages.sweep import SweepConfig, run_sweep

    run = RunDir(tmp_path_factory.mktemp("selected_run"))
    extract(organism, ExtractConfig(n_train=32), run)
    rule = SelectionRule(max_ablation_kl=10.0, r_max_ablation_kl=10.0)
    run_sweep(organism, run, SweepConfig(lams=(1.0, 0.0), n_val=8, n_screen=4, n_finalists=2, layers=(9, 15),
                                         positions=(-1,)), rule)
    select(run, rule)
    return run


@pytest.fixture
def selected_run(_selected_run_once, tmp_path):
    """A fresh copy of the organism's small run for each test (tests write evaluations into it)."""
    from workbench.stages.run_dir import RunDir

    return RunDir(shutil.copytree(_selected_run_once.path, tmp_path / "selected_run"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The tiny random chat model's checkpoint directory (`tests/tiny_model.py`), built once per session."""
    from tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    """The tiny random chat model, loaded through the real loader (local directory -> TransformerLens bridge)."""
    from workbench.models import load_model

    return load_model(str(tiny_checkpoint))


@pytest.fixture(scope="session")
def _tiny_run_once(tiny, tmp_path_factory):
    from tiny_model import TINY_RUN_EXTRACT, TINY_RUN_RULE, TINY_RUN_SWEEP

    from workbench.stages.extract import extract
    from workbench.stages.run_dir import RunDir
    from workbench.stages.select import select
    from workbench.stages.sweep import run_sweep

    run = RunDir(tmp_path_factory.mktemp("tiny_run"))
    extract(tiny, TINY_RUN_EXTRACT, run)
    run_sweep(tiny, run, TINY_RUN_SWEEP, TINY_RUN_RULE)
    select(run, TINY_RUN_RULE)
    return run


@pytest.fixture
def tiny_run(_tiny_run_once, tmp_path):
    """A fresh copy, for each test, of a run on the tiny model: extract, sweep (λ = 1 and 0, every layer and EOI
    position) and select with `tiny_model.TINY_RUN_*`."""
    from workbench.stages.run_dir import RunDir

    return RunDir(shutil.copytree(_tiny_run_once.path, tmp_path / "tiny_run"))


@pytest.fixture(scope="session")
def data_dir():
    from pathlib import Path

    root = os.environ.get("WORKBENCH_DATA_DIR")
    if not root:
        pytest.skip("WORKBENCH_DATA_DIR is not set (CI points it at ../shared/datasets)")
    return Path(root)
