"""Demonstrations of judge-guided data on the synthetic task: each writes a JSON report and a PNG figure.

    python -m training.judge_data_demo egt --out runs/egt_demo [--noise 0.3] [--drop 0.3] [--recipe full|small|quick]
        [--noise-model uniform|confusion] [--ablation]
    python -m training.judge_data_demo filter --judge DIR --out runs/filter_demo [--n 300] [--corrupt 0.3]
    python -m training.judge_data_demo dpo --judge DIR --policy POLICY_DIR --out runs/dpo_demo [--n 100]

* ``egt``: three demo judges with the same recipe and step budget (:mod:`training.demo_judge`): (a) on training
  pairs with ``--noise`` of the critique stages' preferences flipped, (b) on the same noisy pairs after (a), as the
  warm-up judge, scored their entropies (:mod:`training.entropy`) and the highest-entropy ``--drop`` share was
  removed, the rest ordered easy to hard, (c) on clean pairs. The report gives the Spearman correlation between a
  pair's entropy and whether its label was flipped (the claim: clearly positive; equivalently <= -0.5 against
  "label correct"), and the held-out accuracy of (a), (b), (c) (goal: (b) >= (a) + 5 points), with a figure of
  flip rate by entropy bin and the three accuracies (``--ablation``: also curation alone and the curriculum
  alone). ``--noise-model confusion`` flips look-alike pairs first (:mod:`training.synthetic_noise`). Hours on a
  CPU with the shipped judge's recipe; ``--recipe small`` runs the same comparison on single-object scenes in about
  an hour; ``--quick`` checks the plumbing.
* ``filter``: held-out synthetic questions (a scene-space seed no recipe trains on) with one answer each; a known
  share ``--corrupt`` of the answers is the wrong response of the pair. The pointwise judge scores every answer,
  :mod:`training.filter` flags those below the scale's midpoint, and the report gives the flags' precision and
  recall against the known corruption (goal: both >= 0.8) with a histogram of scores, clean vs corrupted.
* ``dpo``: labelled held-out questions (the scaling demo's items, :func:`scaling.demo.labelled_items`); the policy
  samples ``--n-candidates`` answers, :func:`training.dpo_pairs.build_pairs` picks chosen/rejected, and the report
  gives the kept-pair rate and the share of kept pairs whose chosen answer is right and rejected answer wrong (goal:
  >= 90%) under the issue's rule, the midpoint gate, stricter gates on chosen's score and gates on the margin, all
  from the same judgments, with a bar figure and the trade-off of kept pairs against right ones.

``--judge`` is any judge folder (the demo judge once it is shipped, or one built with ``python -m
training.demo_judge``); ``--policy`` the weak policy ``python -m scaling.demo`` builds (its ``policy`` folder).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from critic.core import Judge
from critic.plotting import pyplot
from critic.preferences import read_preferences
from training.egt_replicates import ARM_LABELS
from training.entropy import CURRICULUM_SCHEDULES, ENTROPY_KINDS, check_schedule
from training.filter import FilterRow, flag, plot_scores, precision_recall, read_rows, score_rows
from training.synthetic import POSITION_WORDINGS, resolve_wording, write_dataset
from training.synthetic_noise import DEFAULT_SHARPNESS, NOISE_MODELS

DEMO_SEED = 3
"""Scene-space seed of the demonstrations' data: the demo judge trains on 0, holds out 1; the scaling demo uses 2."""


def _log(message: str) -> None:
    print(f"[judge-data-demo] {message}", file=sys.stderr, flush=True)


EGT_RECIPES = ("full", "small", "quick")


def egt_demo(out: Path, *, noise: float = 0.3, drop: float = 0.3, by: str = "token", recipe: str = "full",
             score_limit: int | None = None, critique_pairs: int | None = None, noise_model: str = "uniform",
             noise_sharpness: float = DEFAULT_SHARPNESS, ablation: bool = False,
             curriculum_schedule: str = "blocks", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Noisy SFT, warm-up entropies, curated + curriculum SFT and clean SFT, on one recipe and budget.

    ``recipe``: ``full`` (the shipped judge's, hours), ``small`` (:data:`training.demo_recipes.SMALL`, single-object
    colour and shape scenes, about an hour for all three judges) or ``quick`` (plumbing). ``critique_pairs`` sets
    how many pairs each critique stage draws (steps unchanged, so fewer pairs are seen more often: the regime where
    a judge fits its labels, flipped ones included). ``noise_model``/``noise_sharpness``: which pairs are flipped
    (:mod:`training.synthetic_noise`: at random, or the look-alike pairs first, as a confused annotator).
    ``ablation``: two more judges, curation alone (``b_curation``) and the curriculum alone on every noisy pair
    (``b_curriculum``), to tell which half of EGT moves the accuracy. ``curriculum_schedule``: how (b) and the
    curriculum alone order their examples (:data:`training.entropy.CURRICULUM_SCHEDULES`). ``seed``: the recipe's
    training seed (which scenes are drawn, flips, data order) and model seed, for replicates; the training scenes
    stay scene seed 0's (``DemoRecipe.scene_seed``) and the held-out pairs stay the same.
    The (b) arms resume from (a)'s snapshot before the first critique stage, and so does (c) where nothing before
    that stage depends on the noise (:func:`training.demo_judge.noise_free_before`). Resumable: a judge folder
    whose report has the same recipe (and, for (b), the same kept pairs) and the warm-up judge's
    ``entropy.jsonl`` are reused."""
    from dataclasses import replace

    from training.demo_judge import focus_families, noise_free_before, snapshot_path
    from training.demo_recipes import QUICK, SMALL, ordinal_recipe
    from training.entropy import auc, curate, read_scores, score_entropy, spearman, write_scores

    if recipe not in EGT_RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(EGT_RECIPES)}, got {recipe!r}")
    if by not in ENTROPY_KINDS:
        raise ValueError(f"by must be one of {', '.join(ENTROPY_KINDS)}, got {by!r}")
    check_schedule(curriculum_schedule, "curriculum_schedule")
    base = {"full": ordinal_recipe(), "small": SMALL, "quick": QUICK}[recipe]
    if seed != 0:
        # Seed 0's scene pool for every replicate: as the scene owner, seed s would have only ~1/2**(s+1) of the
        # scenes (seeds 3-5 once trained on 24, 12 and 6 single-object scenes and their clean judges failed; README).
        base = replace(base, train_seed=seed, model_seed=seed, scene_seed=0)
    if critique_pairs is not None:
        if critique_pairs < 1:
            raise ValueError(f"critique_pairs must be >= 1, got {critique_pairs}")
        base = replace(base, stages=tuple(replace(s, pairs=critique_pairs) if s.critiques else s
                                          for s in base.stages))
    noisy = replace(base, noise=noise, noise_model=noise_model, noise_sharpness=noise_sharpness)
    stage = next(k for k, s in enumerate(noisy.stages) if s.critiques)
    _log("(a) noisy SFT; it is also the warm-up judge")
    report_a, reused = _build_or_reuse(out / "a_noisy", noisy, snapshot_before=stage, progress=progress)
    # Everything before the first critique stage (tokenizer, check, vision, answer stages) is the same for (a) and
    # every (b) arm, since curation, curriculum and noise only touch critique stages: the (b) arms resume from (a)'s
    # snapshot (same weights bit for bit as their own build would reach) instead of rebuilding it.
    snapshot = snapshot_path(out / "a_noisy", stage)
    resume = {"init": snapshot, "start_stage": stage} if (snapshot / "model.safetensors").is_file() else {}
    # The pairs the critique stage trained on (a stage may keep some families only).
    stage_pairs = focus_families(read_preferences(out / "a_noisy" / "build" / f"stage{stage}" / "pairs.jsonl").pairs,
                                 noisy.stages[stage], seed=noisy.train_seed + stage)
    pairs = stage_pairs[:score_limit] if score_limit else stage_pairs
    scores_path = out / "entropy.jsonl"
    kept_scores = read_scores(scores_path) if reused and scores_path.is_file() else []
    # Reused only when they are this judge's on these pairs, with every kind (a file from before the peak was
    # recorded lacks it).
    if [s.id for s in kept_scores] == [p.id for p in pairs] and \
            all((s.token_entropy is None) == (s.peak_entropy is None) for s in kept_scores):
        _log(f"reusing the warm-up judge's entropies in {scores_path}")
        scores = kept_scores
    else:
        _log(f"entropies of the warm-up judge on {len(pairs)} noisy training pairs")
        warmup = Judge.from_pretrained(str(out / "a_noisy"), batch_size=32)
        scores = score_entropy(warmup, pairs, progress=progress)
        write_scores(scores, scores_path)
    flipped = {p.id: bool(p.meta.get("noisy")) for p in pairs}
    by_kind = {kind: [s for s in scores if s.value(kind) is not None] for kind in ENTROPY_KINDS}  # type: ignore[arg-type]
    scored = by_kind[by]
    binned = {kind: _binned([s.value(kind) for s in rows], [flipped[s.id] for s in rows])  # type: ignore[misc]
              for kind, rows in by_kind.items()}
    correlation = {kind: spearman([s.value(kind) for s in rows], [float(flipped[s.id]) for s in rows])  # type: ignore[misc]
                   for kind, rows in by_kind.items() if len(rows) > 1}
    areas = {kind: auc([s.value(kind) for s in rows], [flipped[s.id] for s in rows])  # type: ignore[misc]
             for kind, rows in by_kind.items() if rows}
    # With the confusion noise model: does the entropy follow how alike a pair's claims look (what the flips follow)?
    alike = {p.id: p.meta["confusion"] for p in pairs if "confusion" in p.meta}
    versus_confusion = {kind: spearman([s.value(kind) for s in rows if s.id in alike],  # type: ignore[misc]
                                       [alike[s.id] for s in rows if s.id in alike])
                        for kind, rows in by_kind.items() if sum(s.id in alike for s in rows) > 1}
    curation = curate(scores, by=by, drop=drop)  # type: ignore[arg-type]
    unscored = {p.id for p in stage_pairs[len(pairs):]}  # beyond --score-limit: kept, as curate keeps the unscored
    keep = set(curation.kept) | unscored
    difficulty = {s.id: s.value(by) for s in scored}
    _log("(b) curated + curriculum SFT")
    report_b, _ = _build_or_reuse(out / "b_egt", noisy, keep=keep, difficulty=difficulty,  # type: ignore[arg-type]
                                  schedule=curriculum_schedule, progress=progress, **resume)
    _log("(c) clean SFT")
    # The clean judge shares that snapshot too when nothing before the critique stage depends on the noise (the
    # small and full recipes: their tokenizer learns from the answer-only stage's pairs alone).
    clean_resume = resume if noise_free_before(noisy, stage) else {}
    report_c, _ = _build_or_reuse(out / "c_clean", base, progress=progress, **clean_resume)
    parts = {}
    if ablation:
        _log("ablation: curation alone, then the curriculum alone")
        parts["b_curation"], _ = _build_or_reuse(out / "b_curation", noisy, keep=keep, progress=progress, **resume)
        parts["b_curriculum"], _ = _build_or_reuse(out / "b_curriculum", noisy, difficulty=difficulty,  # type: ignore[arg-type]
                                                   schedule=curriculum_schedule, progress=progress, **resume)
    dropped_flip = sum(flipped[i] for i in curation.dropped) / max(len(curation.dropped), 1)
    result = {
        "recipe": recipe, "critique_pairs": critique_pairs, "noise": noise, "noise_model": noise_model,
        "noise_sharpness": noise_sharpness, "drop": drop, "by": by, "curriculum_schedule": curriculum_schedule,
        "seed": seed, "scene_seed": base.scene_owner,
        "scored_pairs": len(scored),
        "spearman_entropy_vs_flipped": correlation,
        "auc_entropy_vs_flipped": areas,
        **({"spearman_entropy_vs_confusion": versus_confusion} if versus_confusion else {}),
        "flip_rate_dropped": dropped_flip,
        "flip_rate_kept": sum(flipped.get(i, False) for i in curation.kept) / max(len(curation.kept), 1),
        "accuracy": {"a_noisy": report_a["accuracy"], "b_egt": report_b["accuracy"], "c_clean": report_c["accuracy"],
                     **{k: r["accuracy"] for k, r in parts.items()}},
        "blind_accuracy": {"a_noisy": report_a["blind_accuracy"], "b_egt": report_b["blind_accuracy"],
                           "c_clean": report_c["blind_accuracy"], **{k: r["blind_accuracy"] for k, r in parts.items()}},
        "gain_b_over_a": report_b["accuracy"] - report_a["accuracy"],
        "binned_flip_rate": binned[by],
        "binned_flip_rate_by_kind": binned,
    }
    _plot_egt(result, out / "egt.png")
    (out / "egt_report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _build_or_reuse(folder: Path, recipe: Any, *, keep: set[str] | None = None,
                    difficulty: dict[str, float] | None = None, schedule: str = "blocks",
                    progress: bool = True, **build: Any) -> tuple[dict[str, Any], bool]:
    """``build_demo_judge`` into ``folder`` (``build``: its other keywords, e.g. a snapshot to resume from) unless a
    finished build of the same recipe and inputs is there (an hours-long demonstration resumes after an
    interruption). Returns the report and whether it was reused."""
    import hashlib
    from dataclasses import asdict

    from training.demo_judge import build_demo_judge

    # With a difficulty the schedule is an input too (builds from before it was recorded ordered the answer-only
    # stage as well, so they are rebuilt).
    inputs = json.dumps({"keep": sorted(keep) if keep is not None else None,
                         "difficulty": sorted(difficulty.items()) if difficulty is not None else None,
                         **({"schedule": schedule} if difficulty is not None else {})})
    digest = hashlib.sha256(inputs.encode()).hexdigest()
    report_path, stamp = folder / "demo_report.json", folder / "egt_inputs.sha256"
    if report_path.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("recipe") == json.loads(json.dumps(asdict(recipe), default=str)):  # as the build wrote it
            _log(f"reusing the finished build in {folder}")
            return report, True
    stamp.unlink(missing_ok=True)
    report = build_demo_judge(folder, recipe, keep=keep, difficulty=difficulty, curriculum_schedule=schedule,
                              progress=progress, **build)
    stamp.write_text(digest + "\n")
    return report, False


def _binned(values: list[float], flags: list[bool], bins: int = 5) -> list[dict[str, float]]:
    """Flip rate per entropy quantile bin (equal counts), low to high."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = []
    for b in range(bins):
        chunk = order[b * len(order) // bins: (b + 1) * len(order) // bins]
        if chunk:
            out.append({"entropy_mean": sum(values[i] for i in chunk) / len(chunk),
                        "flip_rate": sum(flags[i] for i in chunk) / len(chunk), "pairs": len(chunk)})
    return out


def _plot_egt(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot("EGT figure")
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    # Quintiles on the x axis, so entropies of different scales share it.
    for (kind, bins), marker in zip(result["binned_flip_rate_by_kind"].items(), "osd^"):
        if bins:
            label = f"{kind} (AUC {result['auc_entropy_vs_flipped'][kind]:.2f})"
            left.plot(range(1, len(bins) + 1), [b["flip_rate"] for b in bins], f"{marker}-", label=label,
                      lw=2.2 if kind == result["by"] else 1.0)
    left.set_xticks(range(1, 6))
    left.axhline(result["noise"], color="grey", lw=0.8, ls="--")
    left.set_xlabel("warm-up judge's entropy quintile (low to high)")
    left.set_ylabel("share of flipped labels")
    left.legend(loc="upper left", fontsize=8)
    names = [k for k in ARM_LABELS if k in result["accuracy"]]
    colours = {"a_noisy": "tab:red", "b_egt": "tab:green", "c_clean": "tab:blue"}
    right.bar(range(len(names)), [result["accuracy"][k] for k in names],
              color=[colours.get(k, "tab:olive") for k in names])
    right.set_xticks(range(len(names)), [ARM_LABELS[k] for k in names], fontsize=8 if len(names) > 3 else None)
    right.axhline(0.5, color="grey", lw=0.8)
    right.set_ylim(0, 1.02)
    right.set_ylabel("held-out accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def filter_demo(judge: Judge, out: Path, *, n: int = 300, corrupt: float = 0.3, seed: int = DEMO_SEED,
                position_wording: str = "numbers", progress: bool = True) -> dict[str, Any]:
    """Write answers (a known share corrupted), filter them with the judge, report precision and recall."""
    pairs = read_preferences(write_dataset(out / "data", n, seed=seed, position_wording=position_wording)).pairs
    rng = random.Random(seed)
    corrupted = set(rng.sample(range(len(pairs)), round(corrupt * len(pairs))))
    rows_path = out / "answers.jsonl"
    with rows_path.open("w", encoding="utf-8") as handle:
        for k, pair in enumerate(pairs):
            wrong = k in corrupted
            answer = pair.response_b if (pair.preferred == "A") == wrong else pair.response_a
            handle.write(json.dumps({"id": pair.id, "images": [str(Path(p).resolve()) for p in pair.images],
                                     "question": pair.question, "answer": answer, "category": pair.category,
                                     "corrupted": wrong}) + "\n")
    rows = read_rows(rows_path)
    score_rows(judge, rows, progress=progress)
    threshold = (judge.config.scale_min + judge.config.scale_max) / 2
    report = flag(rows, threshold=threshold)
    truth = [bool(r.row.get("corrupted")) for r in rows]
    result = {"rows": len(rows), "corrupted": sum(truth), "threshold": threshold,
              "position_wording": position_wording, **precision_recall(rows, truth),
              "per_category": _per_category(rows, truth),
              "errors": report.errors}
    plot_scores(rows, out / "filter_scores.png", report, truth)
    (out / "filter_report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _per_category(rows: list[FilterRow], truth: list[bool]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for category in sorted({str(r.row.get("category")) for r in rows}):
        picked = [(r, t) for r, t in zip(rows, truth) if str(r.row.get("category")) == category]
        out[category] = precision_recall([r for r, _ in picked], [t for _, t in picked])
    return out


def dpo_demo(judge: Judge, policy_dir: str, out: Path, *, n: int = 100, n_candidates: int = 8, rounds: int = 3,
             seed: int = DEMO_SEED, policy_backend: str = "vllm", position_wording: str = "numbers",
             progress: bool = True) -> dict[str, Any]:
    """Build DPO pairs for labelled held-out questions and measure how often chosen is right and rejected wrong."""
    from scaling.curve import reference_checker
    from scaling.demo import labelled_items
    from scaling.policy import PolicySampling, load_policy
    from training.dpo_pairs import DRSConfig, build_pairs, dpo_row, select_pair

    pairs = read_preferences(write_dataset(out / "data", n, seed=seed,
                                           families="colour,count,shape,position,existence",
                                           position_wording=position_wording)).pairs
    items = labelled_items(pairs)
    policy = load_policy(policy_backend, policy_dir)
    _log(f"sampling {n_candidates} candidates for {len(items)} questions")
    candidates = policy.sample(items, n_candidates, PolicySampling(temperature=1.0, max_new_tokens=24, seed=seed))
    _log("ranking and scoring with the judge")
    # UnifiedReward's rule as the issue states it, and the same judgments with chosen required to look right (an
    # expected score at least the scale's midpoint): with a weak policy most prompts have no right candidate at all.
    loose, ranking, scoring = build_pairs(items, candidates, judge, rounds=rounds)
    midpoint = (judge.config.scale_min + judge.config.scale_max) / 2

    def gated(**gates: float) -> list[Any]:
        """Every prompt's pair under ``select_pair``'s gates, from the judgments already made."""
        return [select_pair(i.id, r, s, **gates) for i, r, s in zip(items, ranking, scoring)]

    strict = gated(min_chosen_score=midpoint)
    # Each candidate checked against the reference once; every figure below reads this table.
    right = [[c.error is None and reference_checker(c.text, item) for c in cands]
             for item, cands in zip(items, candidates)]
    drs = DRSConfig()

    def kept_rows(built: list[Any]) -> list[dict[str, Any]]:
        out = []
        for k, (item, cands, pair) in enumerate(zip(items, candidates, built)):
            if pair.dropped is None:
                row = dpo_row(item, cands, pair, drs)
                row["chosen_right"] = right[k][pair.chosen]  # type: ignore[index]
                row["rejected_right"] = right[k][pair.rejected]  # type: ignore[index]
                out.append(row)
        return out

    rows = {"no_threshold": kept_rows(loose), "chosen_at_least_midpoint": kept_rows(strict)}
    with (out / "dpo.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows["chosen_at_least_midpoint"])

    def quality(kept: list[dict[str, Any]]) -> dict[str, float]:
        return {"kept": len(kept), "kept_rate": len(kept) / max(len(items), 1),
                "chosen_right_rejected_wrong": sum(r["chosen_right"] and not r["rejected_right"] for r in kept)
                / max(len(kept), 1),
                "chosen_right": sum(r["chosen_right"] for r in kept) / max(len(kept), 1),
                "rejected_right": sum(r["rejected_right"] for r in kept) / max(len(kept), 1)}

    # The trade-off a curator picks from: stricter gates on chosen's score, again from the same judgments.
    span = judge.config.scale_max - judge.config.scale_min
    gates = sorted({midpoint, *(round(judge.config.scale_min + span * f, 4) for f in (0.7, 0.8, 0.9, 0.95))})
    sweep = [{"min_chosen_score": gate, **quality(kept_rows(gated(min_chosen_score=gate)))} for gate in gates]
    # The other knob: a least margin between chosen's and rejected's scores (on top of the midpoint gate). The scores
    # are nearly all at the ends of the scale, so a pair whose two answers both score near the top - the judge read
    # both as right, so at least one reading is wrong - has a small margin.
    margin_sweep = [{"min_margin": gate, **quality(kept_rows(gated(min_margin=gate, min_chosen_score=midpoint)))}
                    for gate in (0.0, *(round(span * f, 4) for f in (0.1, 0.25, 0.5, 0.75)))]
    # A third gate: chosen must not have lost a Swiss match (the pairwise judgments agree with the pointwise pick).
    unbeaten = quality(kept_rows(gated(min_chosen_score=midpoint, require_unbeaten=True)))
    result = {"prompts": len(items), "position_wording": position_wording, "min_chosen_score": midpoint,
              **quality(rows["chosen_at_least_midpoint"]),
              "no_threshold": quality(rows["no_threshold"]), "sweep": sweep, "margin_sweep": margin_sweep,
              "unbeaten": unbeaten,
              "prompts_with_a_right_candidate": sum(any(r) for r in right) / max(len(items), 1),
              "candidates_right": sum(map(sum, right)) / max(sum(len(r) for r in right), 1)}
    _plot_bars(result, out / "dpo_quality.png")
    (out / "dpo_report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _plot_bars(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot("DPO-quality figure")
    if plt is None:
        return False
    names = ["kept_rate", "chosen_right_rejected_wrong", "chosen_right", "rejected_right",
             "prompts_with_a_right_candidate", "candidates_right"]
    fig, (ax, trade) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    ax.bar(range(len(names)), [result[k] for k in names],
           color=["grey", "tab:green", "tab:blue", "tab:red", "black", "grey"])
    ax.set_xticks(range(len(names)), ["kept pairs", "chosen right &\nrejected wrong", "chosen right",
                                      "rejected right", "prompts with a\nright candidate", "candidates\nright"],
                  fontsize=8)
    ax.axhline(0.9, color="black", lw=0.8, ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share")
    ax.set_title(f"gate: chosen scored >= {result['min_chosen_score']:g}", fontsize=9)
    # Large hollow squares for the score gates, so that points both sweeps share stay visible.
    sweeps = (("sweep", "min_chosen_score", "chosen's score >=", dict(color="tab:green", marker="s", markersize=9,
                                                                       fillstyle="none"), (-75, 8)),
              ("margin_sweep", "min_margin", "margin > (and chosen >= midpoint)",
               dict(color="tab:purple", marker="o", markersize=5), (-80, -14)))
    for key, name, legend, style, offset in sweeps:
        sweep = result.get(key, [])
        trade.plot([g["kept_rate"] for g in sweep], [g["chosen_right_rejected_wrong"] for g in sweep], label=legend,
                   **style)
        points: dict[tuple[float, float], list[str]] = {}  # gates that keep the same pairs share one label
        for g in sweep:
            points.setdefault((g["kept_rate"], g["chosen_right_rejected_wrong"]), []).append(f"{g[name]:g}")
        for xy, gates in points.items():
            label = gates[0] if len(gates) == 1 else f"{gates[0]} to {gates[-1]}"
            trade.annotate(label, xy, fontsize=7, color=style["color"], textcoords="offset points", xytext=offset)
    trade.legend(loc="lower left", fontsize=7)
    trade.axhline(0.9, color="black", lw=0.8, ls="--")
    trade.set_xlim(0, 1.02)
    trade.set_ylim(0, 1.02)
    trade.set_xlabel("kept pairs (share of prompts)")
    trade.set_ylabel("chosen right & rejected wrong")
    trade.set_title("stricter gates, same judgments", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.judge_data_demo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    egt = sub.add_parser("egt", help="entropy-guided curation and curriculum vs noisy and clean SFT")
    egt.add_argument("--out", required=True)
    egt.add_argument("--noise", type=float, default=0.3, help="share of flipped preferences")
    egt.add_argument("--noise-model", choices=NOISE_MODELS, default="uniform",
                     help="which preferences are flipped: uniform (at random; default) or confusion (each family's "
                          "look-alike pairs first, as a confused annotator would)")
    egt.add_argument("--noise-sharpness", type=float, default=DEFAULT_SHARPNESS,
                     help=f"confusion model: flip weights are confusion ** this (default {DEFAULT_SHARPNESS:g})")
    egt.add_argument("--drop", type=float, default=0.3, help="share of highest-entropy pairs to drop")
    egt.add_argument("--by", choices=ENTROPY_KINDS, default="token",
                     help="the entropy that curates and orders: token (mean per token), peak (largest per token) "
                          "or label (verdict)")
    egt.add_argument("--score-limit", type=int, default=None, help="score only the first K training pairs")
    egt.add_argument("--recipe", choices=EGT_RECIPES, default="full",
                     help="full: the shipped judge's recipe (hours); small: single-object colour/shape scenes "
                          "(about an hour); quick: checks the plumbing in a few minutes")
    egt.add_argument("--critique-pairs", type=int, default=None,
                     help="pairs each critique stage draws (default: the recipe's); steps stay the same, so fewer "
                          "pairs are seen more often")
    egt.add_argument("--ablation", action="store_true",
                     help="also build curation alone and the curriculum alone (two more judges)")
    egt.add_argument("--curriculum-schedule", choices=CURRICULUM_SCHEDULES, default="blocks",
                     help="how (b) orders the kept pairs: blocks (every epoch easy to hard; default) or expanding "
                          "(draws from a pool that grows from the easiest third to all over half the steps)")
    egt.add_argument("--seed", type=int, default=0,
                     help="training and model seed, for replicates (default 0); every seed draws from scene seed 0's "
                          "scenes and is held out on the same pairs")
    egt.add_argument("--quick", action="store_true", help="same as --recipe quick")
    egt.add_argument("--no-progress", action="store_true")
    filt = sub.add_parser("filter", help="flag corrupted answers with the pointwise judge")
    filt.add_argument("--judge", required=True)
    filt.add_argument("--out", required=True)
    filt.add_argument("--n", type=int, default=300, help="answers")
    filt.add_argument("--corrupt", type=float, default=0.3, help="share of wrong answers")
    filt.add_argument("--position-wording", choices=("auto",) + POSITION_WORDINGS, default="auto",
                      help="how the answers name cells; auto (default): the judge's, from its build report")
    filt.add_argument("--no-progress", action="store_true")
    dpo = sub.add_parser("dpo", help="judge-built DPO pairs and their correctness")
    dpo.add_argument("--judge", required=True)
    dpo.add_argument("--policy", required=True, help="policy folder (e.g. the scaling demo's weak policy)")
    dpo.add_argument("--policy-backend", default="vllm")
    dpo.add_argument("--out", required=True)
    dpo.add_argument("--n", type=int, default=100, help="questions")
    dpo.add_argument("--n-candidates", type=int, default=8)
    dpo.add_argument("--rounds", type=int, default=3)
    dpo.add_argument("--seed", type=int, default=DEMO_SEED,
                     help=f"scene-space seed of the questions (default {DEMO_SEED}); another seed from 3 up gives "
                          "questions on scenes no recipe saw, to check a gate on data it was not chosen on")
    dpo.add_argument("--position-wording", choices=("auto",) + POSITION_WORDINGS, default="auto",
                     help="how the questions name cells; auto (default): the judge's and the policy's, from their "
                          "build reports (an error when they differ)")
    dpo.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "filter" and not 0 < args.corrupt < 1:
        build_parser().error("--corrupt must be in (0, 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "egt":
        if not 0 < args.noise < 1 or not 0 <= args.drop < 1:
            build_parser().error("--noise must be in (0, 1) and --drop in [0, 1)")
        if args.seed < 0:
            build_parser().error("--seed must be >= 0")
        print(json.dumps(egt_demo(out, noise=args.noise, drop=args.drop, by=args.by,
                                  recipe="quick" if args.quick else args.recipe,
                                  score_limit=args.score_limit, critique_pairs=args.critique_pairs,
                                  noise_model=args.noise_model, noise_sharpness=args.noise_sharpness,
                                  ablation=args.ablation, curriculum_schedule=args.curriculum_schedule,
                                  seed=args.seed, progress=not args.no_progress), indent=2))
        return 0
    try:
        wording = resolve_wording(args.position_wording, args.judge,
                                  *([args.policy] if args.command == "dpo" else []))
    except ValueError as exc:
        build_parser().error(str(exc))
    if args.command == "dpo" and args.seed < DEMO_SEED:
        build_parser().error(f"--seed must be {DEMO_SEED} or more: the recipes train on scene seed 0, hold out 1 "
                             "and the scaling demo uses 2")
    judge = Judge.from_pretrained(args.judge, batch_size=32)
    if args.command == "filter":
        result = filter_demo(judge, out, n=args.n, corrupt=args.corrupt, position_wording=wording,
                             progress=not args.no_progress)
    else:
        result = dpo_demo(judge, args.policy, out, n=args.n, n_candidates=args.n_candidates, rounds=args.rounds,
                          seed=args.seed, policy_backend=args.policy_backend, position_wording=wording,
                          progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
