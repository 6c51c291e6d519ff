"""The file adapter's pure half: records as bytes and back, and fields as columns.

* :func:`frames` cuts a binary stream into records with their byte offsets and line
  numbers, one record at a time (constant memory). A CSV record may span lines: a
  quoted value can hold a newline, so a record ends at a newline outside quotes
  (RFC 4180 doubles quotes inside quoted values, so an even count of ``"`` means the
  record is complete). JSON Lines: one object per line. Blank lines are skipped.
* :func:`decode` / :func:`encode` turn one record's bytes into ``column -> value`` and
  back. CSV holds text only: an empty value reads as null, null writes as empty,
  booleans as ``true``/``false``, other values as ``str``; typed fields come back
  through transforms. JSON Lines keeps JSON's types.
* The entity's mapping both ways (``fields`` renames, transforms, name split,
  constants, the columns a write sets) is :class:`~adapters.mapping.RecordMapping`.

Errors never quote a value: :class:`BadRecord` says what is wrong with a record.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

Format = Literal["csv", "jsonl"]


class BadRecord(ValueError):
    """A record that cannot be read as one (value-free reason)."""


@dataclass(frozen=True)
class Frame:
    """One record's bytes where they sit in the file."""

    offset: int
    length: int  # bytes including the line terminator
    line: int  # 1-based line number of the record's first line
    raw: bytes

    @property
    def digest(self) -> str:
        return digest(self.raw)


def digest(raw: bytes) -> str:
    """The record's version token: its bytes, whatever line terminator follows them."""
    return hashlib.sha256(raw.rstrip(b"\r\n")).hexdigest()[:32]


def frames(stream: BinaryIO, fmt: Format, offset: int = 0, line: int = 1) -> Iterator[Frame]:
    """Every record from ``offset`` (at ``line``) to the end of ``stream``."""
    stream.seek(offset)
    while True:
        start, first = offset, line
        chunk = stream.readline()
        if not chunk:
            return
        offset += len(chunk)
        line += 1
        if fmt == "csv":
            while chunk.count(b'"') % 2 and chunk.endswith(b"\n"):
                more = stream.readline()
                if not more:
                    break  # an unterminated quote at the end: decode reports it
                chunk += more
                offset += len(more)
                line += 1
        if not chunk.strip():
            continue  # a blank line holds no record (CSV or JSON Lines)
        yield Frame(start, len(chunk), first, chunk)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise BadRecord("not UTF-8") from None


def header(raw: bytes) -> list[str]:
    """A CSV file's first record: its column names."""
    names = _csv_values(raw)
    if len(set(names)) != len(names):
        raise BadRecord("the header names a column twice")
    return names


def _csv_values(raw: bytes) -> list[str]:
    text = _text(raw)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        raise BadRecord(f"not CSV ({e})") from None
    if len(rows) != 1:
        raise BadRecord("not one CSV record")
    return rows[0]


def decode(fmt: Format, columns: list[str] | None, raw: bytes) -> dict[str, Any]:
    """One record's ``column -> value``."""
    if fmt == "csv":
        assert columns is not None
        values = _csv_values(raw)
        if len(values) != len(columns):
            raise BadRecord(f"has {len(values)} values, the header has {len(columns)}")
        return {c: (v if v != "" else None) for c, v in zip(columns, values, strict=True)}
    try:
        record = json.loads(_text(raw))
    except json.JSONDecodeError as e:
        raise BadRecord(f"not JSON (column {e.colno}: {e.msg})") from None
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    return record


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode(fmt: Format, columns: list[str] | None, record: dict[str, Any]) -> bytes:
    """One record as bytes ending in ``\\n`` (CSV: in ``columns`` order)."""
    if fmt == "csv":
        assert columns is not None
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([_csv_text(record.get(c)) for c in columns])
        return out.getvalue().encode("utf-8")
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    return (text + "\n").encode("utf-8")


def encode_header(columns: list[str]) -> bytes:
    return encode("csv", columns, {c: c for c in columns})


def is_true(value: Any) -> bool:
    """A flag as CSV or JSON holds it (``true``/``1``/``yes``; null is false)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "t", "y")
    return bool(value)
