"""`workbench datasets fetch` and the data directory: files fetched from a small HTTP server of our own (no internet)
and verified, kept on a second fetch, and every failure (a wrong digest, 404, an interrupted answer, no server) one
line that leaves nothing in the data directory; the preflight check's message; which sets a pipeline reads; and, in
the data tier, the real table against the real bytes and a fetch from a mirror of them."""

import hashlib
import socket
import threading
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.data import REGISTRY, availability, load_dataset, pinned_sources, require_available
from workbench.data_sources import PinnedFile, SourceTable
from workbench.errors import WorkbenchError
from workbench.fetch import fetch_file, fetch_sets
from workbench.paths import benchmark_data_dir, benchmark_data_location

GOOD = {"tiny/a.json": b'[{"instruction": "Say hi"}]\n', "tiny/sub/b.txt": b"one\ntwo\n"}
"""What the fake server serves, by path."""


class Mirror:
    """What the fake server answers: `files` by path, with `truncated` paths cut short after 4 bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.truncated: set[str] = set()
        self.requests: list[str] = []
        self.url = ""
        """The server's base URL, once it serves."""


class _Handler(BaseHTTPRequestHandler):
    mirror: Mirror

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.lstrip("/")
        self.mirror.requests.append(path)
        body = self.mirror.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in self.mirror.truncated:  # promise the whole file, send 4 bytes, hang up
            self.wfile.write(body[:4])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def serving(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror():
    state = Mirror(GOOD)
    handler = type("Handler", (_Handler,), {"mirror": state})
    with serving(handler) as url:
        state.url = url
        yield state


def pinned(path: str, body: bytes, url: str | None, licence: str = "MIT") -> PinnedFile:
    return PinnedFile(path, url, len(body), hashlib.sha256(body).hexdigest(), licence,
                      "" if url else "not on any public host")


def tiny_table(url: str, **sets: tuple[PinnedFile, ...]) -> SourceTable:
    """The fake server's good files as set `tiny`, plus `sets` (name -> its files)."""
    good = tuple(pinned(path, body, f"{url}/{path}") for path, body in GOOD.items())
    everything = {"tiny": good, **sets}
    files = {f.path: f for group in everything.values() for f in group}
    return SourceTable(files, {name: tuple(f.path for f in group) for name, group in everything.items()})


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ---- fetch ---------------------------------------------------------------------------------------------------------


def test_fetch_verifies_then_keeps_without_a_download(mirror, tmp_path):
    data, lines = tmp_path / "data", []
    done = fetch_sets(["tiny"], data, tiny_table(mirror.url), report=lines.append)
    assert [(f.path, f.action) for f in done] == [("tiny/a.json", "fetched"), ("tiny/sub/b.txt", "fetched")]
    assert {str(p.relative_to(data)): p.read_bytes() for p in files_in(data)} == GOOD
    assert lines == ["tiny (licence: MIT)", "  fetched tiny/a.json (28 bytes)", "  fetched tiny/sub/b.txt (8 bytes)"]
    assert len(mirror.requests) == 2

    again = fetch_sets(["tiny"], data, tiny_table(mirror.url))
    assert [f.action for f in again] == ["kept", "kept"] and len(mirror.requests) == 2  # no request at all


def test_a_damaged_copy_is_fetched_again(mirror, tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "a.json").write_bytes(b"[]\n")
    file = tiny_table(mirror.url).files["tiny/a.json"]
    assert fetch_file(file, tmp_path).action == "fetched"
    assert (tmp_path / "tiny" / "a.json").read_bytes() == GOOD["tiny/a.json"]


def test_wrong_hash_leaves_nothing(mirror, tmp_path):
    mirror.files["tiny/a.json"] = GOOD["tiny/a.json"].replace(b"hi", b"yo")  # same size, other bytes
    data = tmp_path / "data"
    with pytest.raises(WorkbenchError) as exc:
        fetch_sets(["tiny"], data, tiny_table(mirror.url))
    message = one_line(exc)
    assert message.startswith(f"tiny/a.json from {mirror.url}/tiny/a.json: sha256 ")
    assert f"expected {hashlib.sha256(GOOD['tiny/a.json']).hexdigest()}" in message
    assert not data.exists()  # no file, no temporary file, not even the folders made for it


def test_missing_file_is_a_404_error(mirror, tmp_path):
    del mirror.files["tiny/sub/b.txt"]
    data = tmp_path / "data"
    with pytest.raises(WorkbenchError) as exc:
        fetch_sets(["tiny"], data, tiny_table(mirror.url))
    assert one_line(exc) == (f"tiny/sub/b.txt from {mirror.url}/tiny/sub/b.txt: not found (HTTP 404): the source has "
                             "moved; give --base-url a mirror")
    assert files_in(data) == [data / "tiny" / "a.json"]  # the file before it is complete and verified; no trace of b
    assert not (data / "tiny" / "sub").exists()


def test_interrupted_download_leaves_nothing(mirror, tmp_path):
    mirror.truncated.add("tiny/a.json")
    data = tmp_path / "data"
    with pytest.raises(WorkbenchError) as exc:
        fetch_sets(["tiny"], data, tiny_table(mirror.url))
    message = one_line(exc)
    assert message.startswith(f"tiny/a.json from {mirror.url}/tiny/a.json: download interrupted (")
    assert "expected 28" in message and message.endswith("): run the fetch again")
    assert not data.exists()


def test_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(WorkbenchError) as exc:
        fetch_sets(["tiny"], tmp_path / "data", tiny_table(url))
    message = one_line(exc)
    assert message.startswith(f"tiny/a.json from {url}/tiny/a.json: cannot connect (")
    assert message.endswith("): check the network, or give --base-url a mirror")
    assert not (tmp_path / "data").exists()


def test_base_url_reads_a_mirror_laid_out_like_the_data_directory(mirror, tmp_path):
    # The table's URLs lead nowhere, and one file has no public source: a mirror serves both by their paths.
    hidden = pinned("tiny/sub/b.txt", GOOD["tiny/sub/b.txt"], None)
    table = tiny_table("http://127.0.0.1:9/nowhere", only_mirrored=(hidden,))
    done = fetch_sets(["tiny", "only_mirrored"], tmp_path, table, base_url=mirror.url + "/")
    assert [(f.action, f.url) for f in done] == [("fetched", f"{mirror.url}/tiny/a.json"),
                                                  ("fetched", f"{mirror.url}/tiny/sub/b.txt"), ("kept", None)]
    assert mirror.requests == ["tiny/a.json", "tiny/sub/b.txt"]


def test_sets_without_a_source_are_refused_before_any_download(mirror, tmp_path):
    hidden = pinned("tiny/c.csv", b"x\n", None)
    table = tiny_table(mirror.url, private=(hidden,), unpinned=())
    with pytest.raises(WorkbenchError) as exc:
        fetch_sets(["tiny", "private"], tmp_path, table)
    assert one_line(exc) == ("cannot fetch 'private': no public source for tiny/c.csv (not on any public host): put "
                             "its files in the data directory yourself")
    with pytest.raises(WorkbenchError, match=r"cannot fetch 'unpinned': no pinned source"):
        fetch_sets(["unpinned"], tmp_path, table, base_url=mirror.url)
    with pytest.raises(WorkbenchError, match=r"cannot fetch 'nope': not a benchmark set with a pinned source"):
        fetch_sets(["tiny", "nope"], tmp_path, table)
    assert mirror.requests == [] and files_in(tmp_path) == []


# ---- the real table ------------------------------------------------------------------------------------------------


def test_every_benchmark_set_has_a_pinned_public_source():
    table = pinned_sources()
    benchmark = [spec for spec in REGISTRY.values() if not spec.bundled]
    assert {spec.name for spec in benchmark} <= set(table.sets)
    for spec in benchmark:
        files = table.files_of(spec.name)
        assert files and table.no_source(spec.name) is None, spec.name
        assert all(f.url.startswith("https://raw.githubusercontent.com/") for f in files)
        assert all(f.path == spec.path or f.path.startswith(spec.path + "/") for f in files)
    assert len(table.files_of("mmlu")) == len(table.files_of("mmlu_dev")) == 57
    assert table.files_of("xstest_safe")[0].url == (
        "https://raw.githubusercontent.com/mainlp/False-Refusal-Mitigation/916dcac6fb1c5fcccc9581471370645763c65ce6/"
        "dataset/processed/xstest_safe.json")
    assert [f.path.rsplit("_", 1)[1] for f in table.files_of("xstest_labelled_completions")] == [
        "gpt4.csv", "llama2orig.csv", "mistralinstruct.csv"]
    assert table.licences("harmless_test") == ("CC BY-NC 4.0 (Alpaca data: non-commercial)",)


# ---- the data directory, availability and the preflight check ----------------------------------------------------


def test_data_directory_defaults_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    default = tmp_path / "cache" / "datasets"
    assert benchmark_data_location().path == default and not benchmark_data_location().from_env
    assert benchmark_data_dir(required=False) is None
    with pytest.raises(WorkbenchError, match=r"does not exist: run `workbench datasets fetch --paper`"):
        benchmark_data_dir()
    with pytest.raises(WorkbenchError, match=r"'xstest_safe' is not fetched: .* run `workbench datasets fetch "
                       r"xstest_safe`"):
        load_dataset("xstest_safe")
    default.mkdir()
    assert benchmark_data_dir() == benchmark_data_dir(required=False) == default
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "elsewhere"))
    assert benchmark_data_location().from_env
    with pytest.raises(WorkbenchError, match="elsewhere is not a directory"):
        benchmark_data_dir(required=False)


def test_require_available_names_every_missing_set_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    (tmp_path / "jailbreakbench" / "processed").mkdir(parents=True)
    (tmp_path / "jailbreakbench" / "processed" / "jailbreakbench.json").write_text("[]")
    require_available(["jailbreakbench", "bundled_harmful_train"])  # present and bundled: nothing to say
    with pytest.raises(WorkbenchError) as exc:
        require_available(["xstest_safe", "jailbreakbench", "wikitext2", "xstest_safe", "bundled_harmful"])
    assert one_line(exc) == (f"benchmark data missing from {tmp_path} (from WORKBENCH_DATA_DIR): xstest_safe, "
                             "wikitext2: run `workbench datasets fetch xstest_safe wikitext2`")
    other = tmp_path / "other"
    with pytest.raises(WorkbenchError) as exc:
        require_available(["mmlu"], data_dir=other)
    assert one_line(exc) == (f"benchmark data missing from {other}: mmlu: run `workbench datasets fetch mmlu "
                             f"--data-dir {other}`")


def test_require_available_says_when_there_is_no_public_source(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    real = pinned_sources()
    hidden = pinned("oktest/processed/oktest.json", b"[]", None)
    table = SourceTable({**real.files, hidden.path: hidden}, {**real.sets, "oktest": (hidden.path,)})
    assert availability("oktest", table=table).reason == (
        "missing, and no public source for oktest/processed/oktest.json (not on any public host): put "
        "oktest/processed/oktest.json in the data directory yourself")
    with pytest.raises(WorkbenchError) as exc:
        require_available(["oktest", "tdc2023"], table=table)
    assert one_line(exc).endswith(": oktest, tdc2023: run `workbench datasets fetch tdc2023`; oktest: no public "
                                  "source, put the files in the data directory yourself")


def test_a_directory_set_needs_every_pinned_file(tmp_path):
    (tmp_path / "mmlu" / "dev").mkdir(parents=True)
    (tmp_path / "mmlu" / "dev" / "anatomy_dev.csv").write_text("question\n")
    assert not availability("mmlu_dev", tmp_path).available  # 1 of 57 files is not the set


# ---- which sets a pipeline reads -------------------------------------------------------------------------------------


def test_pipeline_datasets_follow_the_stages():
    from dataclasses import replace

    from workbench.eval.capability import CapabilityConfig
    from workbench.method.rule import SelectionRule
    from workbench.stages.data_needs import paper_datasets, pipeline_datasets
    from workbench.stages.evaluate import EvalConfig
    from workbench.stages.extract import ExtractConfig
    from workbench.stages.pipeline import PipelineConfig

    paper = ("or_bench_hard_test", "xstest_refused", "xstest_safe", "oktest_100", "harmful_test", "jailbreakbench",
             "xstest_unsafe", "wikitext2", "arc_challenge")
    assert paper_datasets() == paper
    bundled = ("bundled_harmful_train", "bundled_harmless_train", "bundled_pseudo_harmful_train",
               "bundled_pseudo_harmful_val", "bundled_harmful_val", "bundled_harmless_val")
    assert pipeline_datasets(PipelineConfig()) == bundled + paper
    assert pipeline_datasets(PipelineConfig(stages=("extract", "sweep", "select"))) == bundled
    config = PipelineConfig(extract=ExtractConfig(harmful="my_prompts.jsonl"), stages=("extract", "evaluate",
                            "capability"), evaluate=EvalConfig(datasets=("oktest",), ablation=("harmless_mean",)),
                            capability=CapabilityConfig(tasks=("mmlu", "truthfulqa")))
    assert pipeline_datasets(config) == ("bundled_harmless_train", "bundled_pseudo_harmful_train", "oktest", "mmlu",
                                         "mmlu_dev", "truthfulqa_answers")  # a prompts file is not a dataset
    rerank = replace(PipelineConfig(), select=SelectionRule(rerank_top_k=2), stages=("select",))
    assert pipeline_datasets(rerank) == ("bundled_pseudo_harmful_val", "bundled_harmful_val")


def test_every_pipeline_stage_says_what_it_reads():
    from workbench.stages.data_needs import STAGE_DATASETS
    from workbench.stages.pipeline import STAGES

    assert set(STAGE_DATASETS) == set(STAGES)


def test_paper_sets_are_what_make_run_reads():
    from workbench.stages.config_file import from_dict, load_toml, pop_model_keys
    from workbench.stages.data_needs import paper_datasets, pipeline_datasets
    from workbench.stages.pipeline import PipelineConfig

    data = load_toml("configs/default.toml")
    pop_model_keys(data, "configs/default.toml")
    config = from_dict(PipelineConfig, data, where="configs/default.toml")
    assert tuple(n for n in pipeline_datasets(config) if not REGISTRY[n].bundled) == paper_datasets()


def test_capability_task_datasets_are_what_score_task_reads(monkeypatch):
    from types import SimpleNamespace

    import workbench.eval.capability as capability
    from workbench.eval.capability import TASK_DATASETS

    assert set(TASK_DATASETS) == set(capability.TASKS)
    for task, expected in TASK_DATASETS.items():
        read: list[str] = []
        monkeypatch.setattr(capability, "load_dataset", lambda name, read=read: read.append(name) or [])
        tokenizer = SimpleNamespace(pad_token_id=0, encode=lambda *a, **k: [])
        try:
            capability.score_task(task, lambda *a, **k: None, tokenizer, capability.CapabilityConfig(), False)
        except Exception:
            pass  # nothing to score: only which datasets it asked for matters here
        assert tuple(read) == expected, task


# ---- the command line ------------------------------------------------------------------------------------------------


def test_datasets_names_the_directory_and_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"benchmark data directory: {tmp_path} (from WORKBENCH_DATA_DIR)"
    row = next(line for line in out if line.split()[0] == "xstest_safe")
    assert row.split()[3] == "no" and row.endswith("(missing: run `workbench datasets fetch xstest_safe`)")
    assert next(line for line in out if line.split()[0] == "bundled_harmful").split()[3] == "yes"

    monkeypatch.delenv("WORKBENCH_DATA_DIR")
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["datasets"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"benchmark data directory: {tmp_path / 'cache' / 'datasets'} (the default, <workbench "
                     "cache>/datasets; WORKBENCH_DATA_DIR is not set) (does not exist yet)")


def test_datasets_fetch_refusals_are_one_line(tmp_path, capsys):
    assert main(["datasets", "fetch", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("workbench: error: datasets fetch: name the sets to fetch, or give "
                                               "--paper or --all (`workbench datasets` lists the sets)")
    assert main(["datasets", "fetch", "nope", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot fetch 'nope'" in err[0]
    assert files_in(tmp_path) == []


# ---- the data tier: the real table against the real bytes ----------------------------------------------------------


@pytest.mark.data
def test_pinned_digests_are_the_data_directory_bytes(data_dir):
    from workbench.fetch import is_intact

    table = pinned_sources()
    assert len(table.files) == 143
    changed = [path for path, file in table.files.items() if not is_intact(file, data_dir)]
    assert changed == []


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.data
def test_fetch_from_a_mirror_then_load_through_the_registry(data_dir, tmp_path, monkeypatch, capsys):
    target = tmp_path / "data"
    with serving(partial(_QuietFiles, directory=str(data_dir))) as url:
        assert main(["datasets", "fetch", "xstest_safe", "oktest_100", "--base-url", url,
                     "--data-dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert "  fetched xstest/processed/xstest_safe.json (56,865 bytes)" in out
    assert "2 file(s) fetched, 0 kept, all verified by sha256" in out
    assert [str(p.relative_to(target)) for p in files_in(target)] == ["oktest/processed/oktest_100.json",
                                                                      "xstest/processed/xstest_safe.json"]
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(target))
    rows = load_dataset("xstest_safe")
    assert len(rows) == 250 and rows == load_dataset("xstest_safe", data_dir)
    require_available(["xstest_safe", "oktest_100"])
