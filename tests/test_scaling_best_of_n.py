"""Best-of-N end to end: a scripted policy and a scripted judge with a hidden quality order (library, CLI, resume,
bad rows, re-ranking, budgets), the scaling curve on hand-made correctness patterns, and one run on tiny real
models (transformers policy and judge sharing one random-weight Qwen2-VL)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from critic import Judge, JudgeConfig
from critic.engines.base import GenerationRequest
from critic.engines.scripted import ScriptedEngine, ScriptedOutput
from scaling import best_of_n as best_of_n_module
from scaling.best_of_n import BestOfN, build_parser, load_judge, main, read_candidates
from scaling.calls import BudgetExceeded, JudgeCalls
from scaling.curve import NominalCalls, load_checker, paired_counts, reference_checker, scaling_curve, write_plot
from scaling.curve import main as curve_main
from scaling.pointwise import PointwiseBestOfN
from scaling.policy import Policy, PolicyCapabilities, PolicySampling
from scaling.self_consistency import SampledJudge
from scaling.types import Candidate, Item, Selection

# ---------------------------------------------------------------------------------------------------------------
# A scripted policy and a scripted judge.  Candidate texts carry a tag "zq<k>x"; the judge prefers the higher
# hidden quality of the tags it sees (pairwise, in both orders) or scores round(quality) (pointwise).
# ---------------------------------------------------------------------------------------------------------------

_TAG = re.compile(r"zq(\d+)x")


class ScriptedPolicy(Policy):
    """Answers item ``id`` with ``table[id][k]`` for candidate k; records every call."""

    name = "scripted"
    capabilities = PolicyCapabilities(seeded=True, prefix_stable=True)

    def __init__(self, table: dict[str, Sequence[str]], fail_first: int = 0) -> None:
        super().__init__()
        self.table = table
        self.calls = 0
        self.sampled: list[Item] = []
        self.fail_first = fail_first  # the first `fail_first` calls raise (a crashed backend)

    def sample(self, items: Sequence[Item], n: int, sampling: PolicySampling | None = None) -> list[list[Candidate]]:
        sampling = self._check(n, sampling)
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("policy backend crashed")
        self.sampled.extend(items)
        return [[Candidate(text=self.table[str(item.id)][k], index=k, seed=sampling.seed_for(k)) for k in range(n)]
                for item in items]


def quality_judge(quality: dict[int, float], **config: object) -> tuple[Judge, ScriptedEngine]:
    def script(request: GenerationRequest) -> ScriptedOutput:
        tags = [int(t) for t in _TAG.findall(request.prompt.text)]
        if request.spec.mode == "pointwise":
            [tag] = tags
            label = str(round(quality[tag]))
            return ScriptedOutput(request.spec.format("Scored it.", label), {label: 1.0})
        first, second = tags
        label = "A" if quality[first] > quality[second] else "B" if quality[second] > quality[first] else "tie"
        probs = {"A": 0.1, "B": 0.1, "tie": 0.1, label: 0.8}
        return ScriptedOutput(request.spec.format("Compared both.", label), probs)

    engine = ScriptedEngine(script)
    return Judge(engine, JudgeConfig(**config)), engine  # type: ignore[arg-type]


# Three items of four candidates: tag 10*item + k; the answer is in the text for the curve's checker.
ANSWERS = {"a": ["red", "blue", "blue", "red"], "b": ["cat", "dog", "cat", "cow"], "c": ["1", "2", "3", "4"]}
QUALITY = {0: 3, 1: 8, 2: 5, 3: 2, 10: 4, 11: 4, 12: 9, 13: 1, 20: 7, 21: 2, 22: 2, 23: 6}
BEST = {"a": 1, "b": 2, "c": 0}


def table() -> dict[str, list[str]]:
    return {name: [f"zq{10 * row + k}x thinks the answer is {answer}." for k, answer in enumerate(answers)]
            for row, (name, answers) in enumerate(ANSWERS.items())}


def items() -> list[Item]:
    return [Item(f"Question {name}?", id=name, reference=ref) for name, ref in zip(ANSWERS, ["blue", "cow", "1"])]


# ---------------------------------------------------------------------------------------------------------------
# Library
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "calls"), [("pointwise", 4), ("knockout", 6), ("round_robin", 12),
                                                 ("swiss", 8), ("self_consistency", 0)])
def test_generate_samples_then_selects(strategy: str, calls: int) -> None:
    policy = ScriptedPolicy(table())
    judge, engine = quality_judge(QUALITY)
    best = BestOfN(policy, judge, strategy, n=4, sampling=PolicySampling(seed=5), rounds=2) if strategy == "swiss" \
        else BestOfN(policy, judge, strategy, n=4, sampling=PolicySampling(seed=5))
    selections = best.generate(items())
    assert policy.calls == 1 and [s.id for s in selections] == ["a", "b", "c"]
    for selection in selections:
        assert selection.strategy == strategy and len(selection.candidates) == 4
        assert [c.seed for c in selection.candidates] == [5, 6, 7, 8]
        assert len(selection.scores) == len(selection.ranks) == 4
        assert selection.judge_calls == calls
        assert Selection.from_dict(json.loads(json.dumps(selection.to_dict()))) == selection
    assert best.spent == len(engine.requests) == 3 * calls
    if strategy == "self_consistency":
        assert [s.chosen for s in selections] == [0, 0, 0]  # red/blue 2:2 (earliest group), cat ×2, all different
    else:
        assert {s.id: s.chosen for s in selections} == BEST
    if strategy == "pointwise":
        assert all(len(s.judgments) == 4 and s.judgments[s.chosen]["status"] == "ok" for s in selections)
        assert selections[0].scores == [3.0, 8.0, 5.0, 2.0]
    if strategy == "knockout":
        assert all(len([m for m in s.matches if m.b != -1]) == 3 for s in selections)


@pytest.mark.parametrize("strategy", ["pointwise", "pointwise_weighted", "knockout", "swiss", "self_consistency"])
def test_rerank_equals_generate_without_the_policy(strategy: str) -> None:
    judge, _ = quality_judge(QUALITY)
    generated = BestOfN(ScriptedPolicy(table()), judge, strategy, n=4).generate(items())
    reranker = BestOfN(None, quality_judge(QUALITY)[0], strategy, n=4)
    assert reranker.rerank(generated, items()) == generated
    # Plain candidate lists too, and another strategy than the object's (a fresh judge: no cache hits).
    lists = [s.candidates for s in generated]
    knockout = BestOfN(ScriptedPolicy(table()), quality_judge(QUALITY)[0], "knockout", n=4).generate(items())
    other = BestOfN(None, quality_judge(QUALITY)[0], "pointwise")
    assert other.rerank(lists, items(), strategy="knockout") == knockout
    with pytest.raises(ValueError, match="generate needs a policy"):
        reranker.generate(items())
    with pytest.raises(ValueError, match="aligned"):
        reranker.rerank(generated[::-1], items())


def test_judge_samples_budget_and_judge_rules() -> None:
    judge, engine = quality_judge(QUALITY)
    best = BestOfN(ScriptedPolicy(table()), judge, "knockout", n=4, judge_samples=3, judge_temperature=0.5,
                   judge_seed=7)
    assert isinstance(best.judge, SampledJudge) and best.judge.k == 3
    selections = best.generate(items())
    assert {s.id: s.chosen for s in selections} == BEST
    assert [s.judge_calls for s in selections] == [3 * 6] * 3 and engine.calls == 2 * 3  # rounds × samples
    # Sampled judgments are never cached: the same work again costs the same.
    again = best.generate(items())
    assert sum(s.judge_calls for s in again) == 54 and best.spent == 108

    # Greedy judgments are cached across calls of one object; the budget covers the object's whole life.
    judge, engine = quality_judge(QUALITY)
    best = BestOfN(ScriptedPolicy(table()), judge, "pointwise", n=4, max_calls=12)
    best.generate(items())
    assert best.spent == 12 and sum(s.judge_calls for s in best.generate(items())) == 0
    with pytest.raises(BudgetExceeded):
        best.rerank([s.candidates for s in best.generate(items())], items(), strategy="knockout")
    shared = JudgeCalls(judge)
    BestOfN(None, shared, "knockout").rerank([[Candidate("zq0x", 0), Candidate("zq1x", 1)]], items()[:1])
    assert shared.spent == 2

    assert BestOfN(ScriptedPolicy(table()), None, "self_consistency", n=2).generate(items())[0].judge_calls == 0
    with pytest.raises(ValueError, match="needs a judge"):
        BestOfN(ScriptedPolicy(table()), None, "pointwise")
    with pytest.raises(ValueError, match="needs a judge"):
        BestOfN(None, None, "self_consistency").rerank([[Candidate("x", 0)]], items()[:1], strategy="knockout")
    with pytest.raises(ValueError, match="n must be"):
        BestOfN(None, judge, n=0)
    with pytest.raises(ValueError, match="already a SampledJudge"):
        BestOfN(None, SampledJudge(judge, k=2), judge_samples=2)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a small namespace of fakes
    """Patch the CLI's loaders: a scripted policy and a scripted judge, built once per test."""

    class Fakes:
        policy = ScriptedPolicy(table())
        judge, engine = quality_judge(QUALITY)
        policy_loads = 0

    def fake_load_policy(backend: str, model: str, **options: object) -> Policy:
        Fakes.policy_loads += 1
        return Fakes.policy

    def fake_from_pretrained(cls, model: str, **options: object) -> Judge:  # noqa: ANN001
        return Fakes.judge

    monkeypatch.setattr(best_of_n_module, "load_policy", fake_load_policy)
    monkeypatch.setattr(Judge, "from_pretrained", classmethod(fake_from_pretrained))
    return Fakes


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _input(tmp_path: Path) -> Path:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "pics" / "a.png")
    return _write(tmp_path / "items.jsonl", [
        {"id": "a", "question": "Question a?", "image": "pics/a.png", "reference": "blue"},
        {"id": "b", "question": "Question b?", "answer": "cow"},
        {"id": "c", "question": "Question c?", "images": [], "reference": "1"},
    ])


BASE = ["--policy", "P", "--judge", "J", "--n", "4", "--no-progress"]


def test_cli_writes_selections_and_resumes(cli, tmp_path: Path) -> None:  # noqa: ANN001
    source, out = _input(tmp_path), tmp_path / "out" / "best.jsonl"
    assert main([*BASE, "--strategy", "knockout", "--input", str(source), "--output", str(out),
                 "--chunk-size", "2"]) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"] and [r["chosen"] for r in rows] == [1, 2, 0]
    assert rows[0]["question"] == "Question a?" and rows[0]["chosen_text"] == table()["a"][1]
    assert all(r["judge_calls"] == 6 and len(r["candidates"]) == 4 and r["error"] is None for r in rows)
    assert cli.policy.sampled[0].images == [str(tmp_path / "pics" / "a.png")]  # resolved against the input folder
    assert cli.policy.calls == 2 and len(cli.engine.requests) == 18  # chunks of 2 items

    assert main([*BASE, "--strategy", "knockout", "--input", str(source), "--output", str(out)]) == 0
    assert cli.policy.calls == 2 and len(cli.engine.requests) == 18 and len(_rows(out)) == 3  # nothing redone
    cli.policy.table["d"] = table()["a"]
    _write(source, [*source.read_text().splitlines(), json.dumps({"id": "d", "question": "Question d?"})])
    assert main([*BASE, "--strategy", "knockout", "--input", str(source), "--output", str(out)]) == 0
    assert cli.policy.calls == 3 and [r["id"] for r in _rows(out)] == ["a", "b", "c", "d"]
    assert [item.id for item in cli.policy.sampled] == ["a", "b", "c", "d"]


def test_cli_bad_rows_become_error_lines(cli, tmp_path: Path) -> None:  # noqa: ANN001
    source = _write(tmp_path / "items.jsonl", [
        {"id": "a", "question": "Question a?"}, "{not json", {"id": "x", "question": ""}, [1, 2],
        {"question": "Question b?"}, {"id": "a", "question": "duplicate"},
    ])
    cli.policy.table["line-5"] = table()["b"]  # a row without an id is named after its line
    out = tmp_path / "best.jsonl"
    assert main([*BASE, "--input", str(source), "--output", str(out)]) == 0
    rows = {r["id"]: r for r in _rows(out)}
    assert list(rows) == ["a", "line-2", "x", "line-4", "line-5"]
    assert rows["a"]["chosen"] == 1 and rows["line-5"]["chosen"] == 2
    for bad in ("line-2", "x", "line-4"):
        assert rows[bad]["error"]["kind"] == "input" and rows[bad]["chosen"] is None
    assert "invalid JSON" in rows["line-2"]["error"]["message"] and "question" in rows["x"]["error"]["message"]
    assert main([*BASE, "--input", str(source), "--output", str(out)]) == 0  # input errors are final
    assert len(_rows(out)) == 5


def test_cli_engine_failures_are_retried(cli, tmp_path: Path) -> None:  # noqa: ANN001
    cli.policy.fail_first = 1
    source, out = _input(tmp_path), tmp_path / "best.jsonl"
    assert main([*BASE, "--input", str(source), "--output", str(out), "--chunk-size", "2"]) == 0
    rows = _rows(out)
    assert [r["error"]["kind"] for r in rows[:2]] == ["engine", "engine"] and rows[2]["chosen"] == 0
    assert "policy backend crashed" in rows[0]["error"]["message"]
    assert main([*BASE, "--input", str(source), "--output", str(out)]) == 0
    assert sorted((r["id"], r["chosen"]) for r in _rows(out)) == [("a", 1), ("b", 2), ("c", 0)]


def test_cli_budget_stops_and_a_rerun_continues(cli, tmp_path: Path) -> None:  # noqa: ANN001
    source, out = _input(tmp_path), tmp_path / "best.jsonl"
    args = [*BASE, "--strategy", "knockout", "--input", str(source), "--output", str(out), "--chunk-size", "1"]
    assert main([*args, "--max-calls", "14"]) == 3  # 6 per item: the third item would pass 14
    assert [r["id"] for r in _rows(out)] == ["a", "b"]
    assert main([*args, "--max-calls", "14"]) == 0 and [r["id"] for r in _rows(out)] == ["a", "b", "c"]


def test_cli_rerank_reads_candidates_without_a_policy(cli, tmp_path: Path) -> None:  # noqa: ANN001
    source, first = _input(tmp_path), tmp_path / "pointwise.jsonl"
    assert main([*BASE, "--input", str(source), "--output", str(first)]) == 0
    assert cli.policy_loads == 1
    second = tmp_path / "knockout.jsonl"
    assert main(["--judge", "J", "--no-progress", "--strategy", "knockout", "--input", str(source),
                 "--output", str(second), "--rerank", str(first)]) == 0
    assert cli.policy_loads == 1 and cli.policy.calls == 1  # no policy built, nothing sampled
    before, after = _rows(first), _rows(second)
    assert [r["candidates"] for r in after] == [r["candidates"] for r in before]
    assert [r["strategy"] for r in after] == ["knockout"] * 3 and [r["chosen"] for r in after] == [1, 2, 0]
    expected = BestOfN(None, quality_judge(QUALITY)[0], "knockout").rerank(
        [Selection.from_dict(r) for r in before], items())
    assert [r["chosen"] for r in after] == [s.chosen for s in expected]
    # The first 2 candidates only; an id missing from the earlier output is an input error for that row.
    _write(source, [*source.read_text().splitlines(), json.dumps({"id": "z", "question": "Q?"})])
    third = tmp_path / "two.jsonl"
    assert main(["--judge", "J", "--no-progress", "--n", "2", "--input", str(source), "--output", str(third),
                 "--rerank", str(first)]) == 0
    rows = {r["id"]: r for r in _rows(third)}
    assert [len(rows[k]["candidates"]) for k in "abc"] == [2, 2, 2] and rows["a"]["chosen"] == 1
    assert rows["z"]["error"]["kind"] == "input" and "no earlier candidates" in rows["z"]["error"]["message"]
    assert set(read_candidates(third)) == {"a", "b", "c"}


def test_cli_usage_errors(cli, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    source = _input(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["--judge", "J", "--input", str(source), "--output", str(tmp_path / "o.jsonl")])  # neither
    assert exit_.value.code == 2 and "--policy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--judge", "J", "--input", str(source), "--output", str(source), "--rerank", str(source)])
    with pytest.raises(SystemExit):
        main([*BASE, "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")])


def test_cli_without_judge_uses_the_demo_judge(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                               capsys: pytest.CaptureFixture) -> None:
    import critic.demo_judge

    args = ["--policy", "P", "--n", "2", "--no-progress", "--input", str(_input(tmp_path)),
            "--output", str(tmp_path / "o.jsonl")]
    assert main(args) == 0  # the shipped demo judge
    # An install without the weights: a usage error that says how to get them.
    monkeypatch.setattr(critic.demo_judge, "DEMO_JUDGE_DIR", tmp_path / "no-weights")
    with pytest.raises(SystemExit):
        main([*args[:-1], str(tmp_path / "o2.jsonl")])
    assert "python -m training.demo_judge" in capsys.readouterr().err
    # The judge-free strategy needs no judge at all.
    assert main([*args[:-1], str(tmp_path / "sc.jsonl"), "--strategy", "self_consistency"]) == 0


# ---------------------------------------------------------------------------------------------------------------
# Scaling curve
# ---------------------------------------------------------------------------------------------------------------


class RecordingStrategy:
    """Picks the last candidate and remembers every candidate list it was given."""

    name = "last"

    def __init__(self) -> None:
        self.seen: list[list[list[Candidate]]] = []

    def select(self, items, candidates, judge, *, max_calls=None):  # noqa: ANN001, ANN201 - the Strategy protocol
        self.seen.append([list(c) for c in candidates])
        return [Selection(id=item.id, strategy=self.name, chosen=len(c) - 1, candidates=list(c))
                for item, c in zip(items, candidates)]


class FirstStrategy:
    """Picks the first candidate."""

    name = "first"

    def select(self, items, candidates, judge, *, max_calls=None):  # noqa: ANN001, ANN201 - the Strategy protocol
        return [Selection(id=item.id, strategy=self.name, chosen=0, candidates=list(c))
                for item, c in zip(items, candidates)]


def test_curve_random_and_oracle_exact_and_prefixes() -> None:
    # Correct candidates ('y'): item 0: n y n y, item 1: none, item 2: y y n n.
    pattern = ["nyny", "nnnn", "yynn"]
    curve_items = [Item(f"Q{k}", id=str(k), reference="y") for k in range(3)]
    cands = [[Candidate(f"Answer: {mark}", i) for i, mark in enumerate(row)] for row in pattern]
    recorder = RecordingStrategy()
    curve = scaling_curve(curve_items, cands, None, [4, 1, 2], [recorder])
    assert curve["n"] == [1, 2, 4] and curve["items"] == 3 and curve["candidates_per_item"] == 4
    assert curve["random"] == pytest.approx([1 / 3, (0.5 + 0 + 1) / 3, (0.5 + 0 + 0.5) / 3])
    assert curve["oracle"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # "last" picks candidate N-1: N=1 → 0 (only item 2 right), N=2 → 1 (items 0, 2), N=4 → 3 (item 0).
    assert curve["strategies"]["last"]["accuracy"] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert [[len(c) for c in seen] for seen in recorder.seen] == [[1] * 3, [2] * 3, [4] * 3]
    # Per-item records re-derive each point, and two strategies compare item by item.
    assert curve["strategies"]["last"]["chosen"] == [[0, 0, 0], [1, 1, 1], [3, 3, 3]]
    assert curve["item_ids"] == ["0", "1", "2"] and curve["correct"][2] == [True, True, False, False]
    both = scaling_curve(curve_items, cands, None, [2, 4], [recorder, FirstStrategy()])
    # N=2: "last" (index 1) is right for items 0 and 2, "first" (index 0) for item 2 only; N=4: index 3 vs 0.
    assert paired_counts(both, "last", "first") == [{"n": 2, "only_last": 1, "only_first": 0},
                                                    {"n": 4, "only_last": 1, "only_first": 1}]
    for seen in recorder.seen:
        assert all(given == full[:len(given)] for given, full in zip(seen, cands))
    # A failed candidate is wrong without asking the checker; a custom checker replaces the reference.
    cands[2][0] = Candidate("", 0, error="timeout")
    assert scaling_curve(curve_items, cands, None, [1], ["self_consistency"])["oracle"] == [0.0]
    anything = scaling_curve(curve_items, cands, None, [1], ["self_consistency"], checker=lambda text, item: True)
    assert anything["oracle"] == pytest.approx([2 / 3])
    with pytest.raises(ValueError, match="fewer than 8"):
        scaling_curve(curve_items, cands, None, [8], ["self_consistency"])
    with pytest.raises(ValueError, match="need a judge"):
        scaling_curve(curve_items, cands, None, [1], ["knockout"])
    with pytest.raises(ValueError, match="reference"):
        scaling_curve([Item("Q", id="q")], cands[:1], None, [1], ["self_consistency"])


def test_curve_strategies_nominal_calls_and_oracle_bound() -> None:
    judge, engine = quality_judge(QUALITY)
    cands = [[Candidate(text, k) for k, text in enumerate(table()[item.id])] for item in items()]
    curve = scaling_curve(items(), cands, judge, [1, 2, 4],
                          ["pointwise", "knockout", "round_robin", "self_consistency"])
    lines = curve["strategies"]
    assert set(curve) >= {"n", "strategies", "oracle", "random", "items", "engine_calls_total"}
    assert set(lines["knockout"]) == {"accuracy", "judge_calls", "engine_calls", "no_choice", "chosen"}
    for line in lines.values():
        assert all(acc <= oracle + 1e-12 for acc, oracle in zip(line["accuracy"], curve["oracle"]))
    # Nominal calls are what each N costs on its own; engine calls are less where the shared cache served.
    assert lines["pointwise"]["judge_calls"] == [1, 2, 4]
    assert lines["pointwise"]["engine_calls"] == [1, 1, 2]
    assert lines["knockout"]["judge_calls"] == [0, 2, 6] and lines["knockout"]["engine_calls"] == [0, 2, 4]
    # Round-robin replays the knockout's pairs from the cache: 0v1, 2v3 and the final of every item.
    assert lines["round_robin"]["judge_calls"] == [0, 2, 12] and lines["round_robin"]["engine_calls"] == [0, 0, 6]
    assert lines["self_consistency"]["judge_calls"] == [0, 0, 0]
    assert curve["engine_calls_total"] == len(engine.requests) == 3 * (4 + 6 + 6)
    # Items a, b, c: the best-quality candidates are blue (right), cat (wrong), 1 (right).
    assert lines["knockout"]["accuracy"][-1] == pytest.approx(2 / 3)
    assert curve["oracle"] == pytest.approx([1 / 3, 2 / 3, 1.0])

    # A sampled judge is never cached: nominal and engine calls agree.
    sampled = scaling_curve(items(), cands, SampledJudge(quality_judge(QUALITY)[0], k=2), [2, 4], ["pointwise"])
    assert sampled["strategies"]["pointwise"]["judge_calls"] == sampled["strategies"]["pointwise"]["engine_calls"]
    calls = NominalCalls(JudgeCalls(judge))
    assert calls.with_config(swap=False).config.swap is False and calls.scoped(5).spent == 0
    # An in-batch duplicate counts what judging it would cost: 1 for a valid item, 0 for one that fails before the
    # engine (an empty question).
    twins = [Candidate("zq0x", 0), Candidate("zq0x", 1)]
    [broken, fine] = PointwiseBestOfN().select([Item("", id="q"), Item("Q", id="r")], [twins, twins], calls)
    assert broken.judge_calls == 0 and broken.chosen is None and fine.judge_calls == 1 and calls.nominal == 2


def test_checker_loading() -> None:
    assert load_checker("scaling.curve:reference_checker") is reference_checker
    for bad in ("scaling.curve", "scaling.curve:nothing_here"):
        with pytest.raises(ValueError):
            load_checker(bad)
    assert reference_checker("So the answer is: Blue!", Item("Q", reference="blue"))


def test_curve_cli_json_png_and_saved_candidates(cli, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("matplotlib")
    data = _input(tmp_path)
    saved, out = tmp_path / "cands.jsonl", tmp_path / "curve" / "curve.json"
    common = ["--judge", "J", "--data", str(data), "--n", "1", "2", "4", "--no-progress",
              "--strategies", "pointwise", "knockout", "self_consistency"]
    assert curve_main([*common, "--policy", "P", "--output", str(out), "--save-candidates", str(saved),
                       "--seed", "3"]) == 0
    record = json.loads(out.read_text())
    assert set(record) >= {"n", "strategies", "oracle", "random", "items", "policy", "judge", "sampling"}
    assert record["n"] == [1, 2, 4] and record["items"] == 3 and record["sampling"]["seed"] == 3
    assert set(record["strategies"]) == {"pointwise", "knockout", "self_consistency"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.policy.calls == 1  # sampled once, at the largest N
    assert [len(c) for c in read_candidates(saved).values()] == [4, 4, 4]

    again = tmp_path / "again.json"
    assert curve_main([*common, "--candidates", str(saved), "--output", str(again), "--plot",
                       str(tmp_path / "p.png")]) == 0
    assert cli.policy.calls == 1 and (tmp_path / "p.png").is_file()
    assert json.loads(again.read_text())["strategies"] == record["strategies"]
    assert write_plot(record, tmp_path / "direct.png")


def test_curve_cli_errors(cli, tmp_path: Path) -> None:  # noqa: ANN001
    unlabelled = _write(tmp_path / "u.jsonl", [{"id": "q", "question": "Q?"}])
    with pytest.raises(SystemExit):
        curve_main(["--judge", "J", "--policy", "P", "--data", str(unlabelled), "--output", str(tmp_path / "c.json"),
                    "--no-progress"])
    with pytest.raises(SystemExit):  # no policy and no candidates
        curve_main(["--judge", "J", "--data", str(unlabelled), "--output", str(tmp_path / "c.json")])


# ---------------------------------------------------------------------------------------------------------------
# Tiny real models
# ---------------------------------------------------------------------------------------------------------------


def test_tiny_transformers_policy_and_judge_end_to_end(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    from critic.engines.hf import TransformersEngine
    from scaling.policy import TransformersPolicy

    engine = TransformersEngine.from_pretrained(str(tiny_qwen2_vl_dir), device="cpu", batch_size=8)
    policy = TransformersPolicy(engine.model, engine.processor, batch_size=8)
    judge = Judge(engine, JudgeConfig(critique_max_chars=30))
    image = Path(__file__).parent / "data" / "images" / "red.png"
    real_items = [Item("What colour is the shape?", images=[str(image)], id="red"), Item("Say a word.", id="text")]
    sampling = PolicySampling(max_new_tokens=6, seed=1)
    n = 3
    for strategy, calls in (("knockout", 2 * (n - 1)), ("pointwise", n)):
        selections = BestOfN(policy, judge, strategy, n=n, sampling=sampling).generate(real_items)
        assert [s.id for s in selections] == ["red", "text"]
        for selection in selections:
            assert len(selection.candidates) == n and [c.index for c in selection.candidates] == list(range(n))
            assert all(c.error is None and c.logprob is not None for c in selection.candidates)
            assert selection.chosen is not None and 0 <= selection.chosen < n
            assert selection.judge_calls == calls
            assert selection.ranks[selection.chosen] == 1
            if strategy == "pointwise":
                assert len(selection.judgments) == n and all(j["status"] == "ok" for j in selection.judgments)
            else:
                assert all(m.calls == 2 and m.error is None for m in selection.matches if m.b != -1)
    # The CLI loads one model for both roles when --policy and --judge are the same folder and backend.
    args = build_parser().parse_args(["--policy", str(tiny_qwen2_vl_dir), "--judge", str(tiny_qwen2_vl_dir),
                                      "--input", "x", "--output", "y", "--device", "cpu"])
    shared = load_judge(args, policy)
    assert shared.engine.model is policy.model
