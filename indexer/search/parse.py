"""Parse combined search queries such as ``beach + 2:sunset - people`` into weighted terms.

Syntax:
  * Terms are joined by ``+`` (add) or ``-`` (subtract, the weight becomes negative). An
    operator is a ``+``/``-`` at the very start of the query or one with whitespace on both
    sides, so hyphenated words (``t-shirt``, ``x-ray``) and ``beach -people`` stay text.
  * ``W:term`` gives a term weight ``W`` (``2:dog``, ``0.5:red car``); default 1. A colon
    followed by a digit (``10:30``) is not a weight.
  * ``img:/path/to/file.jpg`` and ``id:123`` are image terms (search by example).
  * ``like:ID`` / ``like:/path.jpg`` and ``unlike:...`` are relevance-feedback marks on
    indexed photos (``- like:X`` is ``unlike:X``); see :mod:`indexer.search.feedback`.
  * ``concept:NAME`` is a personal concept's tag filter (the photos it applies to).
  * ``text:word`` / ``text:"invoice 2023"`` keeps photos whose recognised text (OCR) contains
    the phrase, matched case- and space-insensitively; ``- text:X`` drops those that do. Alone
    it lists the matching photos; with other terms it filters their candidates.
  * Double quotes protect a term from splitting: ``img:"/photos/2019 - Italy/a.jpg"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TermKind = Literal["text", "image", "like", "unlike", "concept", "ocr"]

_OPERATOR = re.compile(r"^\s*[+-]|(?<=\s)[+-](?=\s|$)")
_QUOTED = re.compile(r'"[^"]*"')
_WEIGHT = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*:(?!\d)\s*(.*)$", re.DOTALL)
_IMAGE = re.compile(r"^img:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_COMMA_ITEMS = re.compile(r'(?:"[^"]*"|[^,])+')  # commas inside quotes do not split
_ID = re.compile(r"^id:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_MARK = re.compile(r"^(like|unlike):\s*(.*)$", re.IGNORECASE | re.DOTALL)
_CONCEPT = re.compile(r"^concept:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_OCR = re.compile(r"^text:\s*(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class QueryTerm:
    """One weighted query term: text to encode, an image (``value`` a path or ``id:N``), a
    feedback mark (``like``/``unlike``, same values), a concept filter (its name) or a
    recognised-text filter (``ocr``: the phrase; weight -1 excludes)."""

    weight: float
    kind: TermKind
    value: str


def parse_query(text: str) -> list[QueryTerm]:
    """Split a query into weighted terms; raises ValueError on an empty query or term."""
    if not text or not text.strip():
        raise ValueError("empty query: type what to search for")
    text = text.strip()
    quoted = [m.span() for m in _QUOTED.finditer(text)]
    operators = [
        m
        for m in _OPERATOR.finditer(text)
        if not any(start <= m.start() < end for start, end in quoted)
    ]
    terms = []
    sign, pos = 1.0, 0
    for op in operators:
        chunk = text[pos : op.start()]
        if terms or chunk.strip():  # text before a leading operator is nothing
            terms.append(_parse_term(chunk, sign, text))
        sign = -1.0 if op.group().strip() == "-" else 1.0
        pos = op.end()
    terms.append(_parse_term(text[pos:], sign, text))
    return terms


def merge_terms(positive_text: str | None, without: str | None) -> list[QueryTerm]:
    """Terms for the UI's query box plus its "without" box (comma-separated negatives).

    Each "without" item becomes a negative term (weight -1, or minus its own ``W:``).
    Raises ValueError when both are empty.
    """
    terms = parse_query(positive_text) if positive_text and positive_text.strip() else []
    for item in _COMMA_ITEMS.findall(without or ""):
        if item.strip():
            term = _parse_term(item, 1.0, without or "")
            terms.append(QueryTerm(-abs(term.weight), term.kind, term.value))
    if not terms:
        raise ValueError("empty query: type what to search for")
    return terms


def _parse_term(chunk: str, sign: float, query: str) -> QueryTerm:
    body = chunk.strip()
    if not body:
        raise ValueError(
            f"empty term in query {query!r} (two operators in a row, or a trailing one?)"
        )
    weight = 1.0
    if m := _WEIGHT.match(body):
        weight, body = float(m.group(1)), m.group(2).strip()
        if weight == 0:
            raise ValueError(f"term weight must not be 0 in {chunk.strip()!r}")
        if not body:
            raise ValueError(f"weight without a term in {chunk.strip()!r}")
    weight *= sign
    if m := _MARK.match(body):
        target = _unquote(m.group(2).strip())
        if not target:
            raise ValueError(f"{m.group(1).lower()}: without a photo id or path in {body!r}")
        kind = m.group(1).lower()
        if weight < 0:
            kind = "unlike" if kind == "like" else "like"
        if target.lower().startswith("id:"):
            target = target[3:].strip()
        value = f"id:{int(target)}" if target.isdigit() else target
        return QueryTerm(abs(weight), kind, value)  # type: ignore[arg-type]
    if m := _CONCEPT.match(body):
        name = " ".join(_unquote(m.group(1).strip()).split())
        if not name:
            raise ValueError(f"concept: without a name in {body!r}")
        return QueryTerm(1.0, "concept", name)
    if m := _OCR.match(body):
        phrase = " ".join(_unquote(m.group(1).strip()).split())
        if not any(ch.isalnum() for ch in phrase):
            raise ValueError(f"text: without letters or digits to look for in {body!r}")
        return QueryTerm(-1.0 if weight < 0 else 1.0, "ocr", phrase)
    if m := _IMAGE.match(body):
        path = _unquote(m.group(1).strip())
        if not path:
            raise ValueError(f"image term without a path in {chunk.strip()!r}")
        return QueryTerm(weight, "image", path)
    if m := _ID.match(body):
        number = _unquote(m.group(1).strip())
        if not number.isdigit():
            raise ValueError(f"image id must be a number in {chunk.strip()!r}")
        return QueryTerm(weight, "image", f"id:{int(number)}")
    value = " ".join(_unquote(body).split())
    if not value:
        raise ValueError(f"empty term in query {query!r}")
    return QueryTerm(weight, "text", value)


def _unquote(s: str) -> str:
    return s[1:-1].strip() if len(s) >= 2 and s[0] == s[-1] == '"' else s
