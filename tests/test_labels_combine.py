"""Verdict-label probabilities on the label trie, and swap-and-combine."""

from __future__ import annotations

import math

import pytest

from critic.combine import argmax_label, combine_orders, swap_labels
from critic.labels import LabelTrie, expected_score, label_token_ids

EOS = 0


def test_single_token_labels_renormalise_over_allowed_tokens() -> None:
    trie = LabelTrie.build({"A": [5], "B": [6], "tie": [7]}, end_token_id=EOS)
    assert trie.queries() == [()]
    lp = {5: math.log(0.2), 6: math.log(0.6), 7: math.log(0.1), 99: math.log(0.1)}
    probs = trie.distribution(lambda path: lp)
    assert probs == pytest.approx({"A": 0.2 / 0.9, "B": 0.6 / 0.9, "tie": 0.1 / 0.9})
    assert sum(probs.values()) == pytest.approx(1.0)


def test_shared_first_token_is_split_by_the_second_position() -> None:
    # Scores 1, 2, 10 where "10" is tokenised "1" "0": the root cannot tell 1 from 10.
    trie = LabelTrie.build({"1": [11], "2": [12], "10": [11, 10]}, end_token_id=EOS)
    assert sorted(trie.queries()) == [(), (11,)]
    table = {(): {11: math.log(0.5), 12: math.log(0.5)}, (11,): {EOS: math.log(0.25), 10: math.log(0.75)}}
    probs = trie.distribution(lambda path: table[path])
    assert probs == pytest.approx({"1": 0.125, "2": 0.5, "10": 0.375})
    assert expected_score(probs) == pytest.approx(0.125 + 1.0 + 3.75)


def test_forced_continuations_need_no_query() -> None:
    # "tie" spans two tokens but its first token is unique: under the constraint the rest is forced.
    trie = LabelTrie.build({"A": [5], "tie": [8, 9]}, end_token_id=EOS)
    assert trie.queries() == [()]
    probs = trie.distribution(lambda path: {5: 0.0, 8: 0.0})
    assert probs == pytest.approx({"A": 0.5, "tie": 0.5})


def test_missing_logprobs_count_as_impossible_and_all_missing_is_an_error() -> None:
    trie = LabelTrie.build({"A": [5], "B": [6]}, end_token_id=EOS)
    assert trie.distribution(lambda path: {5: -1.0}) == {"A": 1.0, "B": 0.0}
    with pytest.raises(ValueError):
        trie.distribution(lambda path: {})


def test_duplicate_label_tokens_rejected() -> None:
    with pytest.raises(ValueError):
        LabelTrie.build({"A": [5], "a": [5]}, end_token_id=EOS)
    with pytest.raises(ValueError):
        LabelTrie.build({"1": [1], "10": [1, 0]}, end_token_id=None)


def test_label_token_ids_strip_the_context() -> None:
    vocab = {"Verdict:": [1, 2], "Verdict: A": [1, 2, 3], "Verdict: tie": [1, 2, 4, 5]}
    ids = label_token_ids(lambda s: vocab[s], "Verdict:", {"A": " A", "tie": " tie"})
    assert ids == {"A": [3], "tie": [4, 5]}


def test_swap_and_combine() -> None:
    labels = ("A", "B", "tie")
    assert swap_labels({"A": 0.7, "B": 0.2, "tie": 0.1}) == {"B": 0.7, "A": 0.2, "tie": 0.1}
    # Both orders prefer the same *response* (the caller's A): consistent.
    agree = combine_orders({"A": 0.8, "B": 0.1, "tie": 0.1}, "A", {"A": 0.2, "B": 0.7, "tie": 0.1}, "B", labels)
    assert agree.consistent and agree.verdict == "A"
    assert agree.probabilities == pytest.approx({"A": 0.75, "B": 0.15, "tie": 0.1})
    # A judge that always says "first": inconsistent, and its exact 50/50 becomes a tie, not "A".
    biased = combine_orders({"A": 1.0, "B": 0.0, "tie": 0.0}, "A", {"A": 1.0, "B": 0.0, "tie": 0.0}, "A", labels)
    assert not biased.consistent
    assert biased.probabilities == pytest.approx({"A": 0.5, "B": 0.5, "tie": 0.0})
    assert biased.verdict == "tie"
    no_tie = combine_orders({"A": 1.0, "B": 0.0}, "A", {"A": 1.0, "B": 0.0}, "A", ("A", "B"))
    assert no_tie.verdict == "A"  # documented fallback: first label in order
    assert sum(agree.probabilities.values()) == pytest.approx(1.0)


def test_argmax_label_prefers_unique_max() -> None:
    assert argmax_label({"A": 0.3, "B": 0.6, "tie": 0.1}, ("A", "B", "tie")) == "B"
