"""What a demo-judge build trains on: the curriculum :class:`Stage`, the whole :class:`DemoRecipe` (stages, model
size, vision pre-training, seeds, noise), and the named recipes: :data:`QUICK` (plumbing), :data:`SMALL` (single-
object colour and shape scenes, for experiments that need several judges) and :func:`ordinal_recipe` (the shipped
judge's). :mod:`training.demo_judge` runs a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from critic.core import JudgeConfig
from critic.prompting import PromptConfig
from critic.tiny import TinySpec
from training.synthetic import (
    FAMILIES,
    check_listing,
    check_lookup,
    check_off_question_families,
    check_wording,
)
from training.synthetic_noise import DEFAULT_SHARPNESS, NOISE_MODELS
from training.synthetic_questions import ORDINALS
from training.vision_pretrain import VisionPretrainConfig


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: scenes with ``min_objects..max_objects`` objects for ``steps`` optimizer steps.

    ``describe`` is the share of scene-description examples ("Row 2, column 3: red circle. …") mixed into the
    critique examples (1.0: a description-only alignment stage): dense supervision that makes the model read every
    visual token, which the one-fact-per-pair critique signal alone did not teach in the time measured."""

    min_objects: int
    max_objects: int
    steps: int
    pairs: int
    describe: float = 0.0
    answer: float = 0.0
    """Share of short-answer examples (the question answered with the image's fact, "The circle is blue."; 1.0:
    an answer-only alignment stage): it teaches the language model to find the asked-about object among the
    visual tokens with a short target, before the critique has to do it."""
    questions: int = 1
    """Most questions per short-answer example: with k > 1 each example asks 1..k questions about its scene at
    once and the target states their facts in order (several retrievals per image instead of one)."""
    learning_rate: float | None = None
    """The stage's peak learning rate (a fresh linear schedule; the vision tower's scales with it); None: the
    recipe's."""
    families: tuple[str, ...] | None = None
    """Train on these question families only (the weak ones, late in training); None: all."""
    other_families: float = 0.0
    """With ``families``, the share of the other families' pairs kept anyway, so that what is learned is not
    forgotten."""
    listing: tuple[str, ...] = ()
    """Families whose critiques (and short answers) first list the objects that decide the fact ("Squares: green,
    red. There are 2 squares."; :data:`training.synthetic.LISTING_FAMILIES`)."""
    off_question: float = 0.0
    """Share of existence pairs whose wrong response is about another object ("Is there a green square?" - "Yes,
    there is a blue square."; ``training.synthetic``'s ``off_question``), as a weak policy answers."""
    off_question_families: tuple[str, ...] = ("existence",)
    """The families ``off_question`` applies to (:data:`training.synthetic_questions.OFF_QUESTION_FAMILIES`); with
    count as a step on run 17, count fell 96 -> 88% (README), so the recipe keeps existence only."""
    lookup: tuple[str, ...] = ()
    """Families whose critiques look each response's claim up in the image instead of stating the fact first
    (:data:`training.synthetic.LOOKUP_FAMILIES`); as a step on run 17, position fell 80 -> 46% (README): unused."""
    near_miss: float = 0.0
    """Share of position pairs whose wrong cell is another object's or another of the right row or column, as a
    policy errs (``training.synthetic``'s ``near_miss``)."""

    @property
    def critiques(self) -> bool:
        """Whether the stage trains critiques (some of its examples are neither descriptions nor short answers): the
        stages that noise, curation and the curriculum act on."""
        return self.describe + self.answer < 1.0

    def __post_init__(self) -> None:
        unknown = set(self.families or ()) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
        check_lookup(self.lookup, check_listing(self.listing))
        check_off_question_families(self.off_question_families)
        if not 0.0 <= self.other_families <= 1.0:
            raise ValueError("other_families must be in [0, 1]")
        if not 0.0 <= self.off_question <= 1.0:
            raise ValueError("off_question must be in [0, 1]")
        if not 0.0 <= self.near_miss <= 1.0:
            raise ValueError("near_miss must be in [0, 1]")


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo judge."""

    stages: tuple[Stage, ...] = (
        Stage(1, 4, 3000, 40000, answer=1.0), Stage(1, 4, 1500, 24000, answer=0.25),
        # Run 12 stopped while still rising: a second schedule at half the rate, then the families that lagged (a
        # share of the rest kept). Run 13: 86.7%.
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3),
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3,
              families=("existence", "count", "position", "hallucination"), other_families=0.15),
        # Count stated wrong (60%): count critiques that list the matching objects first ("Squares: green, red. There
        # are 2 squares."), with 15% of the other families kept. Run 14: count 60 -> 82%.
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3, families=("count",), other_families=0.15,
              listing=("count",)),
        # Run 14 (90.0%) lost position (84 -> 76%) while counting got better: the three families under 90%, still
        # listing counts, with 20% of the rest. Run 15: 93.0%, position 84, count 84, existence 98%, consistency 95%.
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3, families=("position", "existence", "count"),
              other_families=0.2, listing=("count",)),
        # Run 15 lost hallucination (98 -> 92%); the same on count, position and hallucination with 30% of the rest.
        # Run 16: 94.7%, position consistency 97.7%, pointwise 95.7%; position still 78%.
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3, families=("count", "position", "hallucination"),
              other_families=0.3, listing=("count",)),
        # Run 16 rated a weak policy's off-question answers ("Is there a green square?" - "Yes, there is a blue
        # square.") 10/10: half the existence pairs off-question. Run 17 (numbers wording): 95.3%, position 80%.
        Stage(1, 4, 1000, 24000, answer=0.25, learning_rate=1e-3, families=("existence", "count", "position"),
              other_families=0.25, listing=("count",), off_question=0.5))
    vision: VisionPretrainConfig | None = field(default_factory=lambda: VisionPretrainConfig(
        steps=600, align_to_words=True, combo_codes=True, cell_codes=True))
    """Per-cell pre-training of the vision tower before any SFT (:mod:`training.vision_pretrain`); None skips it.
    The combination and cell codes keep which colour goes with which shape in any average of tokens (run 12); rows
    and columns need ~550 steps with them."""
    train_seed: int = 0
    scene_seed: int | None = None
    """The seed whose scenes the training stages draw (:mod:`training.synthetic_scenes`), with ``train_seed`` seeding
    the draws (``draw_seed`` of :func:`training.synthetic.generate_pairs`); None: ``train_seed`` does both, as every
    recipe did before this field. Replicates keep it at 0 and vary ``train_seed``: a seed owns about 1/2**(s+1) of
    each scene space, so a build with train seed 5 on single-object scenes saw 6 of the 384 (seed 0: 192) and its
    short answers were 29% right on held-out scenes (README, EGT replicates)."""
    heldout_seed: int = 1
    heldout_pairs: int = 300
    heldout_max_objects: int = 4
    eval_pairs: int = 96
    eval_every: int = 750
    model_seed: int = 0
    spec: TinySpec = field(default_factory=lambda: TinySpec(
        vocab_size=1000, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
        vision_depth=2, vision_width=128, vision_heads=4, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16,
        max_position_embeddings=2048))
    learning_rate: float = 2e-3
    vision_learning_rate: float = 5e-4
    batch_size: int = 32
    critique_max_chars: int = 320
    modes: tuple[str, ...] = ("pairwise", "pointwise")
    description: str = "rows"
    """Description stages' target: "rows" ("Row 2, column 3: red circle.") or "cells" (every cell in order)."""
    fact_first: bool = True
    """Open every critique with the image's fact ("The circle is blue."), the very sentence the short-answer stage
    teaches, so that skill carries over at the same place in the output; the per-response checks then copy it."""
    critique_style: str = "compare"
    """The synthetic rows' per-response critiques (:data:`training.synthetic.CRITIQUE_STYLES`); ``compare`` puts the
    fact next to each claim in the claim's own short form ("It says red, the image shows blue. Wrong."): run 10."""
    noise: float = 0.0
    """Share of the critique stages' training preferences flipped (with their critiques and facts): the noisy-label
    setting of entropy-guided training. Answer-only stages and held-out pairs stay clean."""
    noise_model: str = "uniform"  # which rows noise flips, and how sharply: training.synthetic_noise.noisy_rows
    noise_sharpness: float = DEFAULT_SHARPNESS
    check_steps: int = 1200
    """Steps of the text-only check primitive before everything else (:func:`check_examples`); 0 skips it. Measured
    alone: 93% / 99% / 99.8% of held-out checks right after 750 / 1,000 / 1,250 steps; run 10's 600 stayed at 60%;
    run 12's 1,200: 60 / 94 / 98% after 400 / 800 / 1,200."""
    verdict_only: bool = False
    """Replace every critique target by a one-character placeholder
    (:data:`training.demo_judge.VERDICT_ONLY_CRITIQUE`), so the verdict is learned directly: the verdict-only arm of
    :mod:`training.critique_ablation`."""
    heldout_families: tuple[str, ...] = FAMILIES
    """The held-out pairs' question families."""
    position_wording: str = "numbers"
    """How the synthetic pairs (training, held-out and the check stage's claims) name a cell: "numbers" ("row 2,
    column 3") or "ordinal" ("the second row, column 3"; :func:`training.synthetic.where`), which lets the vision
    pre-training align rows and columns to their own words (``VisionPretrainConfig(row_words=..., column_words=...)``).
    """
    scene_in_critique: bool = False
    """Start every critique with the whole scene's description ("Row 2, column 3: red circle. …"), so the checks
    that follow can look the fact up in text; costs a longer critique (raise ``critique_max_chars``)."""

    def __post_init__(self) -> None:
        check_wording(self.position_wording, 4)
        if self.scene_owner == self.heldout_seed:  # the same scene seed would hold out the training scenes
            raise ValueError(f"the training scenes' seed (scene_seed, else train_seed) and heldout_seed must differ "
                             f"(both {self.heldout_seed})")
        if not 0.0 <= self.noise < 1.0 or self.noise_model not in NOISE_MODELS:
            raise ValueError(f"noise must be in [0, 1) and noise_model one of {NOISE_MODELS}")
        for stage in self.stages:
            if stage.describe < 0 or stage.answer < 0 or stage.describe + stage.answer > 1:
                raise ValueError(f"a stage's describe and answer shares must be >= 0 and sum to <= 1: {stage}")
        # The judge refuses items whose prompt plus worst-case output exceed the context (context_length errors),
        # so a budget whose token cap does not fit would make every evaluation empty.
        cap = self.judge_config().spec("pairwise").max_new_tokens
        if cap + 256 > self.spec.max_position_embeddings:
            raise ValueError(f"critique_max_chars {self.critique_max_chars} needs up to {cap} output tokens; with "
                             f"max_position_embeddings {self.spec.max_position_embeddings} no prompt would fit")

    @property
    def scene_owner(self) -> int:
        """The seed whose scenes the training stages draw from."""
        return self.train_seed if self.scene_seed is None else self.scene_seed

    @property
    def draw_seed(self) -> int | None:
        """``draw_seed`` for the training stages' :func:`training.synthetic.write_dataset`: None when the owner draws
        too (the rows stay byte-identical to builds from before ``scene_seed``)."""
        return None if self.scene_owner == self.train_seed else self.train_seed

    def judge_config(self) -> JudgeConfig:
        return JudgeConfig(critique_max_chars=self.critique_max_chars,
                           prompt=PromptConfig(system_template="compact_system"))


QUICK = DemoRecipe(check_steps=5, critique_style="compare",
                   stages=(Stage(1, 2, 10, 64, answer=1.0), Stage(1, 2, 20, 64, describe=0.2, answer=0.2),
                           Stage(1, 2, 6, 64, answer=0.25, learning_rate=1e-3, families=("count", "existence"),
                                 other_families=0.2, listing=("count", "position"), off_question=0.5)),
                   heldout_pairs=16, eval_pairs=16, eval_every=20, batch_size=8,
                   vision=VisionPretrainConfig(steps=10, batch_size=8, heldout_scenes=16, eval_every=5,
                                               align_to_words=True, combo_codes=True, cell_codes=True))

SMALL = DemoRecipe(stages=(Stage(1, 1, 400, 6000, answer=1.0, families=("colour", "shape")),
                           Stage(1, 1, 800, 6000, answer=0.25, families=("colour", "shape"))),
                   check_steps=1200, heldout_pairs=160, heldout_max_objects=1, heldout_families=("colour", "shape"),
                   eval_pairs=48, eval_every=400)
"""About 17 minutes: the shipped recipe's steps, shorter, on single-object colour and shape questions, for experiments
that need several judges (:mod:`training.critique_ablation`, the small EGT demonstration). Without the vision and
short-answer steps (and a tokenizer of these pairs alone) it was at chance after 600 critique steps."""


def with_position_wording(recipe: DemoRecipe, wording: str) -> DemoRecipe:
    """``recipe`` with position claims in ``wording`` (:data:`training.synthetic_questions.POSITION_WORDINGS`); for
    ``ordinal`` the vision pre-training also aligns the row head to the ordinal words and the column head to the
    digits (the point of that wording), for at least ``ORDINAL_VISION_STEPS`` steps."""
    check_wording(wording, 4)
    if wording != "ordinal" or recipe.vision is None:
        return replace(recipe, position_wording=wording)
    grid = recipe.vision.grid
    return replace(recipe, position_wording=wording,
                   vision=replace(recipe.vision, row_words=ORDINALS[:grid],
                                  column_words=tuple(str(k + 1) for k in range(grid)),
                                  steps=max(recipe.vision.steps, ORDINAL_VISION_STEPS)))


ORDINAL_VISION_STEPS = 1200
"""Word-aligned row heads learn slower than linear ones: 600 steps left the row head at 29% per cell in a full build
(the default heads: 100%); 1,200 reached 100%."""

SHAPE_STAGE = Stage(1, 4, 2000, 24000, answer=0.5, learning_rate=1e-3, families=("shape",), other_families=0.3,
                    listing=("count",))
"""The ordinal recipe's stage 8: shape pairs, half of them short answers, 30% of the other families. Its eight
stages before read shape at 78% (another object's shape: the colour-keyed lookup comes late). Measured (one seed):
300 held-out pairs 92.7 -> 96.7%, shape 78 -> 96%; 1,000 steps of it had left shape at 84% (README)."""


NEAR_MISS_STAGE = Stage(1, 4, 2000, 24000, answer=0.2, learning_rate=5e-4, families=("position", "count"),
                        other_families=0.3, listing=("count",), near_miss=0.7)
"""The ordinal recipe's stage 9, its last: position and count pairs, 70% of the position pairs with a wrong cell a
policy names (``near_miss``), 30% of the rest. After stage 8 the judge scored a policy's "right column, wrong row"
answers 10 of 10. Measured (one seed): 300 held-out pairs 96.7 -> 97.0%, 300 position pairs 91.3 -> 98.0%, DPO
pairs right 84.0 -> 89.0% with the midpoint gate (README)."""


def ordinal_recipe() -> DemoRecipe:
    """:class:`DemoRecipe` in the ordinal wording (:func:`with_position_wording`) with :data:`SHAPE_STAGE` and
    :data:`NEAR_MISS_STAGE` after its stages: the shipped judge's recipe, what ``python -m training.demo_judge``
    builds."""
    recipe = with_position_wording(DemoRecipe(), "ordinal")
    return replace(recipe, stages=recipe.stages + (SHAPE_STAGE, NEAR_MISS_STAGE))
