"""Pairwise best-of-N: knockout, round-robin and Swiss tournaments between an item's candidates.

Every strategy batches across items: each round is ONE judge call covering every item's matches of that round.
With swap each match is judged in both orders and costs 2 judge calls; ``swap=False`` halves the cost and leaves
position bias in.  The default, ``swap=None``, keeps the judge's own setting (``JudgeConfig.swap``, on by default), so
a judge configured without swap is not silently overridden.

* :class:`Knockout` – single elimination.  Candidates are seeded by index (the order they were sampled in); when N
  is not a power of two the top seeds (lowest indices) get byes in round 1, so every later round is a power of
  two.  Each round re-pairs the survivors in index order.  N − 1 matches in ⌈log2 N⌉ rounds: exactly 2(N − 1)
  judge calls per item with swap.  Candidates are ranked by the round they reached (champion 1, finalist 2, ...).
* :class:`RoundRobin` – every pair once (N(N − 1)/2 matches, one call).
* :class:`Swiss` – a fixed number of rounds; each round pairs candidates with equal or near points that have not
  met (backtracking, so a pairing without rematches is found when one exists); with an odd number of players the
  lowest-placed one without a bye so far gets a bye (a full point, no match).  A round in which no new pair can
  meet ends the tournament early.

Round-robin and Swiss rank by Bradley–Terry strengths (:mod:`scaling.bradley_terry`, Davidson ties, prior 0.1 so
unbeaten candidates stay finite) fitted to the matches between candidates with responses; equal strengths (within
1e-9) are ordered by points, then by index.  ``Selection.scores`` holds the strengths.

**Match rules for ties and failures** (a tournament never crashes on a judgment):

* Knockout: a 'tie' verdict goes to the candidate with the higher probability of winning (P(A) vs P(B)); if those
  are equal, or the judgment failed (engine error, unparseable output), the lower index (the earlier sample)
  advances.  Such matches have ``decided_by="rule"``, and a failure's reason is kept in ``Match.error``.
* Round-robin and Swiss keep a tie as a tie (``winner=None``, half a point each, a tie for Bradley–Terry); a
  failed judgment counts as a tie with ``decided_by="rule"`` and its reason in ``Match.error``.
* A candidate whose ``error`` is set (the policy produced nothing) is never judged: it loses every knockout or
  round-robin match by forfeit (``decided_by="rule"``, 0 calls; two such candidates: the lower index advances in a
  knockout, a tie in a round-robin), Swiss does not pair it at all, and its score and rank are None.  Forfeits do
  not enter the Bradley–Terry fit: they say nothing about the quality of the candidates that have responses.
"""

from __future__ import annotations

from collections.abc import Sequence

from critic.types import JudgeItem, JudgeResult
from scaling.bradley_terry import fit_bradley_terry
from scaling.calls import CountedResults, CountingJudge
from scaling.strategy import (
    JudgeLike,
    best_index,
    check_shapes,
    competition_ranks,
    counting,
    describe_error,
    no_valid_candidate,
    round_key,
    valid_indices,
)
from scaling.types import Candidate, Item, Match, Selection

BT_PRIOR = 0.1
"""L2 prior on log-strengths for tournament rankings: keeps unbeaten candidates finite (see bradley_terry)."""

_SWISS_SEARCH_STEPS = 10_000
"""Cap on the backtracking search for a rematch-free Swiss pairing; past it, a greedy pairing is used."""

Pair = tuple[int, int, int]
"""(item position, candidate a, candidate b): one comparison to send to the judge."""


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------


def _judge_view(judge: JudgeLike, max_calls: int | None, swap: bool | None) -> CountingJudge:
    calls = counting(judge, max_calls)
    if swap is not None and calls.config.swap != swap:
        calls = calls.with_config(swap=swap)
    return calls


def play(calls: CountingJudge, items: Sequence[Item], candidates: Sequence[Sequence[Candidate]],
         pairs: Sequence[Pair]) -> CountedResults:
    """Judge every pair in one call: candidate ``a`` is Response A, ``b`` Response B."""
    batch = [
        JudgeItem(question=items[n].question, response_a=candidates[n][a].text, response_b=candidates[n][b].text,
                  images=list(items[n].images), video=items[n].video,
                  id=f"{n if items[n].id is None else items[n].id}:{a}v{b}")
        for n, a, b in pairs
    ]
    return calls.judge_counted(batch)


def decide(a: int, b: int, result: JudgeResult, calls: int, round: int, *, keep_ties: bool) -> Match:
    """The match of ``a`` (shown as A) against ``b`` under the module's tie and failure rules."""
    if not result.ok:
        # Failed judgment: a tie by rule (round-robin, Swiss), or the lower index advances (knockout).
        return Match(a=a, b=b, winner=None if keep_ties else min(a, b), verdict=None, decided_by="rule",
                     round=round, error=describe_error(result), calls=calls)
    probabilities = dict(result.probabilities)
    if result.verdict in ("A", "B"):
        return Match(a=a, b=b, winner=a if result.verdict == "A" else b, verdict=result.verdict,
                     probabilities=probabilities, round=round, calls=calls)
    if keep_ties:
        return Match(a=a, b=b, winner=None, verdict=result.verdict, probabilities=probabilities, round=round,
                     calls=calls)
    p_a, p_b = probabilities.get("A", 0.0), probabilities.get("B", 0.0)
    winner = a if p_a > p_b else b if p_b > p_a else min(a, b)
    return Match(a=a, b=b, winner=winner, verdict=result.verdict, probabilities=probabilities, decided_by="rule",
                 round=round, calls=calls)


def forfeit(a: int, b: int, cands: Sequence[Candidate], round: int, *, keep_ties: bool) -> Match:
    """A match in which at least one side has no response: it is not judged."""
    missing = [i for i in (a, b) if cands[i].error is not None]
    reason = "; ".join(f"candidate {i} has no response ({cands[i].error})" for i in missing)
    if len(missing) == 1:
        winner: int | None = b if missing[0] == a else a
    else:
        winner = None if keep_ties else min(a, b)
    return Match(a=a, b=b, winner=winner, verdict=None, decided_by="rule", round=round, error=reason)


def bye(a: int, round: int) -> Match:
    return Match(a=a, b=-1, winner=a, verdict=None, decided_by="bye", round=round)


def _league_selection(name: str, item: Item, cands: list[Candidate], matches: list[Match]) -> Selection:
    """Round-robin / Swiss: Bradley–Terry strengths over the judged (and rule-tied) matches, ranks, the choice."""
    valid = valid_indices(cands)
    slot = {i: k for k, i in enumerate(valid)}  # candidate index -> Bradley–Terry player
    points = {i: 0.0 for i in valid}
    outcomes = []
    for match in matches:
        if match.b == -1:  # Swiss bye: a point for pairing, no evidence about strength
            points[match.a] += 1.0
            continue
        if match.a not in slot or match.b not in slot:  # forfeits
            continue
        result = 1.0 if match.winner == match.a else 0.0 if match.winner == match.b else 0.5
        points[match.a] += result
        points[match.b] += 1.0 - result
        outcomes.append((slot[match.a], slot[match.b], result))
    fit = fit_bradley_terry(len(valid), outcomes, ties="davidson", prior=BT_PRIOR)
    scores: list[float | None] = [None] * len(cands)
    keys: list[tuple | None] = [None] * len(cands)
    for i in valid:
        scores[i] = fit.strengths[slot[i]]
        keys[i] = (round_key(fit.strengths[slot[i]]), points[i])
    return Selection(id=item.id, strategy=name, chosen=best_index(keys), candidates=cands, scores=scores,
                     ranks=competition_ranks(keys), matches=matches, judge_calls=sum(m.calls for m in matches))


# ---------------------------------------------------------------------------------------------------------------
# Knockout
# ---------------------------------------------------------------------------------------------------------------


class Knockout:
    """Single elimination with byes for the top seeds (see the module docstring)."""

    name = "knockout"

    def __init__(self, swap: bool | None = None) -> None:
        self.swap = swap

    def select(
        self,
        items: Sequence[Item],
        candidates: Sequence[Sequence[Candidate]],
        judge: JudgeLike,
        *,
        max_calls: int | None = None,
    ) -> list[Selection]:
        check_shapes(items, candidates)
        calls = _judge_view(judge, max_calls, self.swap)
        cands = [list(c) for c in candidates]
        playing = [n for n, c in enumerate(cands) if valid_indices(c)]
        fields = {n: list(range(len(cands[n]))) for n in playing}  # who is still in, per item
        reached = {n: [1] * len(cands[n]) for n in playing}          # the round each candidate reached
        matches: dict[int, list[Match]] = {n: [] for n in playing}
        round = 1
        while any(len(field) > 1 for field in fields.values()):
            # Per item, this round's slots: a finished Match (bye, forfeit) or the position of a pair to judge.
            slots: dict[int, list[Match | int]] = {}
            pairs: list[Pair] = []
            for n, field in fields.items():
                if len(field) < 2:
                    continue
                byes = _next_power_of_two(len(field)) - len(field)
                slots[n] = [bye(i, round) for i in field[:byes]]
                rest = field[byes:]
                for a, b in zip(rest[0::2], rest[1::2]):
                    if cands[n][a].error is None and cands[n][b].error is None:
                        slots[n].append(len(pairs))
                        pairs.append((n, a, b))
                    else:
                        slots[n].append(forfeit(a, b, cands[n], round, keep_ties=False))
            counted = play(calls, items, cands, pairs) if pairs else None
            for n, entries in slots.items():
                survivors = []
                for entry in entries:
                    if isinstance(entry, int):
                        assert counted is not None
                        _, a, b = pairs[entry]
                        entry = decide(a, b, counted.results[entry], counted.calls[entry], round, keep_ties=False)
                    matches[n].append(entry)
                    assert entry.winner is not None
                    survivors.append(entry.winner)
                    reached[n][entry.winner] = round + 1
                fields[n] = sorted(survivors)
            round += 1

        selections = []
        for n, (item, item_cands) in enumerate(zip(items, cands)):
            if n not in fields:
                selections.append(no_valid_candidate(item, self.name, item_cands))
                continue
            valid = set(valid_indices(item_cands))
            scores: list[float | None] = [float(r) if i in valid else None for i, r in enumerate(reached[n])]
            keys = [None if s is None else (s,) for s in scores]
            [champion] = fields[n]
            selections.append(Selection(id=item.id, strategy=self.name, chosen=champion, candidates=item_cands,
                                        scores=scores, ranks=competition_ranks(keys), matches=matches[n],
                                        judge_calls=sum(m.calls for m in matches[n])))
        return selections


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


# ---------------------------------------------------------------------------------------------------------------
# Round-robin
# ---------------------------------------------------------------------------------------------------------------


class RoundRobin:
    """Every pair of candidates meets once; ranked by Bradley–Terry strengths (see the module docstring)."""

    name = "round_robin"

    def __init__(self, swap: bool | None = None) -> None:
        self.swap = swap

    def select(
        self,
        items: Sequence[Item],
        candidates: Sequence[Sequence[Candidate]],
        judge: JudgeLike,
        *,
        max_calls: int | None = None,
    ) -> list[Selection]:
        check_shapes(items, candidates)
        calls = _judge_view(judge, max_calls, self.swap)
        cands = [list(c) for c in candidates]
        slots: dict[int, list[Match | int]] = {}
        pairs: list[Pair] = []
        for n, item_cands in enumerate(cands):
            if not valid_indices(item_cands):
                continue
            slots[n] = []
            for a in range(len(item_cands)):
                for b in range(a + 1, len(item_cands)):
                    if item_cands[a].error is None and item_cands[b].error is None:
                        slots[n].append(len(pairs))
                        pairs.append((n, a, b))
                    else:
                        slots[n].append(forfeit(a, b, item_cands, 1, keep_ties=True))
        counted = play(calls, items, cands, pairs) if pairs else None
        selections = []
        for n, (item, item_cands) in enumerate(zip(items, cands)):
            if n not in slots:
                selections.append(no_valid_candidate(item, self.name, item_cands))
                continue
            matches = []
            for entry in slots[n]:
                if isinstance(entry, int):
                    assert counted is not None
                    _, a, b = pairs[entry]
                    entry = decide(a, b, counted.results[entry], counted.calls[entry], 1, keep_ties=True)
                matches.append(entry)
            selections.append(_league_selection(self.name, item, item_cands, matches))
        return selections


# ---------------------------------------------------------------------------------------------------------------
# Swiss
# ---------------------------------------------------------------------------------------------------------------


class Swiss:
    """A few rounds of pairing candidates with equal or near points (see the module docstring)."""

    name = "swiss"

    def __init__(self, rounds: int = 3, swap: bool | None = None) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.rounds = rounds
        self.swap = swap

    def select(
        self,
        items: Sequence[Item],
        candidates: Sequence[Sequence[Candidate]],
        judge: JudgeLike,
        *,
        max_calls: int | None = None,
    ) -> list[Selection]:
        check_shapes(items, candidates)
        calls = _judge_view(judge, max_calls, self.swap)
        cands = [list(c) for c in candidates]
        playing = {n: valid_indices(c) for n, c in enumerate(cands) if valid_indices(c)}
        points = {n: dict.fromkeys(valid, 0.0) for n, valid in playing.items()}
        met: dict[int, set[frozenset[int]]] = {n: set() for n in playing}
        had_bye: dict[int, set[int]] = {n: set() for n in playing}
        matches: dict[int, list[Match]] = {n: [] for n in playing}
        active = {n for n, valid in playing.items() if len(valid) > 1}
        for round in range(1, self.rounds + 1):
            pairs: list[Pair] = []
            for n in sorted(active):
                order = sorted(playing[n], key=lambda i: (-points[n][i], i))  # standings: points, then index
                pairing = swiss_pairing(order, met[n], had_bye[n])
                if not any(b != -1 for _, b in pairing):
                    active.discard(n)  # every possible pair has met: nothing new to learn
                    continue
                for a, b in pairing:
                    if b == -1:
                        had_bye[n].add(a)
                        points[n][a] += 1.0
                        matches[n].append(bye(a, round))
                    else:
                        pairs.append((n, min(a, b), max(a, b)))
            if not pairs:
                break
            counted = play(calls, items, cands, pairs)
            for k, (n, a, b) in enumerate(pairs):
                match = decide(a, b, counted.results[k], counted.calls[k], round, keep_ties=True)
                matches[n].append(match)
                met[n].add(frozenset((a, b)))
                result = 1.0 if match.winner == a else 0.0 if match.winner == b else 0.5
                points[n][a] += result
                points[n][b] += 1.0 - result
        selections = []
        for n, (item, item_cands) in enumerate(zip(items, cands)):
            if n not in playing:
                selections.append(no_valid_candidate(item, self.name, item_cands))
            else:
                selections.append(_league_selection(self.name, item, item_cands, matches[n]))
        return selections


def swiss_pairing(order: Sequence[int], met: set[frozenset[int]], had_bye: set[int]) -> list[tuple[int, int]]:
    """Pairs for one Swiss round; ``order`` is the standings (best first).  A bye is ``(i, -1)``.

    Each player is paired with the nearest player below it in the standings that it has not met, backtracking
    until everyone is paired; with an odd count, the bye goes to the lowest-placed player without one.  If no
    rematch-free pairing exists (or the search runs too long), a greedy pass pairs whoever it can and the rest sit
    the round out (no match, no point)."""
    budget = [_SWISS_SEARCH_STEPS]
    order = list(order)
    if len(order) % 2 == 0:
        found = _pair_all(order, met, budget)
        if found is not None:
            return found
    else:
        # Bye candidates from the bottom of the standings, those who already had one last.
        bye_order = [i for i in reversed(order) if i not in had_bye] + [i for i in reversed(order) if i in had_bye]
        for sitter in bye_order:
            found = _pair_all([i for i in order if i != sitter], met, budget)
            if found is not None:
                return found + [(sitter, -1)]
            if budget[0] <= 0:
                break
    pairs: list[tuple[int, int]] = []
    free = list(order)
    while free:
        first = free.pop(0)
        partner = next((j for j in free if frozenset((first, j)) not in met), None)
        if partner is not None:
            free.remove(partner)
            pairs.append((first, partner))
    return pairs


def _pair_all(order: list[int], met: set[frozenset[int]], budget: list[int]) -> list[tuple[int, int]] | None:
    """A perfect rematch-free pairing of ``order`` (even length), nearest partners first; None if none is found."""
    if not order:
        return []
    first, rest = order[0], order[1:]
    for k, partner in enumerate(rest):
        budget[0] -= 1
        if budget[0] < 0:
            return None
        if frozenset((first, partner)) in met:
            continue
        tail = _pair_all(rest[:k] + rest[k + 1:], met, budget)
        if tail is not None:
            return [(first, partner)] + tail
    return None


__all__ = ["BT_PRIOR", "Knockout", "RoundRobin", "Swiss", "decide", "forfeit", "play", "swiss_pairing"]
