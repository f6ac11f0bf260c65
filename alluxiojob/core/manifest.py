"""Job sources that replace a listing: index files, S3 Inventory rows, brace templates.

Pure parsing, no I/O (``coordinator/sources.py`` reads the bytes). Each source has
positions in a total order, so a job resumes after its checkpoint and splits into
contiguous ranges (``split_ranges``):

* an index file: one path or URI a line; a position is a 1-based line number;
* an S3 Inventory: ``manifest.json`` names CSV (or CSV.gz) files; a position is
  (file number, row number);
* a brace template: ``s3://b/shard-{000000..099999}.tar``; a position is the 0-based
  index of a name, which is computed from the index alone (never a list in memory).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from alluxiojob.core.errors import InvalidArgument


class ManifestError(InvalidArgument):
    """A manifest, index file or template that cannot be used; the message names where."""


# ====================================================================== templates
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)(?:\.\.(\d+))?\}")
MAX_TEMPLATE_NAMES = 10**12


@dataclass(frozen=True)
class BraceRange:
    start: int
    step: int
    count: int
    width: int  # zero padding, 0 for none

    def value(self, i: int) -> str:
        return str(self.start + i * self.step).zfill(self.width)


@dataclass(frozen=True)
class Template:
    """``a{00..99}b{0..9}``: literal pieces around ranges; the last range turns fastest."""

    text: str
    pieces: tuple[str, ...]  # one more than ranges
    ranges: tuple[BraceRange, ...]

    @property
    def total(self) -> int:
        total = 1
        for r in self.ranges:
            total *= r.count
        return total

    def name(self, index: int) -> str:
        if not 0 <= index < self.total:
            raise IndexError(index)
        digits: list[str] = []
        for r in reversed(self.ranges):
            index, i = divmod(index, r.count)
            digits.append(r.value(i))
        out = [self.pieces[0]]
        for piece, digit in zip(self.pieces[1:], reversed(digits), strict=True):
            out += (digit, piece)
        return "".join(out)

    def names(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, str]]:
        """(index, name) for ``start <= index < stop``, one at a time."""
        stop = self.total if stop is None else min(stop, self.total)
        for index in range(max(start, 0), stop):
            yield index, self.name(index)


def parse_template(text: str) -> Template:
    """Parse ``text``; raises ``ManifestError`` naming what is wrong."""
    pieces: list[str] = []
    ranges: list[BraceRange] = []
    last = 0
    for match in _RANGE.finditer(text):
        pieces.append(text[last:match.start()])
        first, end, step_text = match.group(1), match.group(2), match.group(3)
        start, stop = int(first), int(end)
        step = int(step_text) if step_text else 1
        if step <= 0:
            raise ManifestError(f"template {text!r}: the step in {match.group(0)} must be "
                                "positive")
        if stop < start:
            raise ManifestError(f"template {text!r}: {match.group(0)} counts down; give "
                                "{LOW..HIGH}")
        padded = any(len(t) > 1 and t.startswith("0") for t in (first, end))
        width = max(len(first), len(end)) if padded else 0
        ranges.append(BraceRange(start, step, (stop - start) // step + 1, width))
        last = match.end()
    pieces.append(text[last:])
    if not ranges:
        raise ManifestError(f"template {text!r} has no {{START..END}} range; use --path "
                            "for a single path")
    for piece in pieces:
        if "{" in piece or "}" in piece:
            raise ManifestError(f"template {text!r}: only numeric ranges {{START..END}} or "
                                "{START..END..STEP} may stand in braces")
    if any(part == ".." for piece in pieces for part in piece.split("/")):
        raise ManifestError(f"template {text!r}: '..' is not allowed in a template")
    template = Template(text, tuple(pieces), tuple(ranges))
    if template.total > MAX_TEMPLATE_NAMES:
        raise ManifestError(f"template {text!r} names {template.total} files; at most "
                            f"{MAX_TEMPLATE_NAMES} are allowed")
    return template


# ====================================================================== index files
def parse_index_line(raw: bytes, line: int) -> str | None:
    """The path or URI on one line of an index file, or None for a blank or # line.

    Whether a relative path is allowed is decided where the path is resolved.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"line {line}: not valid UTF-8") from None
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ManifestError(f"line {line}: holds a control character")
    if "://" in text and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.", text):
        raise ManifestError(f"line {line}: {text[:200]!r} is not a path or a URI")
    return text


# ====================================================================== S3 Inventory
INVENTORY_FORMATS = ("CSV",)


@dataclass(frozen=True)
class InventoryManifest:
    columns: tuple[str, ...]  # fileSchema, e.g. ("Bucket", "Key", "Size", ...)
    files: tuple[str, ...]  # the data files' keys, in the destination bucket
    destination_bucket: str  # "" when the manifest does not say


@dataclass(frozen=True)
class InventoryRow:
    uri: str
    length: int
    mtime_ns: int
    version: str  # the ETag, quoted as a HEAD answers it


def is_inventory_manifest(uri: str) -> bool:
    return uri.rstrip("/").rsplit("/", 1)[-1] == "manifest.json"


def parse_inventory_manifest(data: bytes) -> InventoryManifest:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"the inventory manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("the inventory manifest is not a JSON object")
    file_format = str(doc.get("fileFormat", "")).upper()
    if file_format not in INVENTORY_FORMATS:
        raise ManifestError(f"inventory fileFormat {doc.get('fileFormat')!r} is not "
                            f"supported; expected one of {', '.join(INVENTORY_FORMATS)}")
    columns = tuple(c.strip() for c in str(doc.get("fileSchema", "")).split(",") if c.strip())
    for needed in ("Bucket", "Key"):
        if needed not in columns:
            raise ManifestError(f"inventory fileSchema {doc.get('fileSchema')!r} has no "
                                f"{needed} column")
    files = doc.get("files")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("key"), str) and f["key"] for f in files):
        raise ManifestError("inventory manifest: files must be a list of {\"key\": ...}")
    destination = str(doc.get("destinationBucket", ""))
    return InventoryManifest(columns, tuple(f["key"] for f in files),
                             destination.rsplit(":", 1)[-1])


def parse_inventory_row(fields: list[str], columns: tuple[str, ...], scheme: str,
                        where: str) -> InventoryRow | None:
    """One CSV row; None for a row to skip (a delete marker, an older version)."""
    if len(fields) != len(columns):
        raise ManifestError(f"{where}: {len(fields)} fields where the fileSchema has "
                            f"{len(columns)}")
    row = dict(zip(columns, fields, strict=True))
    if row.get("IsDeleteMarker", "").lower() == "true" or row.get("IsLatest",
                                                                  "true").lower() == "false":
        return None
    bucket, key = row["Bucket"], unquote_plus(row["Key"])
    if not bucket or not key:
        raise ManifestError(f"{where}: an empty bucket or key")
    if key.endswith("/"):
        return None  # a folder marker
    try:
        length = int(row.get("Size") or 0)
    except ValueError:
        raise ManifestError(f"{where}: Size {row['Size']!r} is not a number") from None
    mtime_ns = 0
    if row.get("LastModifiedDate"):
        try:
            stamp = datetime.fromisoformat(row["LastModifiedDate"].replace("Z", "+00:00"))
        except ValueError:
            raise ManifestError(f"{where}: LastModifiedDate {row['LastModifiedDate']!r} is "
                                "not a date") from None
        mtime_ns = int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000
    etag = row.get("ETag", "").strip('"')
    return InventoryRow(f"{scheme}://{bucket}/{key}", length, mtime_ns,
                        f'"{etag}"' if etag else "")


# ====================================================================== shards
def split_ranges(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into at most ``parts`` contiguous, non-empty ranges whose
    sizes differ by at most one (positions: template indices or index-file lines)."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    total = max(stop - start, 0)
    parts = min(parts, total)
    out: list[tuple[int, int]] = []
    low = start
    for number in range(parts):
        size = total // parts + (1 if number < total % parts else 0)
        out.append((low, low + size))
        low += size
    return out


Parts = tuple[str, ...]


@dataclass(frozen=True)
class SourceShard:
    """One shard of a manifest or template job: files after ``after`` up to ``until``
    (positions in the source's order, as a walk's ``parts``), and how many."""

    after: Parts
    until: Parts
    files: int
    bytes: int


def template_parts(index: int) -> Parts:
    """A template name's position (its index, so that text order is number order)."""
    return (f"{index:015d}",)


def template_shards(total: int, parts: int) -> list[SourceShard]:
    """A template of ``total`` names cut into at most ``parts`` shards by index."""
    ranges = split_ranges(0, total, max(1, parts))
    return [SourceShard(template_parts(low - 1) if low else (),
                        template_parts(high - 1) if high < total else (), high - low, 0)
            for low, high in ranges]


class Cuts:
    """Places to cut a stream of entries into shards, found in one pass, in bounded memory.

    ``add`` is called for every file the source names, in order. Every ``every``-th
    entry's position is kept with the running counts; when more than ``keep`` are kept,
    every other one is dropped and ``every`` doubles. ``shards`` then cuts at kept
    positions nearest to equal counts: each shard's file and byte counts are exact, and
    its size is within ``every`` of equal.
    """

    def __init__(self, keep: int = 4096) -> None:
        self.keep = max(2, keep)
        self.every = 1
        self.files = 0
        self.bytes = 0
        self.kept: list[tuple[Parts, int, int]] = []  # (position, files, bytes) so far

    def add(self, parts: Parts, length: int) -> None:
        self.files += 1
        self.bytes += length
        if self.files % self.every == 0:
            self.kept.append((parts, self.files, self.bytes))
            if len(self.kept) > self.keep:
                self.kept = self.kept[1::2]
                self.every *= 2

    def shards(self, parts: int) -> list[SourceShard]:
        """At most ``parts`` shards that cover every entry added, in order."""
        by_count = {files: (position, nbytes) for position, files, nbytes in self.kept}
        out: list[SourceShard] = []
        after: Parts = ()
        files_before = bytes_before = 0
        for _, high in split_ranges(0, self.files, max(1, parts))[:-1]:
            cut = high - high % self.every
            if cut <= files_before or cut not in by_count:
                continue
            position, nbytes = by_count[cut]
            out.append(SourceShard(after, position, cut - files_before, nbytes - bytes_before))
            after, files_before, bytes_before = position, cut, nbytes
        if self.files > files_before:
            out.append(SourceShard(after, (), self.files - files_before,
                                   self.bytes - bytes_before))
        return out
