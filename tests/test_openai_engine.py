"""The OpenAI-compatible engine: retry policy against a scripted local HTTP server, the string-level label
distribution, and (marked vllm/slow) the judge against a real ``vllm serve`` process on 127.0.0.1."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from itemgen import random_items

from critic import Judge, JudgeConfig, JudgeItem
from critic.batch import run_batch
from critic.engines.openai_engine import OpenAIEngine, string_label_distribution

ANSWER = {"choices": [{"message": {"content": "Critique: fine.\nScore: 7"}}], "usage": {"prompt_tokens": 5}}


class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with the next (status, body, headers) of the server's script, repeating the last one."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with server.lock:  # type: ignore[attr-defined]
            server.hits += 1  # type: ignore[attr-defined]
            status, body, headers = server.script[min(server.hits - 1, len(server.script) - 1)]  # type: ignore[attr-defined]
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def scripted_server():  # noqa: ANN201
    servers = []

    def start(script: list[tuple[int, object, dict[str, str]]]) -> tuple[str, ThreadingHTTPServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
        server.script, server.hits, server.lock = script, 0, threading.Lock()  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1", server

    yield start
    for server in servers:
        server.shutdown()


def _judge(url: str, **options: object) -> Judge:
    engine = OpenAIEngine(url, "judge", backoff_initial=0.01, backoff_max=0.05, timeout=5, **options)
    return Judge(engine, JudgeConfig(critique_max_chars=20))


ITEM = JudgeItem(id="x", question="Q?", response="R")
ITEM_CAP = JudgeConfig(critique_max_chars=20).spec("pointwise").max_new_tokens  # the token cap _judge's items get


def test_retries_429_and_5xx_then_succeeds(scripted_server) -> None:  # noqa: ANN001
    url, server = scripted_server([(429, {"error": {"message": "slow down"}}, {"retry-after": "0"}),
                                   (503, {"error": {"message": "busy"}}, {}), (200, ANSWER, {})])
    [result] = _judge(url).judge([ITEM])
    assert result.ok and result.score == 7
    assert server.hits == 3


def test_no_retry_on_400(scripted_server) -> None:  # noqa: ANN001
    url, server = scripted_server([(400, {"error": {"message": "This model's maximum context length is 4096"}}, {})])
    [result] = _judge(url).judge([ITEM])
    assert server.hits == 1
    assert result.error.kind == "context_length" and "4096" in result.error.message


def test_gives_up_after_capped_retries(scripted_server) -> None:  # noqa: ANN001
    url, server = scripted_server([(500, {"error": {"message": "internal"}}, {})])
    [result] = _judge(url, max_retries=3).judge([ITEM])
    assert server.hits == 4
    assert result.error.kind == "engine" and "4 attempts" in result.error.message and "internal" in result.error.message


def test_connection_refused_is_an_item_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [result] = _judge(f"http://127.0.0.1:{port}/v1", max_retries=1).judge([ITEM])
    assert result.error.kind == "engine" and "ConnectError" in result.error.message


def test_malformed_and_unconstrained_answers(scripted_server) -> None:  # noqa: ANN001
    url, _ = scripted_server([(200, b"<html>not json</html>", {})])
    [bad_json] = _judge(url).judge([ITEM])
    assert bad_json.error.kind == "engine" and "invalid JSON" in bad_json.error.message
    url, _ = scripted_server([(200, {"choices": []}, {})])
    assert _judge(url).judge([ITEM])[0].error.kind == "engine"
    free_text = {"choices": [{"message": {"content": "I would give it a 7, maybe 8."}}]}
    url, _ = scripted_server([(200, free_text, {})])
    [ignored] = _judge(url).judge([ITEM])
    assert ignored.error.kind == "parse" and ignored.error.raw == "I would give it a 7, maybe 8."


def test_string_label_distribution_walks_discovered_tokens() -> None:
    continuations = {"1": " 1", "2": " 2", "10": " 10"}
    tops = {"": {" ": 0.0, "junk": -9999.0},
            " ": {"1": math.log(0.5), "2": math.log(0.5)},
            " 1": {"0": math.log(0.75), "<|im_end|>": math.log(0.25)}}
    needed: set[str] = set()
    assert string_label_distribution(continuations, lambda s: None if s == " 1" else tops.get(s), needed) is None
    assert needed == {" 1"}
    probs = string_label_distribution(continuations, tops.get, set())
    assert probs == pytest.approx({"1": 0.125, "2": 0.5, "10": 0.375})


# ---------------------------------------------------------------------------------------------- real vllm serve
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """A ``vllm serve`` process (the OpenAI API server module: the CPU build's ``vllm`` CLI cannot find its own
    package metadata) on 127.0.0.1, stopped by the test."""

    def __init__(self, model: Path, port: int, log: Path) -> None:
        self.model, self.port, self.log = model, port, log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 300) -> None:
        import httpx

        args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                "--served-model-name", "judge", "--host", "127.0.0.1", "--port", str(self.port),
                "--gpu-memory-utilization", "0.1", "--max-model-len", "4096", "--enforce-eager",
                "--limit-mm-per-prompt", json.dumps({"image": 8})]
        self.process = subprocess.Popen(args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited early; see {self.log}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.kill()
        raise RuntimeError(f"vllm serve did not become healthy in {timeout} s; see {self.log}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its engine-core worker
            self.process.wait()


@pytest.fixture(scope="module")
def vllm_server(tiny_qwen2_vl_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    pytest.importorskip("vllm", reason="vLLM is not installed")
    server = VLLMServer(tiny_qwen2_vl_dir, _free_port(), tmp_path_factory.mktemp("serve") / "server.log")
    server.start()
    yield server
    server.kill()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
def test_real_server_verdicts_parse_with_probabilities(vllm_server: VLLMServer, mode: str) -> None:
    judge = Judge(OpenAIEngine(vllm_server.url, "judge", max_concurrency=4), JudgeConfig(critique_max_chars=40))
    for result in judge.judge(random_items(mode, 10, seed=51)):
        assert result.ok, result.error
        assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-6)
        assert set(result.probabilities) == set(judge.config.spec(mode).labels)


@pytest.mark.vllm
@pytest.mark.slow
def test_real_server_ignoring_the_constraint_gives_parse_errors(vllm_server: VLLMServer) -> None:
    # vLLM ignores sglang's top-level 'regex' field, so the output is unconstrained text.
    judge = Judge(OpenAIEngine(vllm_server.url, "judge", constraint="regex"), JudgeConfig(critique_max_chars=40))
    for result in judge.judge(random_items("pairwise", 3, seed=52)):
        assert result.error is not None and result.error.kind == "parse" and result.error.raw


@pytest.mark.vllm
@pytest.mark.slow
def test_server_killed_mid_batch_then_rerun_completes_each_id_once(vllm_server: VLLMServer, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    with open(items, "w") as handle:
        for i in range(30):
            handle.write(json.dumps({"id": f"i{i}", "question": f"Question {i}?", "response": f"answer {i}"}) + "\n")
    out = tmp_path / "out.jsonl"
    engine = OpenAIEngine(vllm_server.url, "judge", max_concurrency=2, max_retries=2, backoff_initial=0.05,
                          backoff_max=0.2, timeout=10)
    judge = Judge(engine, JudgeConfig(critique_max_chars=200))
    worker = threading.Thread(target=run_batch, args=(judge, items, out), kwargs={"chunk_size": 2, "progress": False})
    worker.start()
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.05)
    vllm_server.kill()
    worker.join(timeout=300)
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(first) == 30 and len({r["id"] for r in first}) == 30
    failed = [r for r in first if r["status"] == "error"]
    assert failed and all(r["error"]["kind"] == "engine" for r in failed)
    assert sum(r["status"] == "ok" for r in first) >= 4

    vllm_server.start()
    summary = run_batch(Judge(OpenAIEngine(vllm_server.url, "judge"), judge.config), items, out, progress=False)
    assert summary.done == len(failed) and summary.skipped == 30 - len(failed)
    final = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in final) == sorted(f"i{i}" for i in range(30))
    assert all(r["status"] == "ok" for r in final)


def test_output_cut_by_the_context_is_a_context_length_error(scripted_server) -> None:  # noqa: ANN001
    cut = {"choices": [{"message": {"content": "Critique: this goes on and on"}, "finish_reason": "length"}],
           "usage": {"prompt_tokens": 4090, "completion_tokens": 6}}
    url, _ = scripted_server([(200, cut, {})])
    [result] = _judge(url).judge([ITEM])
    assert result.error.kind == "context_length" and "4090" in result.error.message
    # Stopped at our own token cap: the server ignored the constraint, so it is a parse error with the raw text.
    capped = {"choices": [{"message": {"content": "blah " * 30}, "finish_reason": "length"}],
              "usage": {"prompt_tokens": 40, "completion_tokens": ITEM_CAP}}
    url, _ = scripted_server([(200, capped, {})])
    [ignored] = _judge(url).judge([ITEM])
    assert ignored.error.kind == "parse" and ignored.error.raw == "blah " * 30
