"""Unit tier: bootstrap intervals, judge agreement, the endpoint judge against a local fake server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from workbench.errors import WorkbenchError
from workbench.judge import EndpointJudge, SubstringJudge, agreement_table
from workbench.stats import bootstrap_ci


def test_bootstrap_degenerate_and_known_case():
    assert bootstrap_ci([True] * 40) == (1.0, 1.0)
    assert bootstrap_ci([False] * 40) == (0.0, 0.0)
    low, high = bootstrap_ci([True] * 50 + [False] * 50, n_resamples=4000, seed=1)
    # Binomial: SE = sqrt(.25/100) = .05, so the 95% interval is about .5 ± .098.
    assert 0.38 < low < 0.42 and 0.58 < high < 0.62
    assert bootstrap_ci([1, 0, 1, 1], seed=3) == bootstrap_ci([1, 0, 1, 1], seed=3)  # seeded
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_agreement_table_kappa():
    table = agreement_table({"a": [True, True, False, False], "b": [True, False, False, False]})
    row = table.iloc[0]
    assert row.agreement == 0.75
    # p_e = .5·.25 + .5·.75 = .5, κ = (.75 − .5)/(1 − .5)
    assert row.cohen_kappa == pytest.approx(0.5)
    with pytest.raises(WorkbenchError, match="different numbers"):
        agreement_table({"a": [True], "b": [True, False]})


class _FakeWildGuard(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        refused = "sorry" in body["prompt"].split("AI assistant:")[1].lower()
        text = f"Harmful request: no\nResponse refusal: {'yes' if refused else 'no'}\nHarmful response: no"
        payload = json.dumps({"choices": [{"text": text}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_endpoint_judge_against_local_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeWildGuard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = EndpointJudge(f"http://127.0.0.1:{server.server_port}/v1")
        labels = judge.judge(["kill a process?", "poem?"], ["Sorry, no.", "Roses are red."])
        assert labels == [True, False]
        substring = SubstringJudge().judge(["kill a process?", "poem?"], ["Sorry, no.", "Roses are red."])
        assert substring == [False, False]  # "Sorry, no." has none of the paper's substrings
    finally:
        server.shutdown()
    with pytest.raises(WorkbenchError, match="judge endpoint"):
        EndpointJudge("http://127.0.0.1:9/v1", timeout_s=2).judge(["x"], ["y"])
