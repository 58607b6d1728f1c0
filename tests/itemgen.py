"""Random judge items for integration tests (random words, random solid-colour images of random sizes)."""

from __future__ import annotations

import random

from PIL import Image

from critic import JudgeItem

WORDS = "red blue green circle square triangle left right top bottom two three none large small cat dog the is a".split()


def random_image(rng: random.Random) -> Image.Image:
    size = (rng.randint(28, 120), rng.randint(28, 120))
    return Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def random_items(mode: str, n: int, seed: int, max_images: int = 2) -> list[JudgeItem]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        common = {"id": f"{mode}-{i}", "question": sentence(rng, rng.randint(1, 12)) + "?",
                  "images": [random_image(rng) for _ in range(rng.randint(0, max_images))]}
        if mode == "pairwise":
            items.append(JudgeItem(response_a=sentence(rng, rng.randint(0, 30)),
                                   response_b=sentence(rng, rng.randint(0, 30)), **common))
        else:
            items.append(JudgeItem(response=sentence(rng, rng.randint(0, 30)), **common))
    return items
