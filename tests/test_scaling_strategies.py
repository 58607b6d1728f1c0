"""Best-of-N strategies against scripted judges with known outcomes: hidden quality orders, ties, intransitive
preferences, failures, call counts, budgets, caching, Bradley–Terry fits and self-consistency."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

import pytest

from critic import Judge, JudgeConfig, JudgeItem, SamplingConfig
from critic.engines.base import Completion, GenerationRequest
from critic.engines.scripted import ScriptedEngine, ScriptedOutput
from critic.types import JudgeResult
from scaling.bradley_terry import fit_bradley_terry
from scaling.calls import BudgetExceeded, JudgeCalls, media_hash
from scaling.pointwise import PointwiseBestOfN, candidate_score
from scaling.registry import STRATEGIES, make_strategy
from scaling.self_consistency import MajorityVote, SampledJudge, default_answer_extractor
from scaling.tournament import Knockout, RoundRobin, Swiss, swiss_pairing
from scaling.types import Candidate, Item, Selection

# ---------------------------------------------------------------------------------------------------------------
# Scripted judges.  Every candidate text carries a tag "zq<k>x"; the script finds the tags in the prompt, in the
# order shown, and answers from a rule over the tags.
# ---------------------------------------------------------------------------------------------------------------

_TAG = re.compile(r"zq(\d+)x")
PROBS = {
    "A": {"A": 0.8, "B": 0.1, "tie": 0.1},
    "B": {"A": 0.1, "B": 0.8, "tie": 0.1},
    "tie": {"A": 0.1, "B": 0.1, "tie": 0.8},
}


def shown(request: GenerationRequest) -> list[int]:
    return [int(t) for t in _TAG.findall(request.prompt.text)]


def make_candidates(tags: Sequence[int], errors: dict[int, str] | None = None) -> list[Candidate]:
    errors = errors or {}
    return [Candidate(text="" if i in errors else f"My reply is zq{tag}x.", index=i, error=errors.get(i))
            for i, tag in enumerate(tags)]


def item(name: str = "q") -> Item:
    return Item(question=f"What is shown in picture {name}?", id=name)


def pairwise_script(label_for: Callable[[int, int], str]) -> Callable[[GenerationRequest], ScriptedOutput]:
    """``label_for(first_tag, second_tag)`` in the shown order -> 'A' / 'B' / 'tie'."""

    def script(request: GenerationRequest) -> ScriptedOutput:
        first, second = shown(request)
        label = label_for(first, second)
        return ScriptedOutput(request.spec.format("Compared both.", label), PROBS[label])

    return script


def quality_judge(quality: dict[int, float], **config: object) -> tuple[Judge, ScriptedEngine]:
    """A judge that always prefers the higher hidden quality (ties on equal quality), consistently in both orders;
    pointwise it gives round(quality) with all the mass on it."""

    def label_for(x: int, y: int) -> str:
        return "A" if quality[x] > quality[y] else "B" if quality[y] > quality[x] else "tie"

    pair = pairwise_script(label_for)

    def script(request: GenerationRequest) -> ScriptedOutput:
        if request.spec.mode == "pointwise":
            [tag] = shown(request)
            label = str(round(quality[tag]))
            return ScriptedOutput(request.spec.format("Scored it.", label), {label: 1.0})
        return pair(request)

    engine = ScriptedEngine(script)
    return Judge(engine, JudgeConfig(**config)), engine  # type: ignore[arg-type]


def best(quality: dict[int, float], tags: Sequence[int]) -> int:
    return max(range(len(tags)), key=lambda i: (quality[tags[i]], -i))


# ---------------------------------------------------------------------------------------------------------------
# Knockout
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_knockout_finds_the_best_and_costs_2_n_minus_1(n: int) -> None:
    rng = random.Random(n)
    tags = list(range(n))
    quality = {t: float(v) for t, v in zip(tags, rng.sample(range(1, 100), n))}
    judge, engine = quality_judge(quality)
    [sel] = Knockout().select([item()], [make_candidates(tags)], judge)
    assert sel.chosen == best(quality, tags)
    assert sel.judge_calls == 2 * (n - 1) == len(engine.requests)
    assert engine.calls == math.ceil(math.log2(n)) if n > 1 else engine.calls == 0  # one judge call per round
    played = [m for m in sel.matches if m.decided_by != "bye"]
    assert len(played) == n - 1 and all(m.calls == 2 and m.decided_by == "judge" for m in played)
    assert sel.ranks[sel.chosen] == 1 and sel.ranks.count(1) == 1
    assert sel.strategy == "knockout" and sel.id == "q"


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_knockout_without_swap_costs_half(n: int) -> None:
    quality = {t: float(t) for t in range(n)}
    judge, engine = quality_judge(quality)
    [sel] = Knockout(swap=False).select([item()], [make_candidates(range(n))], judge)
    assert sel.judge_calls == n - 1 == len(engine.requests)
    assert sel.chosen == n - 1
    # swap=None keeps the judge's own setting.
    judge, engine = quality_judge(quality, swap=False)
    [sel] = Knockout(swap=None).select([item()], [make_candidates(range(n))], judge)
    assert sel.judge_calls == n - 1


def test_knockout_byes_go_to_top_seeds_and_ranks_follow_rounds() -> None:
    quality = {t: float(t) for t in range(5)}  # candidate 4 is best
    judge, _ = quality_judge(quality)
    [sel] = Knockout().select([item()], [make_candidates(range(5))], judge)
    first_round = [m for m in sel.matches if m.round == 1]
    assert [(m.a, m.b, m.decided_by) for m in first_round] == [(0, -1, "bye"), (1, -1, "bye"), (2, -1, "bye"),
                                                              (3, 4, "judge")]
    assert max(m.round for m in sel.matches) == 3
    # Round 2: 0 v 1 and 2 v 4; final 1 v 4.  Champion reached round 4, finalist 3, round-2 losers 2, 3 lost in 1.
    assert sel.chosen == 4
    assert sel.scores == [2.0, 3.0, 2.0, 1.0, 4.0]
    assert sel.ranks == [3, 2, 3, 5, 1]


def test_knockout_batches_items_into_one_call_per_round() -> None:
    quality = {t: float(t % 7) for t in range(100)}
    judge, engine = quality_judge(quality)
    tags = [[3, 1, 6], [10, 11, 12, 13, 14, 15, 16, 17], [20, 21]]
    sels = Knockout().select([item(str(k)) for k in range(3)], [make_candidates(t) for t in tags], judge)
    assert engine.calls == 3  # rounds of the largest bracket, whatever the number of items
    assert [s.chosen for s in sels] == [best(quality, t) for t in tags]
    assert [s.judge_calls for s in sels] == [4, 14, 2] and len(engine.requests) == 20


def test_knockout_tie_goes_to_higher_win_probability() -> None:
    # The judge always says 'tie', but leans towards the better candidate in its probabilities.
    quality = {0: 1.0, 1: 5.0, 2: 3.0, 3: 2.0}

    def script(request: GenerationRequest) -> ScriptedOutput:
        first, second = shown(request)
        ahead = quality[first] > quality[second]
        lean = {"A": 0.3, "B": 0.2, "tie": 0.5} if ahead else {"A": 0.2, "B": 0.3, "tie": 0.5}
        return ScriptedOutput(request.spec.format("About the same.", "tie"), lean)

    [sel] = Knockout().select([item()], [make_candidates(range(4))], Judge(ScriptedEngine(script)))
    assert sel.chosen == 1
    assert all(m.verdict == "tie" and m.decided_by == "rule" and m.error is None for m in sel.matches)


def test_knockout_exact_tie_and_failures_advance_the_lower_index() -> None:
    judge, _ = quality_judge({t: 1.0 for t in range(4)})
    [sel] = Knockout().select([item()], [make_candidates(range(4))], judge)
    assert sel.chosen == 0 and all(m.winner == min(m.a, m.b) and m.decided_by == "rule" for m in sel.matches)

    # Unparseable output everywhere: never crashes, lower index advances, the parse error is recorded.
    garbage = Judge(ScriptedEngine(lambda r: "I like the second one best, clearly B."))
    [sel] = Knockout().select([item()], [make_candidates(range(5))], garbage)
    assert sel.chosen == 0 and sel.judge_calls == 8  # failed judgments still cost their generations
    played = [m for m in sel.matches if m.decided_by != "bye"]
    assert all(m.decided_by == "rule" and m.verdict is None and m.error.startswith("parse") for m in played)


def test_knockout_engine_error_in_one_match_only() -> None:
    quality = {t: float(t) for t in range(4)}
    _, good_engine = quality_judge(quality)

    def script(request: GenerationRequest) -> ScriptedOutput | Completion:
        if set(shown(request)) == {2, 3}:
            return Completion(error="server returned 503", error_kind="engine")
        return good_engine.script(request)

    [sel] = Knockout().select([item()], [make_candidates(range(4))], Judge(ScriptedEngine(script)))
    failed = [m for m in sel.matches if m.error]
    assert [(m.a, m.b, m.winner, m.decided_by) for m in failed] == [(2, 3, 2, "rule")]
    assert "503" in failed[0].error and failed[0].error.startswith("engine")
    assert sel.chosen == 2  # 2 advanced by rule, then beat 1 on the judge's verdict
    assert sel.judge_calls == 6


def test_rock_paper_scissors_knockout_is_decided_by_the_bracket() -> None:
    # 0 beats 1, 1 beats 2, 2 beats 0.
    beats = {(0, 1), (1, 2), (2, 0)}
    judge = Judge(ScriptedEngine(pairwise_script(lambda x, y: "A" if (x, y) in beats else "B")))
    [sel] = Knockout().select([item()], [make_candidates(range(3))], judge)
    # Bye for 0; 1 beats 2; final 0 v 1: 0 wins.
    assert sel.chosen == 0 and sel.judge_calls == 4


def test_failed_candidates_lose_by_forfeit_and_are_never_chosen() -> None:
    quality = {t: float(t) for t in range(5)}
    judge, engine = quality_judge(quality)
    cands = make_candidates(range(5), errors={4: "policy timed out", 3: "policy timed out"})
    [sel] = Knockout().select([item()], [cands], judge)
    assert sel.chosen == 2
    forfeits = [m for m in sel.matches if m.error and "no response" in m.error]
    assert forfeits and all(m.decided_by == "rule" and m.calls == 0 for m in forfeits)
    assert sel.judge_calls == 2 * (3 - 1) == len(engine.requests)  # only the 3 valid candidates are judged
    assert sel.scores[3] is None and sel.ranks[4] is None
    assert all("zq3x" not in r.prompt.text and "zq4x" not in r.prompt.text for r in engine.requests)

    [sel] = RoundRobin().select([item()], [cands], judge)
    assert sel.chosen == 2 and sel.scores[4] is None and sel.ranks[3] is None
    assert sum(1 for m in sel.matches if m.decided_by == "rule") == 7  # 3×2 forfeits + the (3, 4) pair
    assert sel.judge_calls == 6


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_item_without_valid_candidates(strategy: str) -> None:
    judge, engine = quality_judge({0: 1.0, 1: 2.0})
    empty = make_candidates([0, 1], errors={0: "oom", 1: "oom"})
    sels = make_strategy(strategy).select([item("a"), item("b")], [empty, make_candidates([0, 1])], judge)
    assert sels[0].chosen is None and sels[0].error and sels[0].judge_calls == 0
    assert sels[0].ranks == [None, None]
    assert sels[1].chosen in (0, 1) and sels[1].error is None
    assert all("zq" in r.prompt.text for r in engine.requests)


# ---------------------------------------------------------------------------------------------------------------
# Round-robin and Swiss
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_round_robin_ranks_the_hidden_order(n: int) -> None:
    rng = random.Random(100 + n)
    quality = {t: float(v) for t, v in zip(range(n), rng.sample(range(1, 100), n))}
    judge, engine = quality_judge(quality)
    [sel] = RoundRobin().select([item()], [make_candidates(range(n))], judge)
    assert sel.chosen == best(quality, range(n))
    assert sel.judge_calls == n * (n - 1) and engine.calls == 1
    by_quality = sorted(range(n), key=lambda i: -quality[i])
    assert [sel.ranks[i] for i in by_quality] == list(range(1, n + 1))
    assert sorted(sel.scores, reverse=True) == [sel.scores[i] for i in by_quality]
    assert math.prod(sel.scores) == pytest.approx(1.0)  # strengths: log-strengths sum to 0

    judge, engine = quality_judge(quality)
    [sel] = RoundRobin(swap=False).select([item()], [make_candidates(range(n))], judge)
    assert sel.judge_calls == n * (n - 1) // 2 == len(engine.requests)


def test_round_robin_keeps_ties_and_failures_count_as_ties() -> None:
    judge, _ = quality_judge({t: 1.0 for t in range(3)})
    [sel] = RoundRobin().select([item()], [make_candidates(range(3))], judge)
    assert all(m.winner is None and m.decided_by == "judge" and m.verdict == "tie" for m in sel.matches)
    assert sel.scores == pytest.approx([1.0, 1.0, 1.0]) and sel.ranks == [1, 1, 1] and sel.chosen == 0

    def script(request: GenerationRequest) -> ScriptedOutput | Completion:
        if 0 in shown(request):
            return Completion(error="CUDA error", error_kind="engine")
        return pairwise_script(lambda x, y: "A" if x > y else "B")(request)

    [sel] = RoundRobin().select([item()], [make_candidates(range(3))], Judge(ScriptedEngine(script)))
    failed = [m for m in sel.matches if m.error]
    assert len(failed) == 2 and all(m.winner is None and m.decided_by == "rule" for m in failed)
    assert sel.chosen == 2 and sel.judge_calls == 6


def test_rock_paper_scissors_round_robin_gives_equal_strengths() -> None:
    beats = {(0, 1), (1, 2), (2, 0)}
    judge = Judge(ScriptedEngine(pairwise_script(lambda x, y: "A" if (x, y) in beats else "B")))
    [sel] = RoundRobin().select([item()], [make_candidates(range(3))], judge)
    assert sel.scores == pytest.approx([1.0, 1.0, 1.0])
    assert sel.ranks == [1, 1, 1] and sel.chosen == 0  # all equal: the earliest sample


def test_swiss_pairs_near_scores_without_rematches() -> None:
    quality = {t: float(t) for t in range(8)}
    judge, engine = quality_judge(quality)
    [sel] = Swiss(rounds=3).select([item()], [make_candidates(range(8))], judge)
    assert sel.chosen == 7 and engine.calls == 3 and sel.judge_calls == 3 * 4 * 2
    pairs = [frozenset((m.a, m.b)) for m in sel.matches]
    assert len(pairs) == len(set(pairs)) == 12
    # Round 2 pairs the 1-0 candidates together: 1, 3, 5, 7 won round 1 (0v1, 2v3, 4v5, 6v7).
    round2 = {frozenset((m.a, m.b)) for m in sel.matches if m.round == 2}
    assert round2 == {frozenset((7, 5)), frozenset((3, 1)), frozenset((6, 4)), frozenset((2, 0))}
    assert sel.ranks[7] == 1 and sel.ranks[0] == 8


def test_swiss_byes_and_early_end() -> None:
    quality = {t: float(t) for t in range(3)}
    judge, engine = quality_judge(quality)
    [sel] = Swiss(rounds=5).select([item()], [make_candidates(range(3))], judge)
    byes = [m for m in sel.matches if m.decided_by == "bye"]
    assert len(byes) == 3 and len({m.a for m in byes}) == 3  # each candidate sits out once
    played = [m for m in sel.matches if m.decided_by != "bye"]
    assert len(played) == 3 and engine.calls == 3  # all three pairs met: rounds 4-5 are not played
    assert sel.chosen == 2


def test_swiss_pairing_backtracks_and_gives_up_gracefully() -> None:
    met = {frozenset((0, 1)), frozenset((2, 3))}
    assert swiss_pairing([0, 1, 2, 3], met, set()) == [(0, 2), (1, 3)]
    everyone = {frozenset((a, b)) for a in range(4) for b in range(a + 1, 4)}
    assert swiss_pairing([0, 1, 2, 3], everyone, set()) == []


# ---------------------------------------------------------------------------------------------------------------
# Call accounting, budget, cache
# ---------------------------------------------------------------------------------------------------------------


def test_call_counts_and_failed_inputs_cost_nothing() -> None:
    judge, engine = quality_judge({0: 1.0, 1: 2.0})
    calls = JudgeCalls(judge)
    batch = calls.judge_counted([
        JudgeItem(question="Q", response_a="zq0x", response_b="zq1x"),
        JudgeItem(question="Q", response="zq1x"),
        JudgeItem(question="", response="zq1x"),  # input error: never reaches the engine
    ])
    assert batch.calls == [2, 1, 0] and calls.spent == 3 == len(engine.requests)
    assert batch.results[2].error.kind == "input"
    noswap = calls.with_config(swap=False)
    assert noswap.judge_counted([JudgeItem(question="Q", response_a="zq0x", response_b="zq1x")]).calls == [1]
    assert calls.spent == 4  # a view charges its parent


def test_budget_is_enforced_before_sending() -> None:
    judge, engine = quality_judge({t: float(t) for t in range(4)})
    with pytest.raises(BudgetExceeded) as caught:
        RoundRobin().select([item()], [make_candidates(range(4))], judge, max_calls=11)
    assert engine.calls == 0 and caught.value.asked == 12 and caught.value.budget == 11 and caught.value.spent == 0
    assert "0 spent" in str(caught.value) and "12" in str(caught.value) and "11" in str(caught.value)

    # Knockout of 4: round 1 costs 4, the final 2; a budget of 5 fails before the final is sent.
    calls = JudgeCalls(judge, max_calls=5)
    with pytest.raises(BudgetExceeded) as caught:
        Knockout().select([item()], [make_candidates(range(4))], calls)
    assert calls.spent == 4 and caught.value.spent == 4 and caught.value.asked == 2
    [sel] = Knockout().select([item()], [make_candidates(range(4))], judge, max_calls=6)
    assert sel.judge_calls == 6


def test_greedy_results_are_cached_and_sampled_never() -> None:
    judge, engine = quality_judge({t: float(t) for t in range(4)})
    calls = JudgeCalls(judge)
    first = RoundRobin().select([item()], [make_candidates(range(4))], calls)
    served = len(engine.requests)
    again = RoundRobin().select([item()], [make_candidates(range(4))], calls)
    assert len(engine.requests) == served and again[0].judge_calls == 0 and calls.hits == 6
    assert again[0].chosen == first[0].chosen == 3

    # A budgeted view shares the cache: a zero budget still works when everything is cached.
    [sel] = Knockout().select([item()], [make_candidates(range(4))], calls, max_calls=0)
    assert sel.chosen == 3 and sel.judge_calls == 0

    pair = JudgeItem(question="Q", response_a="zq0x", response_b="zq1x")
    sampled = SamplingConfig(temperature=0.7, seed=1)
    before = len(engine.requests)
    assert calls.judge_counted([pair, pair], sampled).calls == [2, 2]
    assert calls.judge_counted([pair], sampled).calls == [2]
    assert len(engine.requests) == before + 6

    # Duplicates inside one greedy batch are judged once; the copy keeps its own id.
    fresh = JudgeCalls(judge)
    batch = fresh.judge_counted([JudgeItem(id="x", question="Q", response="zq2x"),
                                 JudgeItem(id="y", question="Q", response="zq2x")])
    assert batch.calls == [1, 0] and batch.cached == [False, True] and batch.results[1].id == "y"


def test_cache_key_includes_image_content(tmp_path) -> None:
    from PIL import Image

    first, second = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), "red").save(first)
    Image.new("RGB", (4, 4), "blue").save(second)
    assert media_hash(str(first)) != media_hash(str(second))
    assert media_hash(first.read_bytes()) == media_hash(first.read_bytes())
    judge, engine = quality_judge({0: 1.0})
    calls = JudgeCalls(judge)
    same = [JudgeItem(question="Q", response="zq0x", images=[str(first)]) for _ in range(2)]
    other = JudgeItem(question="Q", response="zq0x", images=[str(second)])
    assert calls.judge_counted(same + [other]).calls == [1, 0, 1]


def test_failed_results_are_not_cached() -> None:
    state = {"fail": True}

    def script(request: GenerationRequest) -> ScriptedOutput | Completion:
        if state["fail"]:
            return Completion(error="timeout", error_kind="engine")
        return ScriptedOutput(request.spec.format("ok", "5"), {"5": 1.0})

    calls = JudgeCalls(Judge(ScriptedEngine(script)))
    one = JudgeItem(question="Q", response="R")
    assert not calls.judge([one])[0].ok
    state["fail"] = False
    batch = calls.judge_counted([one])
    assert batch.results[0].ok and batch.calls == [1] and calls.spent == 2


# ---------------------------------------------------------------------------------------------------------------
# Bradley–Terry
# ---------------------------------------------------------------------------------------------------------------


def test_bradley_terry_two_players_matches_the_closed_form() -> None:
    outcomes = [(0, 1, 1.0)] * 3 + [(0, 1, 0.0)] + [(0, 1, 0.5)] * 2
    fit = fit_bradley_terry(2, outcomes)
    assert fit.converged
    assert fit.strengths[0] / fit.strengths[1] == pytest.approx(3.0, rel=1e-8)
    assert fit.tie_parameter == pytest.approx(2 / math.sqrt(3), rel=1e-8)
    assert sum(fit.log_strengths) == pytest.approx(0.0, abs=1e-12)
    # The same outcomes seen from the other side give the mirrored fit.
    mirrored = fit_bradley_terry(2, [(1, 0, 1.0 - r) for _, _, r in outcomes])
    assert mirrored.strengths == pytest.approx(fit.strengths)
    # Ties as half-wins: 4 "wins" to 2, ratio 2, no tie parameter.
    half = fit_bradley_terry(2, outcomes, ties="half")
    assert half.strengths[0] / half.strengths[1] == pytest.approx(2.0) and half.tie_parameter == 0.0


def test_bradley_terry_cycle_and_existence() -> None:
    cycle = fit_bradley_terry(3, [(0, 1, 1.0), (1, 2, 1.0), (2, 0, 1.0)])
    assert cycle.converged and cycle.strengths == pytest.approx([1.0, 1.0, 1.0])
    chain = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0)]
    assert not fit_bradley_terry(3, chain).converged  # the unbeaten player has no finite MLE
    penalised = fit_bradley_terry(3, chain, prior=0.1)
    assert penalised.converged and penalised.strengths[0] > penalised.strengths[1] > penalised.strengths[2]
    assert all(math.isfinite(s) for s in penalised.strengths)
    assert not fit_bradley_terry(2, [(0, 1, 1.0), (0, 1, 0.5)]).converged  # won and tied, never lost
    assert fit_bradley_terry(2, [(0, 1, 0.5)]).tie_parameter == math.inf
    with pytest.raises(ValueError):
        fit_bradley_terry(2, [(0, 0, 1.0)])
    with pytest.raises(ValueError):
        fit_bradley_terry(2, [(0, 1, 0.3)])


def _davidson_objective(theta: Sequence[float], nu: float, outcomes: Sequence[tuple[int, int, float]],
                        prior: float) -> float:
    """The penalised Davidson log-likelihood, written out directly from the model's definition."""
    total = -0.5 * prior * sum(t * t for t in theta)
    for i, j, result in outcomes:
        pi, pj = math.exp(theta[i]), math.exp(theta[j])
        tie = nu * math.sqrt(pi * pj)
        total += math.log({1.0: pi, 0.0: pj, 0.5: tie}[result] / (pi + pj + tie))
    return total


def test_bradley_terry_penalised_fit_is_a_maximum() -> None:
    outcomes = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0), (2, 3, 0.5), (1, 3, 1.0), (3, 1, 1.0), (0, 3, 0.5)]
    fit = fit_bradley_terry(4, outcomes, prior=0.1)
    theta, nu = fit.log_strengths, fit.tie_parameter
    assert fit.converged and nu > 0
    at_fit = _davidson_objective(theta, nu, outcomes, 0.1)
    for k in range(4):
        for step in (-1e-4, 1e-4):
            moved = list(theta)
            moved[k] += step
            assert _davidson_objective(moved, nu, outcomes, 0.1) < at_fit
    for factor in (0.999, 1.001):
        assert _davidson_objective(theta, nu * factor, outcomes, 0.1) < at_fit


# ---------------------------------------------------------------------------------------------------------------
# Self-consistency
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "answer"), [
    ("It is a red circle.", "red circle"),
    ("a red circle", "red circle"),
    ("Let me look. The shape is round.\nThe answer is: (B).", "b"),
    ("Reasoning first. Answer: 3.5", "3.5"),
    ("The answer is Paris. It is the capital.", "paris"),
    ("First line.\nThe last line, here!", "last line here"),
    ("", ""),
])
def test_default_answer_extractor(text: str, answer: str) -> None:
    assert default_answer_extractor(text) == answer


def test_majority_vote() -> None:
    texts = ["It is blue.", "a red circle", "The answer is blue", "It is a red circle.", "green", "It is blue!"]
    cands = [Candidate(text=t, index=i) for i, t in enumerate(texts)]
    cands.append(Candidate(text="", index=6, error="policy failed"))
    [sel] = MajorityVote().select([item()], [cands])
    assert sel.chosen == 0 and sel.judge_calls == 0
    assert sel.scores[:6] == pytest.approx([0.5, 2 / 6, 0.5, 2 / 6, 1 / 6, 0.5]) and sel.scores[6] is None
    assert [c.answer for c in sel.candidates[:5]] == ["blue", "red circle", "blue", "red circle", "green"]
    assert sel.ranks == [1, 4, 2, 5, 6, 3, None]
    assert cands[0].answer is None  # the caller's candidates are not modified
    # A tie of group sizes goes to the group whose first member came first.
    [tie] = MajorityVote().select([item()], [[Candidate("green", 0), Candidate("red", 1), Candidate("red", 2),
                                              Candidate("green", 3)]])
    assert tie.chosen == 0


class SeedRecordingEngine(ScriptedEngine):
    """A scripted engine that also records the sampling configuration of each call."""

    def __init__(self, script: Callable[[GenerationRequest], object]) -> None:
        super().__init__(script)  # type: ignore[arg-type]
        self.samplings: list[SamplingConfig] = []

    def generate(self, requests, sampling):  # noqa: ANN001, ANN201 - same signature as the base class
        self.samplings.append(sampling)
        return super().generate(requests, sampling)


def _per_call_script(outputs: list[dict[str, float]], label: Callable[[dict[str, float]], str]):  # noqa: ANN202
    """Call k of the engine answers with outputs[k] (the k-th sample)."""
    holder: dict[str, SeedRecordingEngine] = {}

    def script(request: GenerationRequest) -> ScriptedOutput:
        probs = outputs[holder["engine"].calls - 1]
        return ScriptedOutput(request.spec.format("Sampled.", label(probs)), probs)

    engine = SeedRecordingEngine(script)
    holder["engine"] = engine
    return engine


def test_sampled_judge_mean_vs_majority() -> None:
    samples = [{"A": 0.98, "B": 0.01, "tie": 0.01}, {"A": 0.3, "B": 0.6, "tie": 0.1}, {"A": 0.3, "B": 0.6, "tie": 0.1}]
    pick = lambda p: max(p, key=p.get)  # noqa: E731
    pair = JudgeItem(question="Q", response_a="zq0x", response_b="zq1x")

    engine = _per_call_script(samples, pick)
    mean = SampledJudge(Judge(engine, JudgeConfig(swap=False)), k=3, temperature=0.7, seed=10)
    batch = mean.judge_counted([pair])
    [result] = batch.results
    assert result.verdict == "A"
    assert result.probabilities == pytest.approx({"A": 1.58 / 3, "B": 1.21 / 3, "tie": 0.21 / 3})
    assert [s.seed for s in engine.samplings] == [10, 11, 12]
    assert all(s.temperature == 0.7 for s in engine.samplings)
    assert batch.calls == [3] and mean.spent == 3 and len(result.judgments) == 3

    engine = _per_call_script(samples, pick)
    majority = SampledJudge(Judge(engine, JudgeConfig(swap=False)), k=3, combine="majority")
    [result] = majority.judge([pair])
    assert result.verdict == "B" and result.probabilities == pytest.approx({"A": 1 / 3, "B": 2 / 3, "tie": 0.0})


def test_sampled_judge_pointwise_drops_failures_and_is_never_cached() -> None:
    outputs = [{"7": 1.0}, {"9": 0.5, "10": 0.5}, {}]

    def label(probs: dict[str, float]) -> str:
        return max(probs, key=probs.get) if probs else "garbage"

    holder: dict[str, ScriptedEngine] = {}

    def script(request: GenerationRequest) -> ScriptedOutput | str:
        probs = outputs[holder["engine"].calls - 1]
        return ScriptedOutput(request.spec.format("Fine.", label(probs)), probs) if probs else "no verdict here"

    engine = ScriptedEngine(script)
    holder["engine"] = engine
    calls = JudgeCalls(Judge(engine))
    sampled = SampledJudge(calls, k=3)
    one = JudgeItem(question="Q", response="R")
    [result] = sampled.judge([one])
    assert result.ok and result.expected_score == pytest.approx((7.0 + 9.5) / 2)
    assert len(result.judgments) == 2  # the unparseable third sample is dropped
    assert calls.spent == 3 and calls.hits == 0

    outputs[:] = [{}, {}, {}, {}, {}, {}]
    [failed] = sampled.judge([one])  # sampled again: nothing served from a cache
    assert failed.error.kind == "parse" and "all 3 samples failed" in failed.error.message
    assert calls.spent == 6 and engine.calls == 6


def test_sampled_judge_inside_a_strategy_and_budget() -> None:
    quality = {t: float(t) for t in range(4)}
    judge, engine = quality_judge(quality)
    sampled = SampledJudge(judge, k=3)
    [sel] = Knockout().select([item()], [make_candidates(range(4))], sampled)
    assert sel.chosen == 3 and sel.judge_calls == 3 * 2 * 3 and engine.calls == 2 * 3
    with pytest.raises(BudgetExceeded):
        RoundRobin().select([item()], [make_candidates(range(4))], sampled, max_calls=35)
    assert engine.calls == 6  # refused before the first of the 3 samples
    with pytest.raises(ValueError):
        SampledJudge(judge, k=2, temperature=0.0)


# ---------------------------------------------------------------------------------------------------------------
# Pointwise
# ---------------------------------------------------------------------------------------------------------------


def test_pointwise_picks_the_best_in_one_call() -> None:
    quality = {0: 4.0, 1: 9.0, 2: 9.0, 3: 2.0, 10: 3.0, 11: 8.0}
    judge, engine = quality_judge(quality)
    sels = PointwiseBestOfN().select([item("a"), item("b")], [make_candidates([0, 1, 2, 3]), make_candidates([10, 11])],
                                     judge)
    assert engine.calls == 1 and len(engine.requests) == 6
    assert sels[0].chosen == 1  # 1 and 2 tie at 9: the lower index
    assert sels[0].scores == [4.0, 9.0, 9.0, 2.0] and sels[0].ranks == [3, 1, 1, 4]
    assert sels[1].chosen == 1 and [s.judge_calls for s in sels] == [4, 2]
    assert sels[0].judgments[1]["score"] == 9


def test_pointwise_uses_expected_score_and_skips_failures() -> None:
    def script(request: GenerationRequest) -> ScriptedOutput | Completion:
        [tag] = shown(request)
        if tag == 0:
            return Completion(error="server returned 500", error_kind="engine")
        probs = {"8": 0.5, "2": 0.5} if tag == 1 else {"6": 1.0}  # expected 5.0 vs 6.0
        return ScriptedOutput(request.spec.format("Scored.", max(probs, key=probs.get)), probs)

    [sel] = PointwiseBestOfN().select([item()], [make_candidates([0, 1, 2])], Judge(ScriptedEngine(script)))
    assert sel.scores == [None, 5.0, 6.0] and sel.chosen == 2 and sel.ranks == [None, 2, 1]
    assert sel.judgments[0]["status"] == "error" and sel.judge_calls == 3

    broken = Judge(ScriptedEngine(lambda r: Completion(error="down", error_kind="engine")))
    [sel] = PointwiseBestOfN().select([item()], [make_candidates([0, 1])], broken)
    assert sel.chosen is None and "every judgment failed" in sel.error and sel.judge_calls == 2
    assert candidate_score(JudgeResult(id=None, mode="pointwise", verdict="7", score=7)) == 7.0


def test_weighted_pointwise_pools_equal_answers() -> None:
    texts = ["It is blue. zq0x", "It is red. zq1x", "It is red! zq2x", "It is red. zq3x"]
    # Note: the tag is the last sentence here, so use an extractor that reads the colour.
    extractor = lambda text: default_answer_extractor(text.split(" zq")[0])  # noqa: E731
    quality = {0: 9.0, 1: 4.0, 2: 6.0, 3: 6.0}
    judge, _ = quality_judge(quality)
    cands = [Candidate(text=t, index=i) for i, t in enumerate(texts)]
    [plain] = PointwiseBestOfN().select([item()], [cands], judge)
    [pooled] = PointwiseBestOfN(weighted=True, extractor=extractor).select([item()], [cands], judge)
    assert plain.chosen == 0
    assert pooled.chosen == 2 and pooled.strategy == "pointwise_weighted"  # red pools 16 > blue 9; 2 ties 3
    assert pooled.scores == [9.0, 16.0, 16.0, 16.0] and pooled.ranks == [4, 3, 1, 1]
    assert [c.answer for c in pooled.candidates] == ["blue", "red", "red", "red"]


# ---------------------------------------------------------------------------------------------------------------
# Registry and records
# ---------------------------------------------------------------------------------------------------------------


def test_registry_and_selection_round_trip() -> None:
    assert set(STRATEGIES) == {"pointwise", "pointwise_weighted", "knockout", "round_robin", "swiss",
                               "self_consistency"}
    assert make_strategy("swiss", rounds=2).rounds == 2
    assert make_strategy("pointwise_weighted").weighted is True
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("best_guess")
    judge, _ = quality_judge({t: float(t + 1) for t in range(3)})
    for name in STRATEGIES:
        [sel] = make_strategy(name).select([item()], [make_candidates(range(3))], judge)
        assert sel.strategy == name
        again = Selection.from_dict(sel.to_dict())
        assert again == sel
