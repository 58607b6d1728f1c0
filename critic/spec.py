"""The one declarative description of what the judge writes, and the one parser of it.

An :class:`OutputSpec` says: pairwise (``A`` / ``B`` / ``tie``) or pointwise (an integer on a scale), critique style
(``Critique: …`` on one line, or ``<think>…</think>``), and the critique's character budget.  From it come

* :meth:`OutputSpec.regex` – the constraint every engine enforces (outlines on transformers, ``structured_outputs``
  on vLLM, server-side regex on OpenAI-compatible servers).  The budget is inside the regex, so the verdict is always
  reached; :attr:`OutputSpec.max_new_tokens` is large enough that no token cap can cut it off first;
* :meth:`OutputSpec.parse` – the only verdict parser in the project.  It reads the *last* verdict field and nothing
  else, so words in the critique ("A is wrong…") can never be taken for the verdict;
* :meth:`OutputSpec.format_instructions` – the sentence the prompt uses to describe the format to the model.

The text the judge writes looks like this (pairwise, critique style)::

    Critique: Response A names a red square but the square is blue; Response B is right.
    Verdict: B
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pairwise", "pointwise"]
Style = Literal["critique", "think"]

PAIRWISE_LABELS = ("A", "B")
TIE = "tie"

# Byte-level tokenizers can spend up to 4 tokens on one character (UTF-8), so a token cap of 4 × the character
# budget (plus the fixed parts) can never stop generation before the regex is complete.
_BYTES_PER_CHAR = 4


class VerdictParseError(ValueError):
    """Text that does not end in a valid verdict field; keeps the raw text for the error record."""

    def __init__(self, reason: str, raw: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


_REGEX_SPECIAL = set(".^$*+?{}[]\\|()")


def regex_escape(text: str) -> str:
    """Escape ``text`` for the regex dialects of every engine (Python, llguidance, xgrammar, outlines).

    ``re.escape`` also escapes spaces and newlines (``\\ ``, backslash-newline), which some engines' regex parsers
    warn about or misread; here only metacharacters are escaped and a newline is written ``\\n``.
    """
    return "".join("\\n" if ch == "\n" else ("\\" + ch if ch in _REGEX_SPECIAL else ch) for ch in text)


@dataclass(frozen=True)
class ParsedOutput:
    """What :meth:`OutputSpec.parse` read from one generated text."""

    critique: str
    """The critique (or the ``<think>`` content) with the fixed framing removed."""
    label: str
    """The verdict label exactly as allowed by the spec: ``A``, ``B``, ``tie`` or a score like ``7``."""
    context: str
    """The text up to and including the verdict marker; label probabilities are conditioned on it."""


@dataclass(frozen=True)
class OutputSpec:
    """Structure of the judge's output: critique first, verdict last."""

    mode: Mode = field(default="pairwise", metadata={"help": "pairwise (A/B/tie) or pointwise (a score)"})
    allow_tie: bool = field(default=True, metadata={"help": "pairwise only: allow the verdict 'tie'"})
    scale_min: int = field(default=1, metadata={"help": "pointwise only: lowest score"})
    scale_max: int = field(default=10, metadata={"help": "pointwise only: highest score"})
    style: Style = field(default="critique", metadata={"help": "'critique' (one line) or 'think' (<think>…</think>)"})
    critique_max_chars: int = field(default=600, metadata={"help": "hard budget of the critique, in characters"})
    critique_min_chars: int = field(default=1, metadata={"help": "the critique may not be shorter than this"})

    def __post_init__(self) -> None:
        if self.mode not in ("pairwise", "pointwise"):
            raise ValueError(f"mode must be 'pairwise' or 'pointwise', not {self.mode!r}")
        if self.style not in ("critique", "think"):
            raise ValueError(f"style must be 'critique' or 'think', not {self.style!r}")
        if self.mode == "pointwise" and not self.scale_min < self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must be below scale_max ({self.scale_max})")
        if self.mode == "pointwise" and self.scale_min < 0:
            raise ValueError("scores must be non-negative integers")
        if not 0 <= self.critique_min_chars <= self.critique_max_chars:
            raise ValueError("need 0 <= critique_min_chars <= critique_max_chars")
        if self.critique_max_chars > 20_000:
            raise ValueError("critique_max_chars above 20000 makes the constraint automaton needlessly large")

    # ----------------------------------------------------------------- structure
    @property
    def labels(self) -> tuple[str, ...]:
        """The allowed verdicts, in a fixed order (probabilities are reported in this order)."""
        if self.mode == "pairwise":
            return PAIRWISE_LABELS + ((TIE,) if self.allow_tie else ())
        return tuple(str(s) for s in range(self.scale_min, self.scale_max + 1))

    @property
    def opening(self) -> str:
        return "Critique: " if self.style == "critique" else "<think>\n"

    @property
    def closing(self) -> str:
        return "" if self.style == "critique" else "\n</think>"

    @property
    def marker(self) -> str:
        """Text right before the label.  It starts with a newline that the critique cannot contain."""
        return "\nVerdict:" if self.mode == "pairwise" else "\nScore:"

    def label_continuation(self, label: str) -> str:
        """What follows :attr:`marker` for ``label``: one space, then the label."""
        return f" {label}"

    @property
    def _critique_class(self) -> str:
        # One-line critiques exclude the newline, so the marker (which starts with one) cannot appear inside.
        # Think blocks may span lines but exclude '<', so '</think>' ends them.
        return r"[^\n]" if self.style == "critique" else r"[^<]"

    def regex(self) -> str:
        """The constraint, as a regular expression over the whole generated text."""
        alternatives = "|".join(regex_escape(self.label_continuation(lb)) for lb in self.labels)
        return (
            regex_escape(self.opening)
            + f"{self._critique_class}{{{self.critique_min_chars},{self.critique_max_chars}}}"
            + regex_escape(self.closing)
            + regex_escape(self.marker)
            + f"({alternatives})"
        )

    @property
    def max_new_tokens(self) -> int:
        """A token cap that can never cut the output before the verdict (see ``_BYTES_PER_CHAR``)."""
        fixed = len(self.opening) + len(self.closing) + len(self.marker)
        longest_label = max(len(self.label_continuation(lb)) for lb in self.labels)
        return _BYTES_PER_CHAR * (self.critique_max_chars + fixed + longest_label) + 2

    def format_instructions(self, subject: str = "responses") -> str:
        """How the prompt describes the output format to the model (kept in step with :meth:`regex`)."""
        budget = f"at most {self.critique_max_chars} characters"
        if self.style == "critique":
            body = f"Critique: <your critique on a single line, {budget}>"
        else:
            body = f"<think>\n<your step-by-step reasoning, {budget}>\n</think>"
        if self.mode == "pairwise":
            thing = "Image" if subject == "images" else "Response"
            choices = f"A if {thing} A is better, B if {thing} B is better"
            if self.allow_tie:
                choices += ", tie if they are equally good"
            verdict = f"Verdict: <{choices}>"
        else:
            verdict = f"Score: <an integer from {self.scale_min} to {self.scale_max}>"
        return f"Answer in exactly this format:\n{body}\n{verdict}"

    def format(self, critique: str, label: str) -> str:
        """The exact text this spec's constraint produces for ``critique`` and ``label`` (training targets).

        Raises ValueError when no constrained generation could produce it (a newline in a one-line critique, a
        critique over budget, a label the spec does not allow)."""
        if label not in self.labels:
            raise ValueError(f"label {label!r} is not one of {self.labels}")
        if not self.critique_min_chars <= len(critique) <= self.critique_max_chars:
            raise ValueError(f"critique is {len(critique)} characters; the budget is {self.critique_min_chars}"
                             f"..{self.critique_max_chars}")
        text = self.opening + critique + self.closing + self.marker + self.label_continuation(label)
        if re.fullmatch(self.regex(), text) is None:
            forbidden = "a newline" if self.style == "critique" else "'<'"
            raise ValueError(f"critique contains {forbidden}, which this output format does not allow")
        return text

    # ----------------------------------------------------------------- parsing
    def parse(self, text: str) -> ParsedOutput:
        """Read the verdict from generated text, or raise :class:`VerdictParseError`.

        Only the final field counts: the text after the *last* marker must be exactly one allowed label (surrounding
        whitespace aside).  Under constrained decoding this always succeeds; for unconstrained text (a server that
        ignored the constraint) anything else is an error, never a guess.
        """
        position = text.rfind(self.marker)
        if position < 0:
            # Unconstrained outputs may start directly with the marker, without the newline before it.
            bare = self.marker.lstrip("\n")
            if text.startswith(bare):
                position = -1  # the newline is virtually at index -1
                context_end = len(bare)
            else:
                raise VerdictParseError(f"no {bare!r} field in the output", raw=text)
        else:
            context_end = position + len(self.marker)
        tail = text[context_end:].strip()
        if tail not in self.labels:
            allowed = ", ".join(self.labels)
            raise VerdictParseError(f"verdict {tail[:40]!r} is not one of: {allowed}", raw=text)
        head = text[: max(position, 0)]
        critique = head.strip()
        if critique.startswith(self.opening.strip()):
            critique = critique[len(self.opening.strip()) :]
        if self.closing and critique.endswith(self.closing.strip()):
            critique = critique[: -len(self.closing.strip())]
        return ParsedOutput(critique=critique.strip(), label=tail, context=text[:context_end])

    def parses(self, text: str) -> bool:
        """Whether :meth:`parse` accepts ``text``."""
        try:
            self.parse(text)
        except VerdictParseError:
            return False
        return True

    def score_of(self, label: str) -> int:
        """Pointwise: the integer score of a label."""
        if self.mode != "pointwise":
            raise ValueError("score_of() applies to pointwise specs only")
        return int(label)
