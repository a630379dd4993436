"""The README keeps up with the code: every config key with its default, every command."""

from __future__ import annotations

import re
from pathlib import Path

from broker.cli import build_parser
from broker.config.description import markdown_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_config_table_is_the_one_the_code_generates():
    match = re.search(r"<!-- config-keys:start -->\n(.*?)<!-- config-keys:end -->", README,
                      re.S)
    assert match, "README lost its config-keys markers"
    assert match.group(1) == markdown_table(), (
        "README's configuration table is stale; regenerate it with: .venv/bin/python -c "
        "'from broker.config.description import markdown_table; print(markdown_table(), end=\"\")'")


def test_readme_names_every_subcommand():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in commands:
        if name != "run":
            assert f"`greenfly {name}" in README, f"README does not document greenfly {name}"


REPO = Path(__file__).resolve().parents[2]
KIT_FILES = [p for p in (REPO / "deploy").rglob("*") if p.is_file()]


def test_every_etc_greenfly_path_the_readmes_name_is_one_the_kit_uses():
    kit = "".join(path.read_text() for path in KIT_FILES)
    used = set(re.findall(r"/etc/greenfly/[\w.-]+", kit))
    for name in ("README.md", "deploy/README.md"):
        named = set(re.findall(r"/etc/greenfly/[\w.-]+", (REPO / name).read_text()))
        assert named <= used, f"{name} names {sorted(named - used)}; the kit uses {sorted(used)}"


def test_the_config_files_the_readme_runs_exist_and_load():
    from broker.config.loading import load_file

    named = re.findall(r"""make run ARGS=["']-c ([\w./-]+)["']""", README)
    assert named, "README lost its make run ARGS example"
    for name in named:
        assert (REPO / name).is_file(), f"README runs `make run ARGS=\"-c {name}\"`: no such file"
        load_file(str(REPO / name))
