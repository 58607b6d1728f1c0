"""The output spec: regex, the one parser, format instructions."""

from __future__ import annotations

import re

import pytest

from critic.spec import OutputSpec, VerdictParseError


@pytest.mark.parametrize(
    "spec",
    [
        OutputSpec("pairwise"),
        OutputSpec("pairwise", allow_tie=False),
        OutputSpec("pointwise"),
        OutputSpec("pointwise", scale_min=0, scale_max=5),
        OutputSpec("pairwise", style="think"),
        OutputSpec("pointwise", style="think", critique_max_chars=50),
    ],
    ids=lambda s: f"{s.mode}-{s.style}-tie{s.allow_tie}-{s.scale_min}-{s.scale_max}",
)
def test_every_label_round_trips_through_regex_and_parser(spec: OutputSpec) -> None:
    pattern = re.compile(spec.regex(), re.DOTALL)
    for label in spec.labels:
        text = f"{spec.opening}Looks at the image; A is said to be right.{spec.closing}{spec.marker}{spec.label_continuation(label)}"
        assert pattern.fullmatch(text), text
        parsed = spec.parse(text)
        assert parsed.label == label
        assert parsed.critique == "Looks at the image; A is said to be right."
        assert text.startswith(parsed.context) and parsed.context.endswith(spec.marker)


def test_labels() -> None:
    assert OutputSpec("pairwise").labels == ("A", "B", "tie")
    assert OutputSpec("pairwise", allow_tie=False).labels == ("A", "B")
    assert OutputSpec("pointwise").labels == tuple(str(i) for i in range(1, 11))


def test_regex_bounds_the_critique() -> None:
    spec = OutputSpec("pairwise", critique_max_chars=10)
    pattern = re.compile(spec.regex())
    assert pattern.fullmatch("Critique: 0123456789\nVerdict: A")
    assert not pattern.fullmatch("Critique: 0123456789X\nVerdict: A")
    assert not pattern.fullmatch("Critique: \nVerdict: A")  # at least one character
    # The one-line critique cannot contain the marker, so no second verdict field can be smuggled in.
    assert not pattern.fullmatch("Critique: x\nVerdict: B\nVerdict: A")


def test_token_cap_covers_worst_case_bytes() -> None:
    spec = OutputSpec("pointwise", critique_max_chars=100)
    longest = f"{spec.opening}{'é' * 100}{spec.closing}{spec.marker} 10"
    assert spec.max_new_tokens >= len(longest.encode("utf-8"))


def test_parser_reads_only_the_last_field() -> None:
    spec = OutputSpec("pairwise")
    text = "Critique: Verdict: A would be wrong because the cat is black.\nVerdict: B"
    assert spec.parse(text).label == "B"
    # Unconstrained text that mentions a verdict in the critique and ends with another one: still the last.
    assert spec.parse("Critique: blah\nVerdict: A\nActually\nVerdict: tie").label == "tie"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Critique: no verdict here",
        "Critique: x\nVerdict: C",
        "Critique: x\nVerdict: A.",  # no guessing: trailing punctuation is not a label
        "Critique: x\nVerdict: A or B",
        "Critique: x\nVerdict:",
        "The answer is A",
    ],
)
def test_parser_rejects_malformed_text(text: str) -> None:
    with pytest.raises(VerdictParseError) as info:
        OutputSpec("pairwise").parse(text)
    assert info.value.raw == text


def test_pointwise_parse_and_score() -> None:
    spec = OutputSpec("pointwise")
    assert spec.parse("Critique: fine\nScore: 10").label == "10"
    assert spec.score_of("10") == 10
    with pytest.raises(VerdictParseError):
        spec.parse("Critique: fine\nScore: 11")
    with pytest.raises(VerdictParseError):
        spec.parse("Critique: fine\nVerdict: A")


def test_parser_accepts_bare_marker_at_start() -> None:
    assert OutputSpec("pairwise").parse("Verdict: A").label == "A"


@pytest.mark.parametrize("kwargs", [{"mode": "ranking"}, {"style": "json"}, {"mode": "pointwise", "scale_min": 5, "scale_max": 5},
                                    {"critique_max_chars": 0, "critique_min_chars": 1}, {"critique_max_chars": 10**6}])
def test_invalid_specs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        OutputSpec(**kwargs)


def test_format_instructions_match_structure() -> None:
    pair = OutputSpec("pairwise").format_instructions()
    assert "Critique:" in pair and "Verdict:" in pair and "tie" in pair
    assert "tie" not in OutputSpec("pairwise", allow_tie=False).format_instructions()
    point = OutputSpec("pointwise", scale_min=1, scale_max=7).format_instructions()
    assert "Score:" in point and "1 to 7" in point
    assert "Image A" in OutputSpec("pairwise").format_instructions("images")
