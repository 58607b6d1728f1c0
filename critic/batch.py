"""Resumable JSONL batch judging: ``items.jsonl`` in, ``results.jsonl`` out, one JSON object per item.

Input rows use the CLI's flag names: ``id``, ``image`` (a path) or ``images`` (a list) or ``video``, ``question``,
``response_a`` + ``response_b`` (pairwise) or ``response`` (pointwise), optional ``criteria``, ``reference``,
``image_a`` + ``image_b`` (text-to-image).  Relative media paths are resolved against the input file's folder.

Guarantees:

* results are appended and flushed item by item; a rerun of the same command skips ids already in the output, so a
  run killed at any point (even ``kill -9`` mid-write) and run again ends with every id exactly once;
* items that failed because the engine failed (a server down, a timeout) are judged again by a rerun, their old
  error records removed; items that failed for their own reasons (bad input, unreadable media) are not;
* a bad row (invalid JSON, missing fields, unreadable image) gets an error record and the batch goes on;
* a progress bar on stderr, and a :class:`BatchSummary` at the end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from critic.core import Judge
from critic.types import JudgeError, JudgeItem, JudgeResult

_ITEM_FIELDS = {"id", "question", "response_a", "response_b", "response", "images", "image", "video", "image_a",
                "image_b", "criteria", "reference"}


@dataclass
class BatchSummary:
    """Counts of one batch run."""

    total: int = 0
    """Rows in the input file."""
    done: int = 0
    """Results written by this run (valid and error records)."""
    skipped: int = 0
    """Ids already present in the output from an earlier run."""
    errors: int = 0
    """Error records written by this run."""
    parse_failures: int = 0
    """Error records whose cause was an unparseable verdict (0 under constrained decoding)."""
    duplicates: list[str] = field(default_factory=list)
    """Ids that appeared more than once in the input; only the first occurrence is judged."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchRow:
    """One row to judge: an item, or the input error that stands in for it (then ``item`` is None)."""

    line: int
    item_id: str
    item: JudgeItem | None
    error: JudgeError | None
    mode: str


def item_from_row(row: dict[str, Any], base_dir: Path | None = None) -> JudgeItem:
    """Build a :class:`JudgeItem` from a JSON object; raises ``ValueError`` naming the problem."""
    if not isinstance(row, dict):
        raise ValueError("row is not a JSON object")
    unknown = sorted(set(row) - _ITEM_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(_ITEM_FIELDS))}")
    if "image" in row and "images" in row:
        raise ValueError("give either 'image' or 'images', not both")
    images = row.get("images", [row["image"]] if row.get("image") is not None else [])
    if not isinstance(images, list):
        raise ValueError("'images' must be a list")

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, str) and base_dir is not None and not value.startswith("data:"):
            path = Path(value)
            return str(path if path.is_absolute() else base_dir / path)
        return value

    for name in ("question", "response_a", "response_b", "response", "criteria", "reference"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise ValueError(f"'{name}' must be a string")
    return JudgeItem(
        id=None if row.get("id") is None else str(row["id"]),
        question=row.get("question"),  # type: ignore[arg-type]  # validated by the judge
        response_a=row.get("response_a"),
        response_b=row.get("response_b"),
        response=row.get("response"),
        images=resolve(images),
        video=resolve(row.get("video")),
        image_a=resolve(row.get("image_a")),
        image_b=resolve(row.get("image_b")),
        criteria=row.get("criteria"),
        reference=row.get("reference"),
    )


def _guess_mode(row: Any) -> str:
    if isinstance(row, dict) and any(k in row for k in ("response_a", "response_b", "image_a", "image_b")):
        return "pairwise"
    return "pointwise"


def jsonl_rows(path: Path) -> Iterator[tuple[int, str, Any, str | None]]:
    """``(line number, id, parsed row, error)`` for every non-blank line of a JSONL input: the id is the row's
    ``id`` or ``line-N``; invalid JSON gives ``None`` and an error naming the line (shared by the resumable CLIs)."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"line-{number}", None, f"line {number}: invalid JSON ({exc.msg})"
                continue
            has_id = isinstance(data, dict) and data.get("id") is not None
            yield number, str(data["id"]) if has_id else f"line-{number}", data, None


def read_rows(path: Path) -> Iterator[BatchRow]:
    """Every line of the input as an item or an input error.  Rows without an id get ``line-N``."""
    for number, item_id, data, error in jsonl_rows(path):
        if error is not None:
            yield BatchRow(number, item_id, None, JudgeError("input", error), "pointwise")
            continue
        try:
            item = item_from_row(data, path.parent)
            item.id = item_id
            yield BatchRow(number, item_id, item, None, item.mode)
        except ValueError as exc:
            yield BatchRow(number, item_id, None, JudgeError("input", f"line {number}: {exc}"), _guess_mode(data))


#: Error kinds that a rerun retries: the item itself was fine, the engine failed (server down, timeout).
RETRY_KINDS = frozenset({"engine"})


def completed_ids(output: Path, retry_kinds: frozenset[str] = RETRY_KINDS) -> set[str]:
    """Ids already finished in ``output``.

    A torn last line (a run killed mid-write) is cut off.  Records whose error kind is in ``retry_kinds`` are
    removed from the file (rewritten atomically), so that a rerun judges those items again and every id still
    appears exactly once.
    """
    if not output.exists():
        return set()
    with open(output, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            data = data[:keep]
    ids: set[str] = set()
    kept: list[str] = []
    dropped = 0
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            item_id = str(record["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            kept.append(line)
            continue
        error = record.get("error") or {}
        if isinstance(error, dict) and error.get("kind") in retry_kinds:
            dropped += 1
            continue
        ids.add(item_id)
        kept.append(line)
    if dropped:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, output)
    return ids


RowT = TypeVar("RowT")


def pending_rows(rows: Iterable[RowT], output_path: Path, summary: BatchSummary) -> list[RowT]:
    """The rows (anything with an ``item_id``) still to do: ids already in ``output_path`` are skipped and repeated
    ids dropped, both counted in ``summary`` (shared by every resumable command)."""
    done = completed_ids(output_path)
    seen: set[str] = set()
    pending: list[RowT] = []
    for row in rows:
        summary.total += 1
        item_id = row.item_id  # type: ignore[attr-defined]
        if item_id in seen:
            summary.duplicates.append(item_id)
            continue
        seen.add(item_id)
        if item_id in done:
            summary.skipped += 1
        else:
            pending.append(row)
    return pending


def run_batch(
    judge: Judge, input_path: str | Path, output_path: str | Path, *, chunk_size: int = 16, progress: bool = True
) -> BatchSummary:
    """Judge every row of ``input_path`` not yet in ``output_path``, appending results as they come."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {str(input_path)!r} does not exist")
    summary = BatchSummary()
    pending = pending_rows(read_rows(input_path), output_path, summary)
    written = judge_rows(judge, pending, output_path, chunk_size=chunk_size, progress=progress)
    summary.done, summary.errors, summary.parse_failures = written.done, written.errors, written.parse_failures
    return summary


def judge_rows(
    judge: Judge, rows: Sequence[BatchRow], output_path: str | Path, *, chunk_size: int = 16, progress: bool = True,
    desc: str = "judging",
) -> BatchSummary:
    """Judge ``rows`` chunk by chunk, appending one record per row to ``output_path``.

    Records are flushed one by one and the file is fsynced after every chunk, so a killed run loses at most the
    chunk in flight; :func:`completed_ids` then tells a rerun what is left.  Used by :func:`run_batch` and by
    :mod:`critic.evaluate`.
    """
    output_path = Path(output_path)
    summary = BatchSummary(total=len(rows))
    if output_path.parent and not output_path.parent.exists():
        output_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(rows), desc=desc, unit="item", file=sys.stderr, disable=not progress)
    with open(output_path, "a", encoding="utf-8") as out:
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            to_judge = [r for r in chunk if r.item is not None]
            try:
                judged = iter(judge.judge([r.item for r in to_judge]))  # type: ignore[misc]
            except Exception as exc:  # an engine crash fails this chunk's items, not the run
                failure = JudgeError("engine", f"{type(exc).__name__}: {exc}")
                judged = iter(JudgeResult.failure(r.item_id, r.mode, failure) for r in to_judge)  # type: ignore[arg-type]
            for row in chunk:
                result = next(judged) if row.item is not None else JudgeResult.failure(row.item_id, row.mode, row.error)  # type: ignore[arg-type]
                result.id = row.item_id
                out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                out.flush()
                summary.done += 1
                if result.error is not None:
                    summary.errors += 1
                    summary.parse_failures += result.error.kind == "parse"
            os.fsync(out.fileno())
            bar.update(len(chunk))
    bar.close()
    return summary
