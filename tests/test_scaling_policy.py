"""The test-time-scaling policies: transformers and vLLM on a tiny random Qwen2-VL, OpenAI against a local fake
server.  The vLLM tests are marked ``vllm`` and ``slow`` (minutes on CPU)."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scaling.policy import (
    BACKENDS,
    OpenAIPolicy,
    PolicySampling,
    TransformersPolicy,
    _SeededSampler,
    load_policy,
)
from scaling.types import Candidate, Item

IMAGES = Path(__file__).parent / "data" / "images"
SAMPLING = PolicySampling(max_new_tokens=10, seed=3)


def _items() -> list[Item]:
    return [Item("What colour is the shape?", images=[str(IMAGES / "red.png")], id="red"),
            Item("Describe both pictures.", images=[str(IMAGES / "blue.png"), str(IMAGES / "red.png")], id="two"),
            Item("Say something.", id="text")]


def _check_shape(candidates: list[list[Candidate]], n_items: int, n: int, sampling: PolicySampling) -> None:
    assert len(candidates) == n_items
    for row in candidates:
        assert [c.index for c in row] == list(range(n))
        assert [c.seed for c in row] == [sampling.seed + k for k in range(n)]


def _texts(candidates: list[list[Candidate]]) -> list[list[str]]:
    return [[c.text for c in row] for row in candidates]


# ---------------------------------------------------------------------------------------------------- config
def test_sampling_config_is_validated() -> None:
    assert PolicySampling().seed_for(3) == 3 and PolicySampling(seed=10).seed_for(2) == 12
    for bad in ({"temperature": -0.1}, {"temperature": math.nan}, {"top_p": 0}, {"top_p": 1.5},
                {"max_new_tokens": 0}, {"max_new_tokens": 2.5}, {"seed": -1}, {"seed": 1.0}):
        with pytest.raises(ValueError):
            PolicySampling(**bad)


def test_load_policy_names_and_errors() -> None:
    assert set(BACKENDS) == {"transformers", "vllm", "openai"}
    with pytest.raises(ValueError, match="unknown policy backend 'sglang'"):
        load_policy("sglang", "m")
    with pytest.raises(ValueError, match="base_url"):
        load_policy("openai", "m")


def test_seeded_sampler_draws_from_the_warped_distribution() -> None:
    import torch

    rows = 4000
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0]).repeat(rows, 1)  # [rows, vocab]
    ids = torch.zeros(rows, 1, dtype=torch.long)
    for temperature, top_p in ((1.0, 1.0), (0.5, 1.0), (1.0, 0.8)):
        sampler = _SeededSampler(range(rows), temperature, top_p)
        scores = sampler(ids, logits.clone())
        choice = scores.argmax(dim=-1)
        assert torch.isinf(scores).sum() == rows * 4  # one finite score per row: generate's greedy picks it
        frequencies = torch.bincount(choice, minlength=5).float() / rows
        expected = torch.softmax(logits[0] / temperature, dim=-1)
        if top_p < 1:  # the nucleus: the fewest top tokens whose mass reaches top_p (here the first two)
            expected[2:] = 0
            expected /= expected.sum()
        assert torch.allclose(frequencies, expected, atol=0.03), (temperature, top_p, frequencies, expected)
        # recorded log-probabilities are the model's own (before temperature / top-p)
        own = torch.log_softmax(logits[0], dim=-1)
        assert torch.allclose(sampler.logprobs[0], own[choice])
    # rows are independent of one another: row r alone draws what it drew among 4000
    alone = _SeededSampler([17], 1.0, 1.0)(ids[:1], logits[:1].clone()).argmax(dim=-1)
    assert int(alone) == int(_SeededSampler(range(rows), 1.0, 1.0)(ids, logits.clone()).argmax(dim=-1)[17])


# ---------------------------------------------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def hf_policy(tiny_qwen2_vl_dir: Path) -> TransformersPolicy:
    return TransformersPolicy.from_pretrained(str(tiny_qwen2_vl_dir), device="cpu", batch_size=4)


def test_transformers_n_candidates_with_indices_seeds_and_logprobs(hf_policy: TransformersPolicy) -> None:
    items = _items()
    candidates = hf_policy.sample(items, 3, SAMPLING)
    _check_shape(candidates, len(items), 3, SAMPLING)
    for row in candidates:
        for c in row:
            assert c.error is None and isinstance(c.text, str)
            assert c.logprob is not None and math.isfinite(c.logprob) and c.logprob <= 0
        assert len({c.text for c in row}) > 1  # sampled, not collapsed onto one continuation


def test_transformers_same_seed_same_candidates_other_seed_others(hf_policy: TransformersPolicy) -> None:
    items = _items()
    first = hf_policy.sample(items, 2, SAMPLING)
    again = hf_policy.sample(items, 2, SAMPLING)
    assert _texts(first) == _texts(again)
    assert [[c.logprob for c in row] for row in first] == [[c.logprob for c in row] for row in again]
    other = hf_policy.sample(items, 2, PolicySampling(max_new_tokens=10, seed=4))
    # seed 4 is candidate 1's seed under seed 3: shifted by one index, the same text
    assert [row[0] for row in _texts(other)] == [row[1] for row in _texts(first)]
    assert [row[1] for row in _texts(other)] != [row[1] for row in _texts(first)]


def test_transformers_prefix_and_batch_independence(hf_policy: TransformersPolicy, tiny_qwen2_vl_dir: Path) -> None:
    items = _items()
    four = hf_policy.sample(items, 4, SAMPLING)
    two = hf_policy.sample(items, 2, SAMPLING)
    assert [row[:2] for row in _texts(four)] == _texts(two)
    for long_row, short_row in zip(four, two):
        for a, b in zip(long_row, short_row):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
    # neither the batch size nor the other items of the call change a candidate
    one_by_one = TransformersPolicy(hf_policy.model, hf_policy.processor, batch_size=1)
    assert _texts(one_by_one.sample(items, 2, SAMPLING)) == _texts(two)
    assert _texts(hf_policy.sample(items[1:2], 2, SAMPLING)) == _texts(two)[1:2]


def test_transformers_greedy_matches_generate_and_its_logprob(hf_policy: TransformersPolicy) -> None:
    import torch

    from critic.engines.tokenizer_utils import render_prompt
    from scaling.policy import build_prompt

    item = _items()[0]
    greedy = PolicySampling(temperature=0, max_new_tokens=10)
    [[ours, twin]] = hf_policy.sample([item], 2, greedy)
    assert ours.text == twin.text and ours.logprob == twin.logprob
    prompt = build_prompt(item, hf_policy.prompt)
    inputs = hf_policy.processor(text=[render_prompt(hf_policy.processor, prompt)], images=list(prompt.images),
                                 return_tensors="pt")
    with torch.inference_mode():
        output = hf_policy.model.generate(**inputs, max_new_tokens=10, do_sample=False, temperature=None, top_p=None,
                                          top_k=None, eos_token_id=hf_policy.stop_token_ids,
                                          pad_token_id=hf_policy.pad_token_id, output_logits=True,
                                          return_dict_in_generate=True)
    tokens = output.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    end = next((t for t, token in enumerate(tokens) if token in hf_policy.stop_token_ids), None)
    assert ours.text == hf_policy.tokenizer.decode(tokens[:end], skip_special_tokens=True)
    scores = hf_policy.model.compute_transition_scores(output.sequences, output.logits, normalize_logits=True)
    assert ours.logprob == pytest.approx(float(scores[0, : len(tokens) if end is None else end + 1].sum()), abs=1e-3)


def test_transformers_bad_items_fail_alone(hf_policy: TransformersPolicy, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all, just bytes")
    good = _items()
    items = [good[0], Item("Q?", images=[str(tmp_path / "missing.png")]), good[2],
             Item("Q?", images=[str(corrupt)]), Item("word " * 5000), Item("   ")]
    candidates = hf_policy.sample(items, 3, SAMPLING)
    _check_shape(candidates, len(items), 3, SAMPLING)
    for position, needle in ((1, "file not found"), (3, "not a recognised image format"),
                             (4, "context"), (5, "question is missing")):
        for c in candidates[position]:
            assert c.text == "" and c.logprob is None and needle in c.error, c
    clean = hf_policy.sample([good[0], good[2]], 3, SAMPLING)
    assert _texts([candidates[0], candidates[2]]) == _texts(clean)
    assert all(c.error is None for row in (candidates[0], candidates[2]) for c in row)


def test_transformers_n_must_be_positive(hf_policy: TransformersPolicy) -> None:
    with pytest.raises(ValueError, match="n must be"):
        hf_policy.sample(_items(), 0, SAMPLING)
    assert hf_policy.sample([], 3, SAMPLING) == []


# ---------------------------------------------------------------------------------------------------- OpenAI
class _FakeChat(BaseHTTPRequestHandler):
    """A chat completions server: the answer names the request's seed; questions containing LONG are refused like a
    too-long prompt; the first ``server.fail_first`` requests get a 503."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        with server.lock:  # type: ignore[attr-defined]
            server.bodies.append(body)  # type: ignore[attr-defined]
            server.hits += 1  # type: ignore[attr-defined]
            server.in_flight += 1  # type: ignore[attr-defined]
            server.max_in_flight = max(server.max_in_flight, server.in_flight)  # type: ignore[attr-defined]
            flaky = server.hits <= server.fail_first  # type: ignore[attr-defined]
        time.sleep(0.05)
        text = body["messages"][-1]["content"][-1]["text"]
        if flaky:
            status, answer = 503, {"error": {"message": "busy"}}
        elif "LONG" in text:
            status, answer = 400, {"error": {"message": "This model's maximum context length is 10 tokens"}}
        else:
            status = 200
            answer = {"choices": [{"message": {"content": f"answer {body['seed']} to {text}"},
                                   "logprobs": {"content": [{"token": "answer", "logprob": -0.5},
                                                            {"token": " x", "logprob": -0.25}]}}]}
        with server.lock:  # type: ignore[attr-defined]
            server.in_flight -= 1  # type: ignore[attr-defined]
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def fake_chat():  # noqa: ANN201
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    server.bodies, server.hits, server.in_flight, server.max_in_flight, server.fail_first = [], 0, 0, 0, 0  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", server
    server.shutdown()


def test_openai_one_seeded_request_per_candidate(fake_chat) -> None:  # noqa: ANN001
    url, server = fake_chat
    sampling = PolicySampling(temperature=0.7, top_p=0.9, max_new_tokens=20, seed=100)
    with OpenAIPolicy("policy", url, max_concurrency=4, backoff_initial=0.01) as policy:
        candidates = policy.sample(_items(), 3, sampling)
    _check_shape(candidates, 3, 3, sampling)
    for item, row in zip(_items(), candidates):
        for c in row:
            assert c.error is None and c.text == f"answer {c.seed} to {item.question}"
            assert c.logprob == pytest.approx(-0.75)
    assert server.hits == 9 and server.max_in_flight > 1
    assert {b["seed"] for b in server.bodies} == {100, 101, 102}
    body = server.bodies[0]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"], body["logprobs"]) == (
        "policy", 0.7, 0.9, 20, True)
    assert body["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    two_images = next(b for b in server.bodies if "both" in b["messages"][1]["content"][-1]["text"])
    parts = two_images["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_failures_stay_with_their_item(fake_chat, tmp_path: Path) -> None:  # noqa: ANN001
    url, server = fake_chat
    server.fail_first = 2  # transient 503s are retried
    policy = load_policy("openai", "policy", base_url=url, max_concurrency=1, backoff_initial=0.01,
                         backoff_max=0.02)
    items = [Item("fine?"), Item("a LONG question"), Item("img?", images=[str(tmp_path / "missing.png")])]
    candidates = policy.sample(items, 2, SAMPLING)
    policy.close()
    _check_shape(candidates, 3, 2, SAMPLING)
    assert [c.text for c in candidates[0]] == ["answer 3 to fine?", "answer 4 to fine?"]
    assert all("HTTP 400" in c.error and "maximum context length" in c.error and c.text == ""
               for c in candidates[1])
    assert all("file not found" in c.error for c in candidates[2])
    assert server.hits == 2 + 4  # two 503s retried; no request for the missing image


# ---------------------------------------------------------------------------------------------------- vLLM
@pytest.fixture(scope="module")
def llm(tiny_qwen2_vl_dir: Path):  # noqa: ANN201 - vllm.LLM
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from critic.engines.vllm_engine import VLLMEngine

    # As in test_judge_vllm: float32 like the transformers engine, no compilation; built through from_pretrained so
    # the CPU defaults (KV-cache share, whole prefills for seeded requests) are the ones users get.
    engine = VLLMEngine.from_pretrained(str(tiny_qwen2_vl_dir), dtype="float32", max_model_len=4096,
                                        enforce_eager=True).llm
    yield engine
    del engine


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_policy_candidates_seeds_and_shared_judge(llm, tmp_path: Path) -> None:  # noqa: ANN001
    from critic import Judge, JudgeConfig, JudgeItem
    from critic.engines.vllm_engine import VLLMEngine
    from scaling.policy import VLLMPolicy

    policy = VLLMPolicy(llm)
    items = _items()
    four = policy.sample(items, 4, SAMPLING)
    _check_shape(four, len(items), 4, SAMPLING)
    for row in four:
        for c in row:
            assert c.error is None and isinstance(c.text, str)
            assert c.logprob is not None and math.isfinite(c.logprob) and c.logprob <= 0
        assert len({c.text for c in row}) > 1
    # reproducible per index: the same seeds give the same candidates, and the first two of four are a 2-run
    two = policy.sample(items, 2, SAMPLING)
    assert [row[:2] for row in _texts(four)] == _texts(two)
    assert _texts(policy.sample(items[2:], 2, SAMPLING)) == _texts(two)[2:]
    assert _texts(policy.sample(items, 2, PolicySampling(max_new_tokens=10, seed=50))) != _texts(two)

    # bad items fail alone
    mixed = policy.sample([items[0], Item("Q?", images=[str(tmp_path / "missing.png")]), Item("word " * 5000)], 2,
                          SAMPLING)
    _check_shape(mixed, 3, 2, SAMPLING)
    assert _texts(mixed[:1]) == _texts(two[:1])
    assert all("file not found" in c.error for c in mixed[1])
    assert all("maximum context length" in c.error and c.text == "" for c in mixed[2]), mixed[2]

    # one LLM, two roles: the judge compares two of the policy's candidates on the same engine
    judge = Judge(VLLMEngine(policy.llm, processor=policy.processor), JudgeConfig(critique_max_chars=40))
    first, second = four[0][0].text, four[0][1].text
    [result] = judge.judge([JudgeItem(question=items[0].question, images=items[0].images,
                                      response_a=first, response_b=second)])
    assert result.ok, result.error
    assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-6)
    # and the policy still samples the same candidates after the judge used the engine
    assert _texts(policy.sample(items, 2, SAMPLING)) == _texts(two)
    policy.close()
    assert policy.llm is None and judge.engine.llm is llm


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_policy_survives_more_seeded_prompts_than_one_step_holds(llm) -> None:  # noqa: ANN001
    """600 seeded requests overflow one scheduler step, which split a prefill and killed the CPU engine ("CPU
    Generator does not use offset") until from_pretrained turned chunked prefill off on CPU builds."""
    from scaling.policy import VLLMPolicy

    policy = VLLMPolicy(llm)
    out = policy.sample(_items() * 50, 4, PolicySampling(max_new_tokens=4, seed=0))
    assert all(c.error is None for row in out for c in row), next(c.error for row in out for c in row if c.error)
