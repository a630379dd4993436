"""A few planted rule breaks fail the checks `make test` runs (the whole list:
tests/support/rule_breaks.py), and the untouched copy passes them, so the failures mean
something."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.rule_breaks import BREAKS, caught_by, check, copy_repo

pytestmark = pytest.mark.slow  # each runs lint-imports and pytest on a copy of the repo

SAMPLE = ["passwords.py imports socket", "router.py imports threading",
          "a new core helper imports gevent.queue and session.py imports it",
          "probe.py imports the composition root",
          "a cycle inside the I/O layer (transport imports websocket)",
          "a new module outside every folder"]


def test_the_untouched_copy_passes_every_check(tmp_path: Path):
    assert caught_by(copy_repo(tmp_path)) == []


@pytest.mark.parametrize("name", SAMPLE)
def test_a_planted_rule_break_fails_the_checks(name: str, tmp_path: Path):
    rule = next(rule for rule in BREAKS if rule.name == name)
    assert check(rule, tmp_path) != [], f"{name}: nothing caught it"
