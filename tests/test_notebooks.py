"""The notebooks: committed without outputs, written against the public API only (`import workbench as wb`), with the
model, device and dtype set in their first code cell. `00_api` builds its own small run on the wired organism from
prompt lists; the others open a finished run (`wb.open_run`). All execute top to bottom (WORKBENCH_NOTEBOOK_SMALL=1),
01–05 against a small real run on the organism, built once per session."""

import ast
import json
import re
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.paths import REPO_ROOT
from workbench.stages.open_run import RUN_ENV, open_run, run_path

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
API_NOTEBOOK = "00_api"
"""Builds its own run from prompt lists; every other notebook opens a finished one."""
RUN_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem != API_NOTEBOOK]
PLOTLY = "application/vnd.plotly.v1+json"


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def imported_modules(source: str) -> set[str]:
    """Every module a cell's code imports (`import a.b` and `from a.b import c` both give "a.b")."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def test_notebooks_are_stripped():
    assert len(NOTEBOOKS) >= 6
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
            assert cell.get("execution_count") is None, f"{path.name}: commit notebooks without execution counts"


def test_notebooks_open_the_run_and_hard_code_no_cell():
    assert [p.stem for p in NOTEBOOKS][0] == API_NOTEBOOK and len(RUN_NOTEBOOKS) >= 5
    for path in RUN_NOTEBOOKS:
        code = "\n".join(code_cells(path))
        assert "tempfile" not in code and "extract(" not in code and "run_sweep(" not in code, path.name
        assert "(-6, 22)" not in code and "LAYER = " not in code, path.name
        assert "wb.open_run()" in code, path.name


def test_notebooks_explain_every_plot_and_draw_with_the_library():
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join(code_cells(path))
        assert "plotly" not in code and "go.Figure(" not in code, f"{path.name}: draw with wb.plot"
        kinds = [c["cell_type"] for c in cells]
        assert all(kinds[k - 1] == "markdown" for k, c in enumerate(cells) if c["cell_type"] == "code"
                   and any(f in "".join(c["source"]) for f in (".show()", "display("))), \
            f"{path.name}: every plot or table follows a markdown cell that says what it shows"


def test_notebooks_use_only_the_public_api():
    for path in NOTEBOOKS:
        cells = code_cells(path)
        modules = set().union(*map(imported_modules, cells))
        internal = sorted(m for m in modules if m.startswith("workbench."))
        assert not internal, f"{path.name} imports {internal}: use `import workbench as wb` and wb.<name>"
        assert "import workbench as wb" in "\n".join(cells), path.name
    api = set().union(*map(imported_modules, code_cells(next(p for p in NOTEBOOKS if p.stem == API_NOTEBOOK))))
    assert api == {"os", "pandas", "IPython.display", "workbench"}  # wb., pandas and display only


def test_api_notebook_runs_the_method_from_prompt_lists():
    code = "\n".join(code_cells(next(p for p in NOTEBOOKS if p.stem == API_NOTEBOOK)))
    for call in ("wb.prompts(", "wb.extract(", "wb.sweep(", "wb.select(", "wb.applied(", "wb.Ablation(",
                 "wb.generate(", "wb.refusal_scores(", "wb.plot.sweep_heatmaps(", "wb.diagnose(",
                 "wb.plot.diagnostics_heatmaps("):
        assert call in code, f"00_api does not call {call}"
    assert "open_run" not in code and 'MODEL = "smollm2-135m-wired"' in code


def test_model_device_and_dtype_come_from_the_first_code_cell():
    settings = re.compile(r"^(MODEL|DEVICE|DTYPE) = ", re.MULTILINE)
    loading = 0
    for path in NOTEBOOKS:
        cells = code_cells(path)
        loads = [m for c in cells for m in re.findall(r"wb\.load_model\(([^\n]*)\)", c)]
        if not loads:
            continue
        loading += 1
        assert sorted(settings.findall(cells[0])) == ["DEVICE", "DTYPE", "MODEL"], \
            f"{path.name}: set MODEL, DEVICE and DTYPE in the first code cell"
        assert not any(settings.search(c) for c in cells[1:]), f"{path.name}: settings only in the first code cell"
        assert all("device=DEVICE, dtype=DTYPE" in args for args in loads), \
            f"{path.name}: load every model with device=DEVICE, dtype=DTYPE: {loads}"
    assert loading >= 4  # 00, 01, 02 and 05 load a model


def test_open_run_default_env_and_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_path() == REPO_ROOT / "runs" / "default"  # relative: from the repository root
    monkeypatch.setenv(RUN_ENV, str(tmp_path / "absent"))
    with pytest.raises(WorkbenchError, match=r"no finished run at .*absent \(does not exist\): run `make run`"):
        open_run()
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv(RUN_ENV, "mine")  # relative to the working directory when it exists there
    assert run_path() == tmp_path / "mine"
    with pytest.raises(WorkbenchError, match=r"\(has no selection\.json\): run `make run`.*or set WORKBENCH_RUN"):
        open_run()
    (tmp_path / "mine" / "selection.json").write_text("{}")
    assert open_run().path == tmp_path / "mine"
    assert open_run(tmp_path / "mine", needs=()).path == tmp_path / "mine"  # an explicit path wins over the env


@pytest.fixture(scope="session")
def notebook_run(organism, tmp_path_factory) -> Path:
    """A small finished run on the organism: extract from 32 prompts per set; a sweep of 4 layers × 3 positions at
    λ ∈ {1, 0} with a loose KL bound (so that both λ select a cell); evaluation on the bundled test sets (4 prompts
    each, 16 new tokens, α = 1); no capability or figures stage (the notebooks must do without them)."""
    from workbench.method.rule import SelectionRule
    from workbench.stages.evaluate import EvalConfig
    from workbench.stages.extract import ExtractConfig
    from workbench.stages.pipeline import PipelineConfig, run_pipeline
    from workbench.stages.sweep import SweepConfig

    config = PipelineConfig(
        extract=ExtractConfig(n_train=32),
        sweep=SweepConfig(lams=(1.0, 0.0), n_val=8, n_screen=4, n_finalists=2, min_finalists=1,
                          layers=(10, 16, 22, 26), positions=(-6, -5, -1)),
        select=SelectionRule(max_ablation_kl=1.0, r_max_ablation_kl=1.0),
        evaluate=EvalConfig(datasets=("bundled_harmful_test", "bundled_pseudo_harmful_test", "bundled_harmless_test"),
                            alphas=(1.0,), limit=4, max_new_tokens=16),
        stages=("extract", "sweep", "select", "evaluate"),
    )
    path = tmp_path_factory.mktemp("notebook_run")
    selection = run_pipeline(organism, path, config)
    assert sorted(s["lam"] for s in selection["selections"]) == [0.0, 1.0]
    assert not (path / "capability.csv").exists()
    return path


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_on_a_finished_run(path, notebook_run, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbconvert.preprocessors import ExecutePreprocessor

    monkeypatch.setenv("WORKBENCH_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(RUN_ENV, str(notebook_run))
    notebook = nbformat.read(path, as_version=4)
    ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(notebook, {"metadata": {"path": str(tmp_path)}})
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]  # (the preprocessor also raises on one)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    figures = [o for o in outputs if PLOTLY in o.get("data", {})]
    assert figures, "every notebook draws a library figure"
    if path.stem == API_NOTEBOOK:  # its own run from prompt lists: the whole model's grids, Fig. 4, diagnostics
        assert "r and w grids: (6, 30, 576) (EOI positions, layers, d_model)" in text
        assert len(figures) == 2 and f"{notebook_run}" not in text
        return
    assert f"{notebook_run}" in text  # the run passed through WORKBENCH_RUN, not runs/default
    if path.stem == "02_candidates":
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert html.count('id="circuits-vis-') == 3 and "ColoredTokensMulti" in html  # the per-token view, 3 prompts
    if path.stem == "03_lambda_calibration":
        assert "no capability.csv in this run" in text  # the small run has none: said, and the panel skipped
