"""Judge-guided data: entropies on hand-made distributions, curation and curriculum order, the DRS formula and
per-pair β in TRL's DPO loss, the chosen/rejected rule on scripted judges, the noisy-sample filter, and each
command end-to-end on tiny models."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from critic import Judge, JudgeConfig
from critic.engines.base import GenerationRequest
from critic.engines.scripted import ScriptedEngine, ScriptedOutput
from critic.preferences import PreferencePair, read_preferences
from critic.prompting import PromptConfig
from scaling.types import Candidate, Item, Match, Selection
from training import dpo_pairs, entropy
from training import filter as data_filter
from training.dpo_pairs import DRSConfig, build_pairs, drs_beta, select_pair, weighted_dpo_loss
from training.egt_replicates import ARM_LABELS
from training.entropy import (
    SampleEntropy,
    auc,
    curate,
    example_difficulty,
    label_entropy,
    score_entropy,
    spearman,
    token_entropies,
)
from training.filter import FilterRow, flag, precision_recall
from training.synthetic import write_dataset
from training.synthetic_scenes import SceneSpace

CONFIG = JudgeConfig(critique_max_chars=120, prompt=PromptConfig(system_template="compact_system"))


# ------------------------------------------------------------------------------------------------------ entropies
def test_label_entropy_on_hand_made_distributions() -> None:
    assert label_entropy({"A": 1.0, "B": 0.0, "tie": 0.0}) == 0.0
    assert label_entropy({"A": 0.5, "B": 0.5}) == pytest.approx(math.log(2))
    assert label_entropy({"A": 1 / 3, "B": 1 / 3, "tie": 1 / 3}) == pytest.approx(math.log(3))
    # 0.9/0.1 by hand: -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325083
    assert label_entropy({"A": 0.9, "B": 0.1}) == pytest.approx(0.325083, abs=1e-6)
    with pytest.raises(ValueError):
        label_entropy({"A": 0.0})


def test_token_entropies_average_only_the_labelled_positions() -> None:
    vocab = 8
    logits = torch.zeros(2, 4, vocab)  # uniform everywhere: entropy ln 8 ...
    logits[0, 1] = torch.tensor([100.0] + [0.0] * (vocab - 1))  # ... except row 0, position 1: one-hot, entropy 0
    labels = torch.tensor([[-100, 5, 5, -100],  # positions 0 and 1 predict the labelled tokens 1 and 2
                           [-100, -100, -100, -100]])  # nothing labelled
    values = token_entropies(logits, labels)
    assert values[0].item() == pytest.approx(math.log(vocab) / 2)  # mean of (ln 8, 0)
    assert math.isnan(values[1].item())
    peaks = token_entropies(logits, labels, "max")
    assert peaks[0].item() == pytest.approx(math.log(vocab))  # max of (ln 8, 0); unlabelled positions ignored
    assert math.isnan(peaks[1].item())
    # The peak ignores unlabelled positions even when they are the most uncertain.
    sharp = torch.full((1, 4, vocab), 0.0)
    sharp[0, :, 0] = 100.0  # every position one-hot ...
    sharp[0, 1] = 0.0  # ... but position 1, uniform, which predicts the unlabelled token 2
    assert token_entropies(sharp, torch.tensor([[-100, 5, -100, -100]]), "max")[0].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        token_entropies(logits, labels, "sum")


def test_spearman_against_hand_computed_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = (1, 2, 3), y = (1.5, 1.5, 3): pearson = 0.866025 (sqrt(3)/2)
    assert spearman([1, 2, 3], [0, 0, 1]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_auc_against_hand_computed_values() -> None:
    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    # flagged 0.5 and 0.9 against unflagged 0.1 and 0.5: pairs (0.5>0.1) 1, (0.5=0.5) 1/2, (0.9>0.1) 1,
    # (0.9>0.5) 1 -> 3.5 / 4
    assert auc([0.1, 0.5, 0.5, 0.9], [False, False, True, True]) == pytest.approx(0.875)
    assert math.isnan(auc([0.1, 0.2], [True, True]))
    with pytest.raises(ValueError):
        auc([0.1], [True, False])


def scores(values: list[float | None]) -> list[SampleEntropy]:
    return [SampleEntropy(id=f"p{k}", label="A", token_entropy=v, label_entropy=None if v is None else v / 2,
                          error=None if v is not None else "failed") for k, v in enumerate(values)]


def test_curate_drops_the_highest_entropy_share_or_above_a_threshold_and_keeps_unscored() -> None:
    rows = scores([0.1, 0.9, 0.5, None, 0.3, 0.7])
    share = curate(rows, by="token", drop=0.4)  # 5 scored, 2 dropped: 0.9 and 0.7
    assert sorted(share.dropped) == ["p1", "p5"]
    assert sorted(share.kept) == ["p0", "p2", "p3", "p4"] and share.unscored == ["p3"]
    above = curate(rows, by="label", threshold=0.2)  # label entropies 0.05 .45 .25 - .15 .35
    assert sorted(above.dropped) == ["p1", "p2", "p5"]
    with pytest.raises(ValueError):
        curate(rows, drop=0.2, threshold=1.0)


def test_example_difficulty_maps_examples_to_their_pairs_entropy() -> None:
    rows = scores([0.2, None])
    values = example_difficulty(["p0/AB", "p0/BA", "p0/a", "p1/AB", "p9/AB"], {r.id: r.token_entropy for r in rows})
    assert values[:3] == [0.2, 0.2, 0.2] and all(math.isnan(v) for v in values[3:])


# ------------------------------------------------------------------------------------ entropy with scripted judges
def test_score_entropy_reads_label_entropies_and_reports_failures(tmp_path: Path) -> None:
    pairs = read_preferences(write_dataset(tmp_path / "syn", n=4, seed=0, max_objects=1)).pairs
    probs = [{"A": 0.5, "B": 0.5, "tie": 0.0}, {"A": 0.9, "B": 0.1, "tie": 0.0}]
    calls = {"n": 0}

    def script(request: GenerationRequest) -> ScriptedOutput | str:
        calls["n"] += 1
        if pairs[3].response_a in request.prompt.text and pairs[3].response_b in request.prompt.text:
            return "no verdict here"
        k = 0 if "<response_a>" in request.prompt.text and pairs[0].response_a in request.prompt.text else 1
        label = max(probs[k], key=probs[k].get)
        return ScriptedOutput(request.spec.format("Checked.", label), probs[k])

    judge = Judge(ScriptedEngine(script), CONFIG)
    rows = score_entropy(judge, pairs, progress=False)
    assert [r.id for r in rows] == [p.id for p in pairs]
    assert rows[3].error is not None and rows[3].label_entropy is None
    assert all(r.token_entropy is None for r in rows)  # a scripted engine has no model to score tokens with
    for row in rows[:3]:
        assert row.error is None and 0.0 <= row.label_entropy <= math.log(3)
        assert row.agrees == (row.verdict == row.label)


def test_score_entropy_on_a_tiny_model_gives_token_entropies_within_bounds(tiny_qwen2_vl_dir: Path,
                                                                          tmp_path: Path) -> None:
    from critic.engines.hf import TransformersEngine

    pairs = read_preferences(write_dataset(tmp_path / "syn", n=3, seed=0, max_objects=1)).pairs
    engine = TransformersEngine.from_pretrained(str(tiny_qwen2_vl_dir), batch_size=4)
    rows = score_entropy(Judge(engine, CONFIG), pairs, progress=False)
    vocab = engine.model.config.get_text_config().vocab_size
    for row in rows:
        assert row.error is None, row.error
        assert 0.0 < row.token_entropy <= math.log(vocab) + 1e-4
        assert row.token_entropy <= row.peak_entropy <= math.log(vocab) + 1e-4
        assert 0.0 <= row.label_entropy <= math.log(3) + 1e-9


def test_entropy_commands_score_then_curate(tiny_qwen2_vl_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "syn", n=5, seed=0, max_objects=1)
    with open(data, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    out = tmp_path / "entropy.jsonl"
    assert entropy.main(["score", "--judge", str(tiny_qwen2_vl_dir), "--data", str(data), "--output", str(out),
                         "--batch-size", "4", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all(r["token_entropy"] is not None for r in rows)
    assert "skipped" in capsys.readouterr().err  # the malformed row is named, the rest is scored
    kept, dropped = tmp_path / "kept.jsonl", tmp_path / "dropped.jsonl"
    assert entropy.main(["curate", "--data", str(data), "--scores", str(out), "--drop", "0.4", "--output", str(kept),
                         "--dropped", str(dropped)]) == 0
    kept_ids = {json.loads(line)["id"] for line in kept.read_text().splitlines()}
    dropped_ids = {json.loads(line)["id"] for line in dropped.read_text().splitlines()}
    assert len(kept_ids) == 3 and len(dropped_ids) == 2 and not kept_ids & dropped_ids
    worst = sorted(rows, key=lambda r: r["token_entropy"])[-2:]
    assert {r["id"] for r in worst} == dropped_ids
    assert read_preferences(kept).pairs  # the kept file is a valid preference file again


# --------------------------------------------------------------------------------------------------------- DRS
def test_drs_formula_by_hand() -> None:
    assert drs_beta(0.0, 0.1, 1.0, 0.5) == pytest.approx(0.1)
    # 0.1 * (1 + 2 * (1 - e^-1)) = 0.226424
    assert drs_beta(2.0, 0.1, 2.0, 0.5) == pytest.approx(0.226424, abs=1e-6)
    assert drs_beta(1e9, 0.1, 1.0, 0.5) == pytest.approx(0.2)  # saturates at beta * (1 + w)
    assert drs_beta(-3.0, 0.1, 1.0, 0.5) == pytest.approx(0.1)  # a negative margin counts as zero
    assert DRSConfig(0.2, 0.0, 1.0)(5.0) == pytest.approx(0.2)  # w = 0 is plain DPO
    with pytest.raises(ValueError):
        DRSConfig(beta=0.0)


def test_weighted_dpo_loss_by_hand() -> None:
    chosen, rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    ref_c, ref_r = torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.0])
    beta = torch.tensor([0.1, 1.0])
    # margins: (0.5 - (-1.0)) = 1.5 and (0.0 - 1.0) = -1.0
    expected = [-math.log(1 / (1 + math.exp(-0.15))), -math.log(1 / (1 + math.exp(1.0)))]
    assert weighted_dpo_loss(chosen, rejected, ref_c, ref_r, beta).tolist() == pytest.approx(expected)


# --------------------------------------------------------------------------------------------- pair selection
def selection(scores: list[float | None], matches: list[tuple[int, int, int | None]]) -> tuple[Selection, Selection]:
    cands = [Candidate(text=f"c{k}", index=k) for k in range(len(scores))]
    ranking = Selection(id="x", strategy="swiss", chosen=0, candidates=cands,
                        matches=[Match(a=a, b=b, winner=w, verdict=None) for a, b, w in matches])
    scoring = Selection(id="x", strategy="pointwise", chosen=0, candidates=cands, scores=scores)
    return ranking, scoring


def test_chosen_is_the_best_scored_winner_and_rejected_the_worst_scored_loser() -> None:
    # winners {0, 2}, losers {1, 3}; best winner by score = 2 (8.0), worst loser = 3 (1.0)
    pair = select_pair("x", *selection([6.0, 5.0, 8.0, 1.0], [(0, 1, 0), (2, 3, 2)]))
    assert (pair.chosen, pair.rejected, pair.dropped) == (2, 3, None)
    assert pair.margin == pytest.approx(7.0)
    # candidate 4 never won or lost (a bye, a tie): it is neither chosen nor rejected despite its top score
    pair = select_pair("x", *selection([6.0, 5.0, 2.0, 1.0, 10.0], [(0, 1, 0), (2, 3, 2), (4, -1, 4), (0, 4, None)]))
    assert (pair.chosen, pair.rejected) == (0, 3)


def test_a_prompt_is_dropped_when_chosen_does_not_outscore_rejected_or_nothing_was_decided() -> None:
    # pairwise says 0 beat 1, pointwise says 1 is better: the judges disagree, no pair
    pair = select_pair("x", *selection([3.0, 7.0], [(0, 1, 0)]))
    assert pair.dropped is not None and "not above" in pair.dropped
    pair = select_pair("x", *selection([3.0, 3.0], [(0, 1, 0)]))  # equal scores: no margin
    assert pair.dropped is not None
    pair = select_pair("x", *selection([3.0, 7.0], [(0, 1, None)]))  # only a tie
    assert pair.dropped is not None and pair.chosen is None
    pair = select_pair("x", *selection([None, 7.0], [(0, 1, 0)]))  # the winner could not be scored
    assert pair.dropped is not None


def test_thresholds_drop_small_margins_and_chosen_answers_that_look_wrong() -> None:
    ranking, scoring = selection([4.0, 2.0], [(0, 1, 0)])
    assert select_pair("x", ranking, scoring).dropped is None
    small = select_pair("x", ranking, scoring, min_margin=2.0)  # margin 2 is not above 2
    assert small.dropped is not None and "by more than 2" in small.dropped
    wrong = select_pair("x", ranking, scoring, min_chosen_score=5.5)  # the best candidate scores 4: none looks right
    assert wrong.dropped is not None and "under 5.5" in wrong.dropped and (wrong.chosen, wrong.rejected) == (0, 1)
    assert select_pair("x", *selection([8.0, 2.0], [(0, 1, 0)]), min_margin=2.0, min_chosen_score=5.5).dropped is None


def test_the_unbeaten_gate_drops_a_best_scored_winner_that_lost_a_match() -> None:
    # 0 beat 1, then lost to 2; 0 has the best score among the winners {0, 2}, so it is chosen and the gate drops it
    ranking, scoring = selection([9.0, 1.0, 8.0], [(0, 1, 0), (0, 2, 2)])
    plain = select_pair("x", ranking, scoring)
    assert (plain.chosen, plain.rejected, plain.dropped) == (0, 1, None)
    gated = select_pair("x", ranking, scoring, require_unbeaten=True)
    assert gated.dropped == "chosen lost a pairwise match" and gated.chosen == 0
    # a tie is not a loss, and an unbeaten chosen passes
    assert select_pair("x", *selection([9.0, 1.0, 8.0], [(0, 1, 0), (0, 2, None)]), require_unbeaten=True).dropped is None
    assert select_pair("x", *selection([8.0, 1.0, 9.0], [(0, 1, 0), (0, 2, 2)]), require_unbeaten=True).dropped is None


_TAG = re.compile(r"zq(\d+)x")


def quality_judge() -> Judge:
    """Pairwise: the higher tag wins; pointwise: the score is the tag (hidden quality), clipped to 1-10."""

    def script(request: GenerationRequest) -> ScriptedOutput:
        tags = [int(t) for t in _TAG.findall(request.prompt.text)]
        if len(tags) == 2:
            label = "A" if tags[0] > tags[1] else "B"
            return ScriptedOutput(request.spec.format("Compared.", label), {"A": float(label == "A"),
                                                                            "B": float(label == "B"), "tie": 0.0})
        score = max(1, min(10, tags[0]))
        probs = {str(s): float(s == score) for s in range(1, 11)}
        return ScriptedOutput(request.spec.format("Scored.", str(score)), probs)

    return Judge(ScriptedEngine(script), JudgeConfig())


def test_build_pairs_on_a_scripted_judge_picks_the_best_and_worst_candidates() -> None:
    items = [Item(question="q1", id="i1"), Item(question="q2", id="i2")]
    cands = [[Candidate(text=f"answer zq{t}x", index=k) for k, t in enumerate(tags)]
             for tags in ([3, 9, 1, 6], [5, 5])]
    pairs, ranking, scoring = build_pairs(items, cands, quality_judge(), rounds=2)
    assert (pairs[0].chosen, pairs[0].rejected) == (1, 2) and pairs[0].margin == pytest.approx(8.0)
    assert pairs[1].dropped is not None  # two equal candidates: nothing to prefer
    row = dpo_pairs.dpo_row(items[0], cands[0], pairs[0], DRSConfig(0.1, 1.0, 0.5))
    assert set(row) >= {"prompt", "chosen", "rejected", "images", "margin", "beta"}
    assert row["chosen"] == "answer zq9x" and row["beta"] == pytest.approx(drs_beta(8.0, 0.1, 1.0, 0.5))


def test_dpo_pairs_command_end_to_end_on_tiny_models(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    pairs = read_preferences(write_dataset(tmp_path / "syn", n=3, seed=0, max_objects=1)).pairs
    rows = [{"id": p.id, "question": p.question, "image": str(p.images[0])} for p in pairs]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "bad"}\n')
    out, dropped = tmp_path / "dpo.jsonl", tmp_path / "dropped.jsonl"
    assert dpo_pairs.main(["--policy", str(tiny_qwen2_vl_dir), "--policy-backend", "transformers",
                           "--judge", str(tiny_qwen2_vl_dir), "--data", str(data), "--output", str(out),
                           "--dropped", str(dropped), "--n", "3", "--rounds", "2", "--max-new-tokens", "8",
                           "--no-progress"]) == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    gone = [json.loads(line) for line in dropped.read_text().splitlines()]
    assert len(kept) + len(gone) == 4  # every prompt is accounted for, the malformed one with its reason
    assert any(g["id"] == "bad" and "question" in g["dropped"] for g in gone)
    for row in kept:  # random weights: whatever was kept must still obey the rule and carry its DRS beta
        assert row["margin"] > 0 and row["chosen_score"] > row["rejected_score"]
        assert row["beta"] == pytest.approx(drs_beta(row["margin"], 0.1, 1.0, 0.5)) and row["images"]


def test_drs_trainer_uses_the_per_pair_beta(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="TRL is the optional [dpo] extra")
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig

    from critic.tiny import builtin_corpus, train_tokenizer

    tokenizer = train_tokenizer(builtin_corpus(200), 300)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    policy, reference = LlamaForCausalLM(config), LlamaForCausalLM(config)  # different weights: non-zero ratios
    rows = {"prompt": ["What colour is it?", "Where is it?"], "chosen": [" It is red.", " Row 1."],
            "rejected": [" It is blue.", " Row 4."]}

    def loss_with(beta_column: list[float] | None, scalar: float) -> float:
        data = Dataset.from_dict(rows if beta_column is None else {**rows, "beta": beta_column})
        args = DPOConfig(output_dir=str(tmp_path / "dpo"), beta=scalar, per_device_train_batch_size=2,
                         report_to="none", use_cpu=True, max_steps=1)
        trainer = dpo_pairs.drs_dpo_trainer()(model=policy, ref_model=reference, args=args, train_dataset=data,
                                              processing_class=tokenizer)
        batch = trainer.data_collator([dict(r) for r in trainer.train_dataset])
        with torch.no_grad():
            return float(trainer.compute_loss(policy, batch))

    loss_with(None, scalar=0.3)  # the first trainer built on these models adjusts them once (TRL's set-up)
    same = loss_with([0.3, 0.3], scalar=0.05)
    assert same == pytest.approx(loss_with(None, scalar=0.3), rel=1e-6)  # a constant column is TRL's scalar beta
    assert loss_with([0.05, 2.0], scalar=0.3) != pytest.approx(same, rel=1e-3)


# ------------------------------------------------------------------------------------------------------- filter
def filter_rows(values: list[tuple[float | None, str]]) -> list[FilterRow]:
    return [FilterRow(line=k + 1, row={"id": f"r{k}", "category": c}, score=s,
                      error=None if s is not None else "media: unreadable") for k, (s, c) in enumerate(values)]


def test_filter_flags_by_threshold_or_per_category_quantile_and_failures_go_to_rejected(tmp_path: Path) -> None:
    rows = filter_rows([(9.0, "a"), (2.0, "a"), (6.0, "a"), (None, "a"), (4.0, "b"), (3.0, "b"), (3.5, "b")])
    report = flag(rows, threshold=5.0)
    assert [r.flagged for r in rows] == [False, True, False, True, True, True, True]
    assert (report.kept, report.flagged, report.errors) == (2, 4, 1)
    rows = filter_rows([(9.0, "a"), (2.0, "a"), (6.0, "a"), (None, "a"), (4.0, "b"), (3.0, "b"), (3.5, "b")])
    report = flag(rows, quantile=0.4)  # a: 2, 6, 9 -> cutoff 2 + 0.8 * 4 = 5.2; b: 3, 3.5, 4 -> 3.4
    assert report.cutoffs == {"a": pytest.approx(5.2), "b": pytest.approx(3.4)}
    assert [r.flagged for r in rows] == [False, True, False, True, False, True, False]
    truth = [False, True, False, False, False, True, True]
    pr = precision_recall(rows, truth)
    assert pr["precision"] == pytest.approx(1.0) and pr["recall"] == pytest.approx(2 / 3)
    data_filter.write_outputs(rows, tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl")
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert any(r.get("filter_error") for r in rejected) and all("filter_reason" in r for r in rejected)
    assert data_filter.plot_scores(rows, tmp_path / "hist.png", report, truth)
    assert (tmp_path / "hist.png").stat().st_size > 1000


def test_filter_command_end_to_end_on_a_tiny_model(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    pairs: list[PreferencePair] = read_preferences(write_dataset(tmp_path / "syn", n=4, seed=0, max_objects=1)).pairs
    data = tmp_path / "answers.jsonl"
    rows = [{"id": p.id, "image": str(p.images[0]), "question": p.question, "answer": p.response_a,
             "category": p.category, "source": "synthetic"} for p in pairs]
    rows.append({"id": "broken", "image": str(tmp_path / "missing.png"), "question": "Q?", "answer": "A."})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n")
    kept, rejected, plot = tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl", tmp_path / "scores.png"
    assert data_filter.main(["--data", str(data), "--judge", str(tiny_qwen2_vl_dir), "--output", str(kept),
                             "--rejected", str(rejected), "--quantile", "0.5", "--plot", str(plot),
                             "--no-progress"]) == 0
    out = [json.loads(line) for line in kept.read_text().splitlines()]
    out += [json.loads(line) for line in rejected.read_text().splitlines()]
    assert len(out) == 6  # every row comes back once: 4 scored, the missing image and the bad line as errors
    assert {r.get("source") for r in out if r.get("id", "").startswith("syn")} == {"synthetic"}
    assert sum(r.get("filter_reason") == "error" for r in out) == 2
    assert plot.exists()


# ------------------------------------------------------------------------------------------------ demonstrations
def test_the_demonstrations_refuse_a_judge_and_policy_built_on_different_position_wordings(tmp_path: Path) -> None:
    from training import judge_data_demo

    judge, policy = tmp_path / "judge", tmp_path / "policy"
    for folder, name, wording in ((judge, "demo_report.json", "ordinal"), (policy, "policy_report.json", "numbers")):
        folder.mkdir()
        (folder / name).write_text(json.dumps({"recipe": {"position_wording": wording}}))
    with pytest.raises(SystemExit):
        judge_data_demo.main(["dpo", "--judge", str(judge), "--policy", str(policy), "--out", str(tmp_path / "d")])
    assert not (tmp_path / "d" / "data").exists()
    (policy / "policy_report.json").write_text(json.dumps({"recipe": {"position_wording": "ordinal"}}))
    with pytest.raises(SystemExit):  # the held-out seed of the recipes is not a fresh seed for the questions
        judge_data_demo.main(["dpo", "--judge", str(judge), "--policy", str(policy), "--out", str(tmp_path / "d"),
                              "--seed", "1"])
    assert not (tmp_path / "d" / "data").exists()


def test_demonstration_commands_write_their_reports_and_figures(tiny_qwen2_vl_dir: Path, tmp_path: Path) -> None:
    from training import judge_data_demo

    assert judge_data_demo.main(["filter", "--judge", str(tiny_qwen2_vl_dir), "--out", str(tmp_path / "f"),
                                 "--n", "10", "--corrupt", "0.3", "--no-progress"]) == 0
    report = json.loads((tmp_path / "f" / "filter_report.json").read_text())
    assert report["rows"] == 10 and report["corrupted"] == 3 and report["errors"] == 0
    assert {"precision", "recall", "per_category"} <= set(report) and (tmp_path / "f" / "filter_scores.png").exists()
    assert judge_data_demo.main(["dpo", "--judge", str(tiny_qwen2_vl_dir), "--policy", str(tiny_qwen2_vl_dir),
                                 "--policy-backend", "transformers", "--out", str(tmp_path / "d"), "--n", "6",
                                 "--n-candidates", "3", "--rounds", "1", "--no-progress"]) == 0
    report = json.loads((tmp_path / "d" / "dpo_report.json").read_text())
    assert 0 < report["prompts"] <= 6 and 0.0 <= report["kept_rate"] <= 1.0
    # The midpoint rule only ever drops more prompts than the plain rule, from the same judgments.
    assert report["min_chosen_score"] == 5.5 and report["kept"] <= report["no_threshold"]["kept"]
    # Stricter gates from the same judgments keep fewer prompts, never more; the midpoint row is the headline's.
    gates = [g["min_chosen_score"] for g in report["sweep"]]
    assert gates == sorted(gates) and gates[0] == 5.5 and gates[-1] == pytest.approx(9.55)
    assert [g["kept"] for g in report["sweep"]] == sorted((g["kept"] for g in report["sweep"]), reverse=True)
    assert report["sweep"][0]["kept"] == report["kept"]
    # The margin gates sit on top of the midpoint rule: the first (margin > 0) is that rule itself.
    margins = [g["min_margin"] for g in report["margin_sweep"]]
    assert margins == sorted(margins) and margins[0] == 0.0 and margins[-1] == pytest.approx(6.75)
    assert [g["kept"] for g in report["margin_sweep"]] == sorted((g["kept"] for g in report["margin_sweep"]),
                                                                 reverse=True)
    assert report["margin_sweep"][0]["kept"] == report["kept"]
    assert report["unbeaten"]["kept"] <= report["kept"]
    assert (tmp_path / "d" / "dpo_quality.png").exists()


@pytest.mark.slow
def test_egt_demonstration_quick_runs_noisy_curated_and_clean_judges(tmp_path: Path) -> None:
    from training import judge_data_demo

    args = ["egt", "--out", str(tmp_path), "--quick", "--noise", "0.4", "--drop", "0.25", "--critique-pairs", "40",
            "--noise-model", "confusion", "--ablation", "--curriculum-schedule", "expanding", "--seed", "3",
            "--no-progress"]
    assert judge_data_demo.main(args) == 0
    report = json.loads((tmp_path / "egt_report.json").read_text())
    # --critique-pairs sets the critique stages' pair count only (the answer-only stage 0 keeps the recipe's 64).
    assert len(read_preferences(tmp_path / "a_noisy" / "build" / "stage1" / "pairs.jsonl").pairs) == 40
    assert len(read_preferences(tmp_path / "a_noisy" / "build" / "stage0" / "pairs.jsonl").pairs) == 64
    assert report["critique_pairs"] == 40 and (tmp_path / "entropy.jsonl").is_file()
    # A replicate seed draws other rows from scene seed 0's scenes, not from seed 3's own share.
    for stage in ("stage0", "stage1"):
        for pair in read_preferences(tmp_path / "a_noisy" / "build" / stage / "pairs.jsonl").pairs:
            assert pair.id.startswith("syn-s0d3-") and (pair.meta["seed"], pair.meta["draw_seed"]) == (0, 3)
            scene = pair.meta["scene"]
            assert SceneSpace.owner(SceneSpace(4, len(scene)).rank(scene)) == 0
    assert (report["seed"], report["scene_seed"]) == (3, 0)
    # Run again: the three finished builds and the entropies are reused, and the report is the same.
    weights = {k: (tmp_path / k / "model.safetensors").stat().st_mtime_ns
               for k in ("a_noisy", "b_egt", "c_clean", "b_curation", "b_curriculum")}
    assert judge_data_demo.main(args) == 0
    assert {k: (tmp_path / k / "model.safetensors").stat().st_mtime_ns for k in weights} == weights
    assert json.loads((tmp_path / "egt_report.json").read_text()) == report
    assert set(report["accuracy"]) == {"a_noisy", "b_egt", "c_clean", "b_curation", "b_curriculum"}
    assert set(report["accuracy"]) == set(ARM_LABELS)  # every arm has its label in the figures
    assert (tmp_path / "egt.png").exists()
    # The ablation's halves: curation alone trains on (b)'s kept pairs in their plain order, the curriculum alone on
    # every noisy pair ordered by entropy.
    def trained(name: str) -> dict:
        return json.loads((tmp_path / name / "demo_report.json").read_text())

    assert trained("b_curation")["steps"] == trained("b_egt")["steps"] == trained("b_curriculum")["steps"]
    # Each (b) arm resumed from (a)'s snapshot before the critique stage instead of rebuilding what they share.
    snapshot = tmp_path / "a_noisy" / "build" / "before_stage1"
    assert all(trained(k)["start_stage"] == 1 and trained(k)["init"] == str(snapshot)
               for k in ("b_egt", "b_curation", "b_curriculum"))
    assert trained("a_noisy")["start_stage"] == 0 and trained("c_clean")["start_stage"] == 0
    import hashlib

    from training.entropy import curate, read_scores

    scores = read_scores(tmp_path / "entropy.jsonl")
    keep = sorted(curate(scores, by="token", drop=0.25).kept)  # every stage-1 pair is scored here (no --score-limit)
    difficulty = sorted((s.id, s.token_entropy) for s in scores if s.token_entropy is not None)
    assert report["curriculum_schedule"] == "expanding"  # reached (b) and the curriculum alone, as their stamps say
    for name, inputs in (("b_egt", {"keep": keep, "difficulty": difficulty, "schedule": "expanding"}),
                         ("b_curation", {"keep": keep, "difficulty": None}),
                         ("b_curriculum", {"keep": None, "difficulty": difficulty, "schedule": "expanding"})):
        stamp = (tmp_path / name / "egt_inputs.sha256").read_text().strip()
        assert stamp == hashlib.sha256(json.dumps(inputs).encode()).hexdigest(), name
    assert report["scored_pairs"] > 0 and set(report["spearman_entropy_vs_flipped"]) == {"token", "label", "peak"}
    assert set(report["auc_entropy_vs_flipped"]) == {"token", "label", "peak"}
    noisy = read_preferences(tmp_path / "a_noisy" / "build" / "stage1" / "pairs.jsonl").pairs
    assert 0 < sum(p.meta["noisy"] for p in noisy) < len(noisy)  # the critique stage's labels were flipped
    assert all("confusion" in p.meta for p in noisy) and report["noise_model"] == "confusion"  # by look-alike pairs
    clean = read_preferences(tmp_path / "c_clean" / "build" / "stage1" / "pairs.jsonl").pairs
    assert not any(p.meta["noisy"] for p in clean)
    curated = json.loads((tmp_path / "b_egt" / "demo_report.json").read_text())
    assert curated["steps"] == json.loads((tmp_path / "a_noisy" / "demo_report.json").read_text())["steps"]
    assert report["recipe"] == "quick"
    with pytest.raises(ValueError, match="recipe must be one of full, small, quick"):
        judge_data_demo.egt_demo(tmp_path / "x", recipe="tiny")
