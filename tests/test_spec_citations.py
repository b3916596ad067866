"""Every spec citation in the code resolves in docs/nvcf-api.md, the wire contract we ship.

Three forms are cited (the header of docs/nvcf-api.md describes them): `§N.N`, a heading of that
number; `§N item M`, the numbered item M of §N's list; and an operation code (`F3`, `D1`, `Q1`,
`X1` ...), the first cell of a row of one of the spec's endpoint tables. A range (`§2.3.1-2.3.3`,
`D1-D7`) resolves when both its ends do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "nvcf-api.md"
SOURCES = ("nvcf_lite", "tests", "scripts")
SUFFIXES = {".py", ".sql", ".sh", ".md"}

NUMBER = r"\d+(?:\.\d+)*"
SECTION = re.compile(rf"§\s?({NUMBER})(?:\s?[-\u2013]\s?({NUMBER}))?(?: item (\d+))?")
HEADING = re.compile(rf"^(#{{2,6}}) (?:({NUMBER})\.?\s)?", re.MULTILINE)
LIST_ITEM = re.compile(r"^(\d+)\. ", re.MULTILINE)
# A code is a capital and one or two digits standing alone (not inside `A-Z0-9` or `L40S`).
CODE = re.compile(r"(?<![\w-])([A-Z]\d{1,2})(?:\s?[-\u2013]\s?([A-Z]\d{1,2}))?(?![\w-])")
TABLE_CODE = re.compile(r"^\| \(?([A-Z]\d{1,2})\)?(?:[-\u2013]([A-Z]\d{1,2}))? \|", re.MULTILINE)
# A § after DESIGN cites the house-style page, which is not shipped (docs/ARCHITECTURE.md is).
OTHER_DOCS = ("DESIGN", "DESIGN.md")
# Tokens of a code's shape that name something else.
NOT_CODES = {"L4": "the L4 GPU", "L40": "the L40 GPU", "S3": "Amazon S3"}


def _span(first: str, last: str | None) -> list[str]:
    """`Z6`-`Z10` -> Z6, Z7, Z8, Z9, Z10; a lone code is itself."""
    if last is None or first[0] != last[0]:
        return [first] if last is None else [first, last]
    return [f"{first[0]}{n}" for n in range(int(first[1:]), int(last[1:]) + 1)]


def _sections(spec: str) -> dict[str, str]:
    """Each numbered heading -> its text, up to the next heading of its level or above."""
    marks = [(m.start(), m.group(2), len(m.group(1))) for m in HEADING.finditer(spec)]
    found: dict[str, str] = {}
    for i, (start, number, level) in enumerate(marks):
        end = next((s for s, _, lv in marks[i + 1 :] if lv <= level), len(spec))
        if number is not None:
            found[number] = spec[start:end]
    return found


def _codes(spec: str) -> set[str]:
    return {code for m in TABLE_CODE.finditer(spec) for code in _span(m.group(1), m.group(2))}


def _cited_files() -> Iterator[Path]:
    yield from (ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md")
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                yield path


def _citations(pattern: re.Pattern[str]) -> Iterator[tuple[str, str, re.Match[str]]]:
    """(file:line, the text before the match, the match) for each match in the cited files."""
    for path in _cited_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in pattern.finditer(line):
                yield f"{path.relative_to(ROOT)}:{n}", line[: m.start()], m


@pytest.fixture(scope="module")
def spec() -> str:
    return SPEC.read_text(encoding="utf-8")


def test_the_spec_defines_what_the_citations_rely_on(spec: str) -> None:
    sections, codes = _sections(spec), _codes(spec)
    assert {"2.3.4", "5.1", "9"} <= set(sections)
    assert {"F1", "F9", "D7", "I5", "Q3", "A5", "G2", "Z10", "S1", "R2", "X1", "L2"} <= codes
    assert LIST_ITEM.search(sections["9"]) and not NOT_CODES.keys() & codes


def test_every_section_citation_resolves(spec: str) -> None:
    sections = _sections(spec)
    unresolved = []
    for where, before, m in _citations(SECTION):
        first, last, item = m.groups()
        if before.rstrip().endswith(OTHER_DOCS):
            unresolved.append(f"{where}: {m.group(0)} of a document not in the repository")
            continue
        missing = [n for n in (first, last) if n is not None and n not in sections]
        if not missing and item is not None:
            items = set(LIST_ITEM.findall(sections[first]))
            missing = [] if item in items else [f"{first} item {item}"]
        unresolved += [f"{where}: §{n}" for n in missing]
    assert not unresolved, "citations with no such section in docs/nvcf-api.md:\n" + "\n".join(
        unresolved
    )


def test_every_operation_code_resolves(spec: str) -> None:
    codes = _codes(spec)
    families = {code[0] for code in codes}
    unresolved = []
    for where, _, m in _citations(CODE):
        for code in (m.group(1), m.group(2)):
            if code and code[0] in families and code not in codes and code not in NOT_CODES:
                unresolved.append(f"{where}: {code}")
    assert not unresolved, "operation codes not in docs/nvcf-api.md's tables:\n" + "\n".join(
        unresolved
    )
