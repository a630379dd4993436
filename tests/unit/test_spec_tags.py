"""Spec tags: every `[MQTT-x.y.z-n]` in broker/ and tests/ is well formed, names a chapter and
section the MQTT 3.1.1 / 5.0 specifications have, and a tag in broker/ sits at the code that
enforces its rule (a comment on that line, or the message it raises), not only in a docstring
far from it. A reference to a rule the spec gives no number is written as a section instead,
"(3.1.1 section 2.2.1)", which these checks leave alone."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Anything that looks like a tag, well formed or not: "[MQTT-...]", "[MQTT ...]", and a bare
# "MQTT-<digit>..." outside brackets.
_LOOKS_LIKE_A_TAG = re.compile(r"\[MQTT\b[^\]\n]*\]|(?<!\[)\bMQTT-\d[^\s\]),;:'\"]*")
_WELL_FORMED = re.compile(r"\[MQTT-(\d+)\.(\d+)\.(\d+)-(\d+)\]")

# Chapter -> highest section with normative statements, in 3.1.1 and 5.0 together: 1.5.x data
# representation, 2.x packet format, 3.1 CONNECT to 3.15 AUTH, 4.1 to 4.13 operational
# behaviour, 6.0 WebSocket. Chapter 5 (security) and 7 (conformance) have no numbered ones.
_SECTIONS = {1: 5, 2: 3, 3: 15, 4: 13, 6: 0}
_MAX_SUBSECTION = 7
_MAX_STATEMENT = 40


class Tag(NamedTuple):
    text: str
    path: str
    line: int
    in_docstring: bool


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def tags_in(source: str, path: str = "<source>") -> list[Tag]:
    """Every tag-like text in the comments and strings of `source`, and whether it is in a
    docstring."""
    docstrings = _docstring_lines(ast.parse(source))
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.STRING):
            continue
        for offset, text in enumerate(token.string.splitlines()):
            line = token.start[0] + offset
            in_docstring = token.type == tokenize.STRING and line in docstrings
            found.extend(Tag(m.group(), path, line, in_docstring)
                         for m in _LOOKS_LIKE_A_TAG.finditer(text))
    return found


def malformed(tags: list[Tag]) -> list[Tag]:
    return [t for t in tags if not _WELL_FORMED.fullmatch(t.text)]


def unknown_section(tags: list[Tag]) -> list[Tag]:
    bad = []
    for tag in tags:
        match = _WELL_FORMED.fullmatch(tag.text)
        if match is None:
            continue
        chapter, section, subsection, statement = map(int, match.groups())
        if (chapter not in _SECTIONS or not (chapter == 6 or 1 <= section <= _SECTIONS[chapter])
                or (chapter == 6 and (section, subsection) != (0, 0))
                or subsection > _MAX_SUBSECTION or not 1 <= statement <= _MAX_STATEMENT):
            bad.append(tag)
    return bad


def docstring_only(tags: list[Tag]) -> list[Tag]:
    at_code = {t.text for t in tags if not t.in_docstring}
    return [t for t in tags if t.text not in at_code]


def _scan(folder: str) -> list[Tag]:
    tags = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if "node_modules" in path.parts or path == Path(__file__).resolve():
            continue  # this file plants bad tags on purpose (PLANTED below)
        tags.extend(tags_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))))
    return tags


@pytest.fixture(scope="module")
def broker_tags() -> list[Tag]:
    return _scan("broker")


@pytest.fixture(scope="module")
def all_tags(broker_tags: list[Tag]) -> list[Tag]:
    return broker_tags + _scan("tests")


def _where(tags: list[Tag]) -> list[str]:
    return [f"{t.path}:{t.line}: {t.text}" for t in tags]


def test_the_scan_finds_the_tags(broker_tags: list[Tag], all_tags: list[Tag]):
    # A broken pattern must not pass the checks below by finding nothing.
    assert len(broker_tags) > 50
    assert len(all_tags) > 2 * len(broker_tags)


def test_every_tag_is_well_formed(all_tags: list[Tag]):
    assert _where(malformed(all_tags)) == []


def test_every_tag_names_a_chapter_and_section_the_spec_has(all_tags: list[Tag]):
    assert _where(unknown_section(all_tags)) == []


def test_every_tag_in_broker_sits_at_the_code_that_enforces_it(broker_tags: list[Tag]):
    assert _where(docstring_only(broker_tags)) == []


PLANTED = '''"""A module that cites [MQTT-3.3.1-6] and [MQTT-4.7.3-1] in its docstring."""


def check(topic):
    """Also [MQTT-2.2-1] and [MQTT-3-8.3-4]."""
    if not topic:  # [MQTT-4.7.3-1]
        raise ValueError("empty [MQTT-9.1.1-1] [MQTT-3.99.1-1] [MQTT-6.0.0-1] [MQTT 3.1]")
    return "MQTT-3.3.2-2"
'''


def test_the_checks_catch_what_they_are_for():
    tags = tags_in(PLANTED)
    assert [t.text for t in malformed(tags)] == ["[MQTT-2.2-1]", "[MQTT-3-8.3-4]",
                                                 "[MQTT 3.1]", "MQTT-3.3.2-2"]
    assert [t.text for t in unknown_section(tags)] == ["[MQTT-9.1.1-1]", "[MQTT-3.99.1-1]"]
    assert [t.text for t in docstring_only(tags)] == ["[MQTT-3.3.1-6]", "[MQTT-2.2-1]",
                                                      "[MQTT-3-8.3-4]"]
