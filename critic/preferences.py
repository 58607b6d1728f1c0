"""Preference data: pairs of responses with a known better one, read from the published judge benchmarks.

    from critic.preferences import read_preferences, missing_media
    data = read_preferences("vl_rewardbench.json")           # format detected from the columns
    data.format, len(data.pairs), data.problems                # 'vl-rewardbench', 1250, [RowProblem(...), ...]
    item = data.pairs[0].to_item()                             # a pairwise JudgeItem for the judge

Reading never crashes on a bad row: every row becomes a :class:`PreferencePair` or a :class:`RowProblem` (line
number, id, reason) in :attr:`PreferenceFile.problems`, and the rest is still read.  Relative image paths are
resolved against the data file's folder, or against ``images_dir`` when given.  Ids are made unique: when an id
repeats (MM-RLHF gives every pair of a prompt the same id) each occurrence gets ``#1``, ``#2`` … and the
original is kept in ``meta["source_id"]``.

Formats (``format=``; ``"auto"`` detects from the first valid row's keys):

``generic`` – the project's own JSONL schema, written by ``python -m training.synthetic``::

    {"id": "p1", "images": ["a.png"] (or "image": "a.png"), "video": "v.mp4" (optional),
     "question": "...", "response_a": "...", "response_b": "...", "preferred": "A" | "B" | "tie",
     "critique_a": "...", "critique_b": "...", "observation": "...", "score_a": 7, "score_b": 3,
     "category": "...", "group": "...", "meta": {...}}

  Instead of ``response_a``/``response_b``/``preferred`` a row may give ``chosen`` and ``rejected`` (chosen becomes
  A and is preferred; then ``chosen_critique``/``rejected_critique``).  Everything after ``preferred`` is optional.
  Per-response critiques never name positions ("this response…"), so they stay true when the pair is swapped.

``mm-rlhf`` – MM-RLHF / MM-RLHF-RewardBench JSONL: ``id``, ``image`` or ``video``, ``prompt``, ``chosen``,
``rejected``, ``chosen_reason``, ``rejected_reason``.  Category = first path component of the media
(``mcq/073712.png`` → ``mcq``); group = the id before its last ``_`` (pairs of one prompt, for ACC+).

``vl-rewardbench`` – VL-RewardBench, a JSON array (or JSONL): ``id``, ``query``, ``response`` (two strings),
``image``, ``human_ranking`` (two ranks, lower is better; equal ranks are a tie).  The published order is kept
(``response[0]`` is A).  Category from the id's leading word (general / hallucination / reasoning).

``mmrb`` – Multimodal RewardBench JSONL: ``ID``, ``Text``, ``Image``, ``Output1``, ``Output2``, ``Better``
(``"Output1"`` / ``"Output2"``), ``Category``.

A source ``hf:NAME[:SPLIT]`` is loaded with Hugging Face ``datasets`` (images may then be PIL images); rows go
through the same converters.  Any iterable of dicts (e.g. an in-memory ``datasets.Dataset``) is read the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

from critic.combine import swap_label
from critic.media import MediaSource
from critic.types import JudgeItem

Preferred = Literal["A", "B", "tie"]
FORMATS = ("generic", "mm-rlhf", "vl-rewardbench", "mmrb")
Source = Union[str, os.PathLike, Iterable[Mapping[str, Any]]]
"""What :func:`read_preferences` reads: a file path, ``hf:NAME[:SPLIT]``, or rows (e.g. a ``datasets.Dataset``)."""

# VL-RewardBench's three reported categories, keyed by the lower-cased leading word of an item's id.
_VLRB_CATEGORIES = {
    **dict.fromkeys(("wildvision", "jailbreak", "lrvinstruction", "politics", "svit"), "general"),
    **dict.fromkeys(("hallucination", "rlaif", "rlhf"), "hallucination"),
    **dict.fromkeys(("mathverse", "mmmu"), "reasoning"),
}
_GENERIC_FIELDS = {"id", "images", "image", "video", "question", "response_a", "response_b", "preferred", "chosen",
                   "rejected", "chosen_critique", "rejected_critique", "critique_a", "critique_b", "observation",
                   "score_a", "score_b", "category", "group", "meta"}
_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass
class PreferencePair:
    """Two responses to one question about some media, and which one people (or a benchmark) prefer."""

    id: str
    """Unique within its file (repeated source ids get ``#1``, ``#2`` …; the original is in ``meta['source_id']``)."""
    question: str
    """The question or instruction both responses answer."""
    response_a: str
    """The first response (in the published order)."""
    response_b: str
    """The second response."""
    preferred: Preferred
    """The gold verdict: 'A', 'B' or 'tie'."""
    images: list[MediaSource] = field(default_factory=list)
    """Images (resolved paths, or PIL images when read from Hugging Face datasets)."""
    video: MediaSource | list[MediaSource] | None = None
    """A video file, a folder of frames, or a list of frames."""
    critique_a: str | None = None
    """A critique of response A alone; it never names positions, so it survives a swap."""
    critique_b: str | None = None
    """A critique of response B alone."""
    observation: str | None = None
    """What the media shows, stated without reference to either response."""
    score_a: float | None = None
    """An absolute score of response A, when the source gives one."""
    score_b: float | None = None
    """An absolute score of response B."""
    category: str | None = None
    """Benchmark category (per-category accuracy)."""
    group: str | None = None
    """Pairs that share a prompt (ACC+: a group counts only when every one of its pairs is right)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source fields with no place above (e.g. VL-RewardBench's rationale and models)."""
    line: int = 0
    """Line of the source file (JSONL, or where the object starts in a JSON array), or 1-based row of a dataset."""

    def to_item(self) -> JudgeItem:
        """The pairwise :class:`JudgeItem` the judge sees: media, question, both responses; never the gold."""
        return JudgeItem(id=self.id, question=self.question, response_a=self.response_a,
                         response_b=self.response_b, images=list(self.images), video=_video_source(self.video))

    def swapped(self) -> PreferencePair:
        """The same pair with the responses (and everything per response) exchanged."""
        return replace(self, response_a=self.response_b, response_b=self.response_a,
                       preferred=swap_label(self.preferred), critique_a=self.critique_b, critique_b=self.critique_a,
                       score_a=self.score_b, score_b=self.score_a, meta=dict(self.meta))  # type: ignore[arg-type]

    def to_row(self, relative_to: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """One row of the generic schema; paths are written relative to ``relative_to`` when they lie under it.

        Raises ``ValueError`` for in-memory media (PIL images, bytes), which a JSON row cannot hold.
        """
        row: dict[str, Any] = {"id": self.id, "images": [_path_text(m, relative_to) for m in self.images]}
        if self.video is not None:
            frames = self.video if isinstance(self.video, list) else None
            row["video"] = [_path_text(f, relative_to) for f in frames] if frames is not None else _path_text(self.video, relative_to)
        row.update(question=self.question, response_a=self.response_a, response_b=self.response_b,
                   preferred=self.preferred)
        for name in ("critique_a", "critique_b", "observation", "score_a", "score_b", "category", "group"):
            if getattr(self, name) is not None:
                row[name] = getattr(self, name)
        if self.meta:
            row["meta"] = self.meta
        return row


@dataclass(frozen=True)
class RowProblem:
    """A row that could not be read, and why."""

    line: int
    """Line of the source file (or 1-based row of a dataset)."""
    id: str | None
    """The row's id when it had one."""
    message: str

    def __str__(self) -> str:
        return f"line {self.line}{f' ({self.id})' if self.id else ''}: {self.message}"


@dataclass
class PreferenceFile:
    """Everything read from one source: valid pairs and the rows that were not."""

    source: str
    format: str
    """The format used: one of :data:`FORMATS`, or 'unknown' when no row could be recognised."""
    pairs: list[PreferencePair] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0
    """Rows seen (valid and not)."""

    @property
    def categories(self) -> dict[str, int]:
        """Pairs per category (``None`` categories are counted as 'uncategorised')."""
        return dict(Counter(p.category or "uncategorised" for p in self.pairs))


class _RowError(ValueError):
    """Why one row is not a valid pair."""


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def read_preferences(source: Source, format: str = "auto", images_dir: str | os.PathLike[str] | None = None
                     ) -> PreferenceFile:
    """Read preference pairs from a file, an ``hf:NAME[:SPLIT]`` dataset or an iterable of row dicts.

    Raises only for a missing source or an unknown ``format``; bad rows become :attr:`PreferenceFile.problems`.
    """
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {', '.join(FORMATS)}")
    base: Path | None = None
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name.startswith("hf:"):
            rows = list(_hf_rows(name[3:]))
        else:
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"data file {name!r} does not exist")
            rows, base = list(_file_rows(path)), path.parent
    else:
        name = f"<{type(source).__name__}>"
        rows = list(enumerate(source, start=1))
    base = Path(images_dir) if images_dir is not None else base
    if format == "auto":
        format = next((f for _, row in rows if isinstance(row, Mapping) and (f := detect_format(row))), "unknown")
    result = PreferenceFile(source=name, format=format, rows=len(rows))
    convert = _CONVERTERS.get(format)
    for line, row in rows:
        row_id = _raw_id(row)
        try:
            if isinstance(row, _Invalid):
                raise _RowError(row.message)
            if not isinstance(row, Mapping):
                raise _RowError(f"row is a {type(row).__name__}, not an object")
            if convert is None:
                raise _RowError(f"cannot tell the format from the columns {sorted(row)[:8]}")
            pair = convert(row, lambda value: _resolve(value, base))
        except _RowError as exc:
            result.problems.append(RowProblem(line, row_id, str(exc)))
            continue
        pair.id, pair.line = row_id or f"line-{line}", line
        result.pairs.append(pair)
    _make_ids_unique(result.pairs)
    return result


def detect_format(row: Mapping[str, Any]) -> str | None:
    """The format whose columns ``row`` has, or None."""
    keys = set(row)
    if "human_ranking" in keys or {"query", "response"} <= keys:
        return "vl-rewardbench"
    if {"Output1", "Output2"} <= keys or "Better" in keys:
        return "mmrb"
    if "question" in keys and ({"response_a", "response_b"} <= keys or {"chosen", "rejected"} <= keys):
        return "generic"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "mm-rlhf"
    return None


def missing_media(pair: PreferencePair) -> list[str]:
    """Paths of the pair's images and video that do not exist (in-memory media never count as missing)."""
    sources = list(pair.images)
    sources += pair.video if isinstance(pair.video, list) else ([pair.video] if pair.video is not None else [])
    missing = []
    for source in sources:
        if isinstance(source, (str, os.PathLike)) and not str(source).startswith("data:") and not os.path.exists(source):
            missing.append(os.fspath(source))
    return missing


@dataclass(frozen=True)
class _Invalid:
    message: str


def _file_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, row) for a JSONL file or a JSON array; unreadable JSON becomes an :class:`_Invalid` row."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        yield from _array_rows(text)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, _Invalid(f"invalid JSON ({exc.msg}, column {exc.colno})")


def _array_rows(text: str) -> Iterator[tuple[int, Any]]:
    """Elements of a JSON array one by one, each with the line it starts on (so problems point at the file)."""
    decoder, pos, line, counted = json.JSONDecoder(), text.index("[") + 1, 1, 0

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    def line_at(at: int) -> int:
        nonlocal line, counted
        line, counted = line + text.count("\n", counted, at), at
        return line

    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield exc.lineno, _Invalid(f"invalid JSON ({exc.msg}); the rest of the array is unreadable")
            return
        yield line_at(pos), value
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos >= len(text) or text[pos] != "]":
            yield line_at(min(pos, len(text))), _Invalid("expected ',' or ']' after an array element")
        return


def _hf_rows(spec: str) -> Iterator[tuple[int, Any]]:
    """Rows of ``NAME[:SPLIT]`` from the Hugging Face Hub (or its cache); the split defaults to 'test', else the first."""
    try:
        import datasets  # lazy: an optional dependency
    except ImportError as exc:
        raise ImportError("reading 'hf:' sources needs the Hugging Face datasets library: pip install datasets") from exc
    name, _, split = spec.partition(":")
    data = datasets.load_dataset(name, split=split or None)
    if isinstance(data, Mapping):  # a DatasetDict: no split was named
        data = data["test"] if "test" in data else data[next(iter(data))]
    yield from enumerate(data, start=1)


def _raw_id(row: Any) -> str | None:
    if not isinstance(row, Mapping):
        return None
    value = row.get("id", row.get("ID"))
    return None if value is None or value == "" else str(value)


def _make_ids_unique(pairs: list[PreferencePair]) -> None:
    counts = Counter(p.id for p in pairs)
    seen: Counter[str] = Counter()
    for pair in pairs:
        if counts[pair.id] > 1:
            seen[pair.id] += 1
            pair.meta.setdefault("source_id", pair.id)
            pair.id = f"{pair.id}#{seen[pair.id]}"


def _resolve(value: Any, base: Path | None) -> Any:
    """A media value as the judge takes it: paths resolved against ``base``; HF image dicts unpacked."""
    if isinstance(value, Mapping):  # datasets' Image feature when not decoded: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and base is not None and not value.startswith("data:") and not os.path.isabs(value):
        return str(base / value)
    return value


def _video_source(video: Any) -> Any:
    """A folder of frames becomes its sorted image files (MM-RLHF stores videos that way); anything else as is."""
    if isinstance(video, (str, os.PathLike)) and os.path.isdir(video):
        return sorted(str(p) for p in Path(video).iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
    return video


def _path_text(value: Any, relative_to: str | os.PathLike[str] | None) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"cannot write in-memory media ({type(value).__name__}) to a JSON row; save it to a file first")
    text = os.fspath(value)
    if relative_to is not None and not text.startswith("data:"):
        try:
            return str(Path(text).resolve().relative_to(Path(relative_to).resolve()))
        except ValueError:  # not under relative_to: keep the path as it is
            pass
    return text


# --------------------------------------------------------------------------------------------------------------
# Row converters: one per format, each raising _RowError with the reason
# --------------------------------------------------------------------------------------------------------------

Resolve = Callable[[Any], Any]


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise _RowError(f"missing field {key!r}")
    if not isinstance(value, str):
        raise _RowError(f"field {key!r} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise _RowError(f"field {key!r} is empty")
    return value


def _optional_text(row: Mapping[str, Any], key: str) -> str | None:
    return None if row.get(key) in (None, "") else _text(row, key)


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _RowError(f"field {key!r} must be a number")
    return value


def _media_list(row: Mapping[str, Any], resolve: Resolve) -> list[Any]:
    if row.get("image") is not None and row.get("images") is not None:
        raise _RowError("give either 'image' or 'images', not both")
    images = row.get("images")
    if images is None:
        images = [] if row.get("image") in (None, "") else [row["image"]]
    if not isinstance(images, list):
        raise _RowError("'images' must be a list")
    return [resolve(image) for image in images]


def _first_folder(path: Any) -> str | None:
    parts = str(path).replace("\\", "/").split("/") if isinstance(path, str) else []
    return parts[0] if len(parts) > 1 else None


def _generic(row: Mapping[str, Any], resolve: Resolve) -> PreferencePair:
    unknown = sorted(set(row) - _GENERIC_FIELDS)
    if unknown:
        raise _RowError(f"unknown field(s) {', '.join(unknown)}")
    # Presence means "not None": a Hugging Face dataset fills the columns a row lacks with None.
    if row.get("chosen") is not None or row.get("rejected") is not None:
        if any(row.get(k) is not None for k in ("response_a", "response_b", "preferred")):
            raise _RowError("give either chosen/rejected or response_a/response_b/preferred, not both")
        a, b, preferred = _text(row, "chosen"), _text(row, "rejected"), "A"
        critique_a, critique_b = _optional_text(row, "chosen_critique"), _optional_text(row, "rejected_critique")
    else:
        a, b = _text(row, "response_a"), _text(row, "response_b")
        preferred = {"a": "A", "b": "B", "tie": "tie"}.get(str(row.get("preferred")).lower())
        if preferred is None:
            raise _RowError(f"'preferred' must be 'A', 'B' or 'tie', not {row.get('preferred')!r}")
        critique_a, critique_b = _optional_text(row, "critique_a"), _optional_text(row, "critique_b")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise _RowError("'meta' must be an object")
    video = row.get("video")
    return PreferencePair(
        id="", question=_text(row, "question"), response_a=a, response_b=b, preferred=preferred,  # type: ignore[arg-type]
        images=_media_list(row, resolve), video=None if video in (None, "") else resolve(video),
        critique_a=critique_a, critique_b=critique_b, observation=_optional_text(row, "observation"),
        score_a=_number(row, "score_a"), score_b=_number(row, "score_b"),
        category=None if row.get("category") is None else str(row["category"]),
        group=None if row.get("group") is None else str(row["group"]), meta=dict(meta),
    )


def _mm_rlhf(row: Mapping[str, Any], resolve: Resolve) -> PreferencePair:
    image, video = row.get("image"), row.get("video")
    row_id = _raw_id(row)
    return PreferencePair(
        id="", question=_text(row, "prompt"), response_a=_text(row, "chosen"), response_b=_text(row, "rejected"),
        preferred="A", images=[] if image in (None, "") else [resolve(image)],
        video=None if video in (None, "") else resolve(video),
        critique_a=_optional_text(row, "chosen_reason"), critique_b=_optional_text(row, "rejected_reason"),
        category=_first_folder(image if image is not None else video) or row.get("category"),
        group=None if row_id is None else row_id.rsplit("_", 1)[0],
    )


def _vl_rewardbench(row: Mapping[str, Any], resolve: Resolve) -> PreferencePair:
    responses, ranking = row.get("response"), row.get("human_ranking")
    if not isinstance(responses, (list, tuple)) or len(responses) != 2:
        raise _RowError("'response' must be a list of two strings")
    for index, response in enumerate(responses):
        if not isinstance(response, str) or not response.strip():
            raise _RowError(f"response {index} is missing, empty or not a string")
    if (not isinstance(ranking, (list, tuple)) or len(ranking) != 2
            or any(isinstance(r, bool) or not isinstance(r, (int, float)) for r in ranking)):
        raise _RowError(f"'human_ranking' must be two numbers (lower is better), not {ranking!r}")
    preferred = "A" if ranking[0] < ranking[1] else "B" if ranking[1] < ranking[0] else "tie"
    leading = re.match(r"[A-Za-z]+", _raw_id(row) or "")
    word = leading.group(0) if leading else None
    image = row.get("image")
    return PreferencePair(
        id="", question=_text(row, "query"), response_a=responses[0], response_b=responses[1],
        preferred=preferred, images=[] if image in (None, "") else [resolve(image)],  # type: ignore[arg-type]
        category=None if word is None else _VLRB_CATEGORIES.get(word.lower(), word),
        meta={k: row[k] for k in ("rationale", "models", "judge", "query_source", "ground_truth") if k in row},
    )


def _mmrb(row: Mapping[str, Any], resolve: Resolve) -> PreferencePair:
    better = row.get("Better")
    if better not in ("Output1", "Output2"):
        raise _RowError(f"'Better' must be 'Output1' or 'Output2', not {better!r}")
    image = row.get("Image")
    known = {"ID", "id", "Text", "Image", "Output1", "Output2", "Better", "Category"}
    return PreferencePair(
        id="", question=_text(row, "Text"), response_a=_text(row, "Output1"), response_b=_text(row, "Output2"),
        preferred="A" if better == "Output1" else "B", images=[] if image in (None, "") else [resolve(image)],
        category=None if row.get("Category") is None else str(row["Category"]),
        meta={k: v for k, v in row.items() if k not in known and v is not None},
    )


_CONVERTERS: dict[str, Callable[[Mapping[str, Any], Resolve], PreferencePair]] = {
    "generic": _generic, "mm-rlhf": _mm_rlhf, "vl-rewardbench": _vl_rewardbench, "mmrb": _mmrb,
}

__all__ = ["FORMATS", "PreferenceFile", "PreferencePair", "RowProblem", "detect_format", "missing_media",
           "read_preferences"]
