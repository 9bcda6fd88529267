"""`workbench evaluate --backend openai` against a small OpenAI-compatible server written here: `/v1/models` and
`/v1/completions` answered by the tiny model itself, with the requested intervention applied by hooks (through the
run's catalogue) and greedy decoding token by token, as vLLM would answer with one LoRA adapter per intervention.
The backend gives the in-process backend's completions and evaluation.csv byte for byte; bad servers give one-line
errors, and an interrupted call keeps the finished pairs for the next one."""

import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import torch

from workbench.errors import WorkbenchError

BASE = "tiny-base"
DATASETS = ("bundled_pseudo_harmful_test", "bundled_harmful_test")


class TinyServer:
    """An OpenAI-compatible server over the tiny model; its failure modes are switched on by the test."""

    def __init__(self, lm, items):
        self.lm = lm
        self.models = {BASE: items["baseline"], **{name: item for name, item in items.items() if name != "baseline"}}
        self.requests: list[dict] = []
        self.answer_as: str | None = None
        """Answer every completion as this model name (a server serving the wrong weights)."""
        self.fail_next = 0
        """Answer this many completion requests with HTTP 500 first."""
        self.api_key: str | None = None
        """Answer 401 to requests without `Authorization: Bearer <api_key>`."""
        self.hang: set[str] = set()
        """Model names whose requests get no answer (until the server shuts down)."""
        self.released = threading.Event()
        self.model_lock, self.state_lock = threading.Lock(), threading.Lock()

    def listing(self) -> dict:
        return {"object": "list", "data": [{"id": BASE, "object": "model", "parent": None}]
                + [{"id": name, "object": "model", "parent": BASE} for name in self.models if name != BASE]}

    def complete(self, body: dict) -> tuple[int, dict]:
        with self.state_lock:
            self.requests.append(body)
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500, {"error": "engine overloaded"}
        if body["model"] in self.hang:
            self.released.wait(60)
            return 503, {"error": "shutting down"}
        if body["model"] not in self.models:
            return 404, {"error": {"message": f"The model `{body['model']}` does not exist."}}
        if body.get("temperature") != 0 or body.get("n", 1) != 1:
            return 400, {"error": "this server decodes greedily only"}
        return 200, {"id": "cmpl-1", "object": "text_completion", "model": self.answer_as or body["model"],
                     "choices": [{"index": 0, "text": self.greedy(body), "finish_reason": "stop"}]}

    @torch.inference_mode()
    def greedy(self, body: dict) -> str:
        """Greedy decoding one token at a time (no cache, no padding) under the model's intervention hooks."""
        from workbench.interventions.hooks import applied

        tokenizer = self.lm.tokenizer
        prompt = tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
        stop = set(body.get("stop_token_ids", [])) | {tokenizer.eos_token_id}
        out: list[int] = []
        with self.model_lock, applied(self.lm, self.models[body["model"]].intervention):
            for _ in range(body["max_tokens"]):
                token = int(self.lm.model(torch.tensor([prompt + out]))[0, -1].argmax())
                if token in stop:
                    break
                out.append(token)
        return tokenizer.decode(out, skip_special_tokens=body.get("skip_special_tokens", True))

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout)

            def authorized(self) -> bool:
                if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self.answer(401, {"error": "invalid api key"})
                return False

            def do_GET(self):
                if not self.authorized():
                    return
                if self.path == "/v1/models":
                    self.answer(200, server.listing())
                else:
                    self.answer(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.authorized():
                    return
                if self.path != "/v1/completions":
                    self.answer(404, {"error": "not found"})
                    return
                self.answer(*server.complete(body))

        return Handler

    def completion_models(self) -> list[str]:
        return [r["model"] for r in self.requests]


@pytest.fixture
def catalogue(tiny, tiny_run):
    from workbench.interventions.catalogue import build_interventions

    selection = tiny_run.read_json("selection.json")
    items = build_interventions(selection, tiny_run.path, tiny.info.fingerprint, tiny.info.d_model, alphas=(1.0,))
    return {item.name: item for item in items}


@pytest.fixture
def server(tiny, catalogue):
    tiny_server = TinyServer(tiny, catalogue)
    http = ThreadingHTTPServer(("127.0.0.1", 0), tiny_server.handler())
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    tiny_server.url = f"http://127.0.0.1:{http.server_address[1]}"
    yield tiny_server
    tiny_server.released.set()
    http.shutdown()
    http.server_close()


def copy_run(run, path):
    from workbench.stages.run_dir import RunDir

    return RunDir(shutil.copytree(run.path, path))


def test_openai_backend_matches_in_process(tiny, tiny_run, server, catalogue, tmp_path, capsys):
    from workbench.eval.backends import OpenAIBackend
    from workbench.stages.evaluate import EvalConfig, evaluate

    served = copy_run(tiny_run, tmp_path / "served")
    config = EvalConfig(datasets=DATASETS, alphas=(1.0,), limit=4, max_new_tokens=12)
    local = evaluate(tiny, tiny_run, config, progress=False)
    # No --served-base: the server lists one base model (the adapters name it as their parent).
    backend = OpenAIBackend(server.url + "/v1/", concurrency=4)
    remote = evaluate(tiny, served, config, progress=False, backend=backend)
    assert f"baseline -> served model '{BASE}'" in capsys.readouterr().out
    pd.testing.assert_frame_equal(remote, local)
    assert served.file("evaluation.csv").read_bytes() == tiny_run.file("evaluation.csv").read_bytes()
    files = sorted(p.relative_to(tiny_run.path) for p in tiny_run.path.glob("completions/*/*.jsonl"))
    assert len(files) == len(catalogue) * len(DATASETS) == 16
    for name in files:
        assert (served.path / name).read_bytes() == (tiny_run.path / name).read_bytes(), name
        meta = json.loads((served.path / name.with_suffix(".meta.json")).read_text())
        local_meta = json.loads((tiny_run.path / name.with_suffix(".meta.json")).read_text())
        assert (meta.pop("backend"), local_meta.pop("backend")) == (f"openai {server.url}", "in-process")
        assert meta == local_meta
    # The comparison means something: the completions are not empty and the interventions change them.
    rows = {str(name): [json.loads(line)["response"] for line in (served.path / name).read_text().splitlines()]
            for name in files}
    assert all(len(response) > 0 for responses in rows.values() for response in responses)
    assert len({tuple(responses) for responses in rows.values()}) >= 8
    # One request per prompt and intervention, baseline as the base model, each prompt as our template renders it.
    models = server.completion_models()
    assert sorted(set(models)) == sorted([BASE, *(n for n in catalogue if n != "baseline")])
    assert len(models) == 16 * 4 and models.count(BASE) == 8
    prompts = {r["prompt"] for r in server.requests}
    from workbench.data import load_dataset

    assert prompts == {tiny.chat.format(p.instruction) for d in DATASETS for p in load_dataset(d, limit=4)}
    assert {(r["max_tokens"], r["temperature"], r["add_special_tokens"]) for r in server.requests} == {(12, 0.0, False)}
    # Finished pairs are not sent again, whichever backend made them.
    server.requests.clear()
    evaluate(tiny, served, config, progress=False, backend=backend)
    assert server.requests == []


def test_openai_backend_bad_servers(tiny, tiny_run, server, monkeypatch):
    from workbench.eval.backends import OpenAIBackend
    from workbench.stages.evaluate import EvalConfig, evaluate

    config = EvalConfig(datasets=DATASETS[:1], interventions=("baseline",), limit=2, max_new_tokens=4)

    def run(**options):
        return evaluate(tiny, tiny_run, config, progress=False,
                        backend=OpenAIBackend(server.url, **{"served_base": BASE, "backoff_s": 0.01, **options}))

    # Nothing listening: one line naming the URL, after the retries.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WorkbenchError) as err:
        evaluate(tiny, tiny_run, config, progress=False,
                 backend=OpenAIBackend(f"http://127.0.0.1:{port}", served_base=BASE, retries=1, backoff_s=0.01))
    assert f"http://127.0.0.1:{port}" in str(err.value) and "after 2 attempts" in str(err.value)
    assert "\n" not in str(err.value)
    # A server answering for another model.
    server.answer_as = "someone-else"
    with pytest.raises(WorkbenchError, match=f"answered a request for model '{BASE}' as model 'someone-else'"):
        run()
    server.answer_as = None
    # HTTP 500: retried, then an error.
    server.fail_next, server.requests = 10, []
    with pytest.raises(WorkbenchError, match=r"after 3 attempts: HTTP 500: .*engine overloaded"):
        run(retries=2, concurrency=1)
    assert server.completion_models()[:3] == [BASE] * 3 and not tiny_run.file("evaluation.csv").exists()
    # Names the server does not serve are refused before any generation.
    server.requests = []
    with pytest.raises(WorkbenchError, match="does not serve baseline \\(as nope\\)"):
        run(served_base="nope")
    del server.models["ablate_r"]
    with pytest.raises(WorkbenchError, match="does not serve ablate_r .*--lora-modules"):
        evaluate(tiny, tiny_run, EvalConfig(datasets=DATASETS[:1], interventions=("ablate_r",), limit=2),
                 progress=False, backend=OpenAIBackend(server.url, served_base=BASE))
    assert server.requests == []
    # Fewer 500s than attempts: retried through.
    server.fail_next = 2
    run(retries=2, concurrency=1)
    assert server.completion_models() == [BASE] * (2 + 2)
    # A server that wants an API key: refused without it, served with it (read from the environment).
    tiny_run.file(f"completions/{DATASETS[0]}/baseline.meta.json").unlink()
    server.api_key, server.requests = "s3cret", []
    with pytest.raises(WorkbenchError, match="HTTP 401: it wants an API key \\(give --api-key-env NAME\\)"):
        run(retries=0)
    monkeypatch.setenv("WORKBENCH_TEST_KEY", "s3cret")
    evaluate(tiny, tiny_run, config, progress=False,
             backend=OpenAIBackend.from_env(server.url, "WORKBENCH_TEST_KEY", served_base=BASE))
    assert server.completion_models() == [BASE] * 2
    # Bad options.
    with pytest.raises(WorkbenchError, match="http:// or https://"):
        OpenAIBackend("localhost:8000")
    with pytest.raises(WorkbenchError, match="--concurrency"):
        OpenAIBackend(server.url, concurrency=0)
    monkeypatch.delenv("WORKBENCH_TEST_KEY", raising=False)
    with pytest.raises(WorkbenchError, match="WORKBENCH_TEST_KEY: that environment variable is not set"):
        OpenAIBackend.from_env(server.url, "WORKBENCH_TEST_KEY")


def test_a_timeout_keeps_finished_pairs_and_the_next_call_resumes(tiny, tiny_run, server):
    from workbench.eval.backends import OpenAIBackend
    from workbench.stages.evaluate import EvalConfig, evaluate

    names = ("baseline", "ablate_w_lam1.0", "ablate_r")
    config = EvalConfig(datasets=DATASETS[:1], interventions=names, limit=3, max_new_tokens=6)
    server.hang = {"ablate_w_lam1.0"}
    backend = OpenAIBackend(server.url, served_base=BASE, concurrency=1, timeout_s=2.0, retries=0)
    with pytest.raises(WorkbenchError, match="no answer within --timeout 2 s"):
        evaluate(tiny, tiny_run, config, progress=False, backend=backend)
    written = sorted(p.name for p in tiny_run.path.glob(f"completions/{DATASETS[0]}/*.meta.json"))
    assert written == ["baseline.meta.json"]
    server.hang, server.requests = set(), []
    frame = evaluate(tiny, tiny_run, config, progress=False, backend=backend)
    models = server.completion_models()
    assert sorted(models) == ["ablate_r"] * 3 + ["ablate_w_lam1.0"] * 3
    assert sorted(frame.intervention) == sorted(names * 2) and (frame.n == 3).all()  # two judges each


def test_evaluate_cli_with_the_openai_backend(tiny_run, server, capsys):
    from workbench.cli import main

    base = ["evaluate", "--run", str(tiny_run.path), "--datasets", DATASETS[1], "--limit", "2",
            "--max-new-tokens", "4", "--interventions", "baseline", "ablate_w_lam1.0"]
    assert main([*base, "--backend", "openai"]) == 2
    assert "--backend openai needs --base-url URL" in capsys.readouterr().err
    assert main([*base, "--base-url", server.url]) == 2
    assert "--base-url is for --backend openai" in capsys.readouterr().err
    assert main([*base, "--backend", "openai", "--base-url", server.url, "--served-base", BASE, "--concurrency", "2",
                 "--timeout", "30", "--retries", "1"]) == 0
    assert sorted(server.completion_models()) == sorted([BASE, BASE, "ablate_w_lam1.0", "ablate_w_lam1.0"])
    meta = json.loads(tiny_run.file(f"completions/{DATASETS[1]}/ablate_w_lam1.0.meta.json").read_text())
    assert meta["backend"] == f"openai {server.url}" and meta["n"] == 2
    evaluation = pd.read_csv(tiny_run.file("evaluation.csv"))
    assert sorted(evaluation.judge) == ["keywords", "keywords", "substring", "substring"]  # the configured judge too


def test_openai_backend_routes_a_gated_intervention(tiny, tiny_run, server, catalogue):
    """A gated w′ on a server: the workbench takes each prompt's gate decision, then sends the prompts the gate opens
    for to the w′ adapter and the rest to the base model; the completions equal the hooked model's gated generation."""
    from workbench.data import load_dataset
    from workbench.eval.backends import GenerationJob, OpenAIBackend
    from workbench.eval.generation import hooked_generate
    from workbench.interventions.catalogue import NamedIntervention
    from workbench.interventions.gate import Gate, Gated, decide, gate_scores

    inner = catalogue["ablate_w_lam1.0"].intervention
    probe = torch.randn(tiny.info.d_model, generator=torch.Generator().manual_seed(3))
    meta = {"fingerprint": tiny.info.fingerprint, "model": tiny.info.name}
    prompts = [p.instruction for p in load_dataset("bundled_pseudo_harmful_test", limit=6)]
    median = float(gate_scores(tiny, Gate(probe, 2, -1, 0.0, 0.05, meta), prompts).median())
    gate = Gate(probe, 2, -1, median, 0.05, meta)
    gated = Gated(inner, gate, "gated_ablate_w_lam1.0")
    open_rows = decide(tiny, gate, prompts)
    assert 0 < int(open_rows.sum()) < len(prompts)
    job = GenerationJob("bundled_pseudo_harmful_test", NamedIntervention(gated.label, gated), tuple(prompts))
    (_, remote), = list(OpenAIBackend(server.url, concurrency=3).generate(tiny, [job], 10, progress=False))
    sent = {request["prompt"]: request["model"] for request in server.requests}
    assert len(server.requests) == len(prompts)  # one request per prompt
    assert [sent[tiny.chat.format(p)] for p in prompts] == ["ablate_w_lam1.0" if o else BASE
                                                            for o in open_rows.tolist()]
    assert remote == hooked_generate(tiny, prompts, 10, batch_size=len(prompts), gated=gated, progress=False)
