"""``python -m critic.judge``: single item, batch with bad rows, kill -9 and resume; ``import critic`` bare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from critic.batch import completed_ids

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "critic.judge", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path


def test_single_pair_text_and_json(tiny_qwen2_vl_dir: Path, image: Path) -> None:
    common = ["--model", str(tiny_qwen2_vl_dir), "--image", str(image), "--question", "What colour?",
              "--critique-max-chars", "30"]
    text = _cli(*common, "--response-a", "Red.", "--response-b", "Blue.")
    assert text.returncode == 0, text.stderr
    assert "Critique:" in text.stdout and "Verdict:" in text.stdout and "Consistent across orders" in text.stdout
    out = _cli(*common, "--response-a", "Red.", "--response-b", "Blue.", "--json", "--no-swap")
    data = json.loads(out.stdout)
    assert {"critique", "verdict", "probabilities", "consistent"} <= set(data)
    assert data["verdict"] in ("A", "B", "tie") and abs(sum(data["probabilities"].values()) - 1) < 1e-6
    point = json.loads(_cli(*common, "--response", "Red.", "--json", "--scale-min", "1", "--scale-max", "5").stdout)
    assert point["mode"] == "pointwise" and 1 <= point["score"] <= 5 and "expected_score" in point


def test_single_item_bad_image_exits_nonzero_with_reason(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = _cli("--model", str(tiny_qwen2_vl_dir), "--image", str(bad), "--question", "Q", "--response", "x")
    assert result.returncode == 1 and "not a recognised image format" in result.stdout


def test_usage_errors() -> None:
    assert _cli("--model", "x").returncode == 2  # neither an item nor a batch
    assert _cli("--model", "x", "--input", "a.jsonl").returncode == 2  # batch without output


def test_no_model_means_the_shipped_demo_judge(image: Path) -> None:
    from critic.demo_judge import DEMO_JUDGE_DIR

    assert (DEMO_JUDGE_DIR / "model.safetensors").is_file(), "the demo judge's weights ship with the repository"
    result = _cli("--image", str(image), "--question", "What colour?", "--response-a", "Red.", "--response-b", "Blue.")
    assert result.returncode == 0 and "Verdict:" in result.stdout, result.stderr


def test_without_the_demo_judges_weights_the_cli_says_how_to_build_them(
        image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import critic.demo_judge
    from critic.judge import main

    monkeypatch.setattr(critic.demo_judge, "DEMO_JUDGE_DIR", tmp_path)  # an install without the weights
    with pytest.raises(SystemExit) as exit_:
        main(["--image", str(image), "--question", "Q", "--response-a", "a", "--response-b", "b"])
    assert exit_.value.code == 2 and "python -m training.demo_judge" in capsys.readouterr().err


def _write_items(path: Path, image: Path, n: int) -> list[str]:
    ids = []
    with open(path, "w") as handle:
        for i in range(n):
            ids.append(f"item-{i}")
            if i % 2:
                row = {"id": ids[-1], "image": str(image), "question": f"Question {i}?", "response": f"answer {i}"}
            else:
                row = {"id": ids[-1], "images": [str(image)], "question": f"Question {i}?",
                       "response_a": f"first {i}", "response_b": f"second {i}"}
            handle.write(json.dumps(row) + "\n")
    return ids


def test_batch_with_bad_rows(tiny_qwen2_vl_dir: Path, image: Path, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    ids = _write_items(items, image, 4)
    with open(items, "a") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"id": "no-b", "question": "Q", "response_a": "x"}) + "\n")
        handle.write(json.dumps({"id": "no-image", "image": "missing.png", "question": "Q", "response": "x"}) + "\n")
        handle.write(json.dumps({"id": "typo", "question": "Q", "respones": "x"}) + "\n")
        handle.write(json.dumps({"id": "item-0", "question": "duplicate", "response": "x"}) + "\n")
    out = tmp_path / "results.jsonl"
    run = _cli("--model", str(tiny_qwen2_vl_dir), "--input", str(items), "--output", str(out), "--batch-size", "4",
               "--critique-max-chars", "20")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(by_id) == 8  # the duplicate id is not judged twice
    assert all(by_id[i]["status"] == "ok" for i in ids)
    assert by_id["line-5"]["error"]["kind"] == "input" and "invalid JSON" in by_id["line-5"]["error"]["message"]
    assert by_id["no-b"]["error"]["kind"] == "input"
    assert by_id["no-image"]["error"]["kind"] == "media"
    assert "respones" in by_id["typo"]["error"]["message"]
    summary = json.loads(run.stderr.strip().splitlines()[-1])["summary"]
    assert summary["done"] == 8 and summary["errors"] == 4 and summary["parse_failures"] == 0
    assert summary["duplicates"] == ["item-0"]
    again = _cli("--model", str(tiny_qwen2_vl_dir), "--input", str(items), "--output", str(out))
    assert json.loads(again.stderr.strip().splitlines()[-1])["summary"]["skipped"] == 8
    assert len(out.read_text().splitlines()) == 8


def test_torn_last_line_is_cut_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text('{"id": "a", "status": "ok"}\n{"id": "b", "sta')
    assert completed_ids(out) == {"a"}
    assert out.read_text() == '{"id": "a", "status": "ok"}\n'


@pytest.mark.slow
def test_kill_minus_nine_and_resume_gives_every_id_once(tiny_qwen2_vl_dir: Path, image: Path, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    ids = _write_items(items, image, 40)
    out = tmp_path / "results.jsonl"
    args = [sys.executable, "-m", "critic.judge", "--model", str(tiny_qwen2_vl_dir), "--input", str(items),
            "--output", str(out), "--batch-size", "2", "--critique-max-chars", "60", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = out.read_text().splitlines()
    assert 4 <= len(partial) < 40, "the run should have been killed midway"
    finished = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["status"] == "ok" for r in rows)


def test_import_critic_without_vllm_sglang_or_outlines() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('vllm', 'sglang', 'outlines', 'outlines_core'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import critic, critic.judge, critic.batch, critic.engines, critic.engines.hf\n"
        "assert not any(m.split('.')[0] in ('vllm', 'sglang', 'outlines') for m in sys.modules)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_dependency_direction() -> None:
    """prompts ← critic ← (scaling, training): critic never imports scaling or training, prompts nothing of ours."""
    import re

    def imports(path: Path) -> set[str]:
        found = re.findall(r"^\s*(?:from|import)\s+([a-zA-Z_]\w*)", path.read_text(), flags=re.MULTILINE)
        return set(found)

    for path in (ROOT / "critic").rglob("*.py"):
        assert not imports(path) & {"scaling", "training"}, path
    for path in (ROOT / "prompts").rglob("*.py"):
        assert not imports(path) & {"critic", "scaling", "training"}, path
    # Between the two siblings only named modules cross: the judge-built DPO pairs (and their demonstration) sample
    # and rank with scaling; the scaling demonstration trains its weak policy with training. No module cycle.
    crossing = {"dpo_pairs.py", "judge_data_demo.py"}
    for path in (ROOT / "training").rglob("*.py"):
        assert "scaling" not in imports(path) or path.name in crossing, path
    for path in (ROOT / "scaling").rglob("*.py"):
        assert "training" not in imports(path) or path.name == "demo.py", path
    demo = (ROOT / "scaling" / "demo.py").read_text()
    assert not any(f"training.{name[:-3]}" in demo for name in crossing)  # no cycle through the crossing modules


def test_rerun_retries_engine_errors_only(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    records = [{"id": "ok", "status": "ok"},
               {"id": "down", "status": "error", "error": {"kind": "engine", "message": "connection refused"}},
               {"id": "bad", "status": "error", "error": {"kind": "media", "message": "truncated"}}]
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert completed_ids(out) == {"ok", "bad"}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["ok", "bad"]


@pytest.mark.vllm
@pytest.mark.slow
def test_single_item_on_the_vllm_backend(tiny_qwen2_vl_dir: Path, image: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed")
    result = _cli("--backend", "vllm", "--enforce-eager", "--max-model-len", "4096", "--model", str(tiny_qwen2_vl_dir),
                  "--image", str(image), "--question", "What colour?", "--response-a", "Red.", "--response-b", "Blue.",
                  "--critique-max-chars", "30", "--json", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)  # vLLM's logs go to stderr: stdout is exactly the JSON object
    assert data["status"] == "ok" and abs(sum(data["probabilities"].values()) - 1) < 1e-6


def test_batch_on_the_openai_backend_against_a_local_stub(tmp_path: Path) -> None:
    """The CLI's openai flags reach the engine: a stub server on 127.0.0.1 answers every request the same way."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer = json.dumps({"choices": [{"message": {"content": "Critique: ok.\nScore: 6"}}]}).encode()
    seen: list[dict] = []

    class Stub(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        items = tmp_path / "items.jsonl"
        items.write_text("".join(json.dumps({"id": f"r{i}", "question": "Q?", "response": f"a{i}"}) + "\n"
                                 for i in range(3)))
        out = tmp_path / "out.jsonl"
        result = _cli("--backend", "openai", "--base-url", f"http://127.0.0.1:{server.server_port}/v1",
                      "--model", "judge", "--constraint", "regex", "--max-concurrency", "2",
                      "--input", str(items), "--output", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
    finally:
        server.shutdown()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["r0", "r1", "r2"] and all(r["score"] == 6 for r in rows)
    assert all("regex" in body and body["model"] == "judge" for body in seen)
