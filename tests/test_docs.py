"""The README and docs as a newcomer meets them: short, current, every link and command good."""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")),
         *sorted((REPO / "docs" / "reference").glob("*.md"))]


def test_the_readme_is_short_and_has_no_experiment_history():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date in the README"
    assert not re.search(r"\bat [0-9a-f]{7}\b|\bcommit [0-9a-f]{7}", text), "a commit hash"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_generated_reference_pages_are_current():
    from fosp.reference import pages

    for path, text in pages().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m fosp.reference"


def shell_commands(text: str) -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():  # continued lines as one
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands


def test_every_command_in_the_readme_is_one_this_tree_has():
    """fosp commands parse as written; make targets exist; launch arguments and services are
    the launch files' and the nodes'."""
    from fosp.cli import build_parser
    from fosp.reference import _services
    from fosp_ros.graph import GRAPHS

    makefile = (REPO / "Makefile").read_text()
    launch_arguments = runpy.run_path(str(REPO / "launch" / "safereach.launch.py"))["ARGUMENTS"]
    teleop_launch = runpy.run_path(str(REPO / "launch" / "collect.launch.py"))["ARGUMENTS"]
    services = {s for specs in GRAPHS.values() for spec in specs for s in _services(spec.module)}
    commands = shell_commands(README.read_text())
    assert len(commands) >= 10
    for argv in commands:
        tool = argv[0]
        if tool == "make":
            targets = [a for a in argv[1:] if "=" not in a]
            assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets), argv
        elif tool == "fosp":
            build_parser().parse_args([a for a in argv[1:]])  # exits on a bad command
        elif argv[:2] == ["ros2", "launch"]:
            known = launch_arguments if argv[2] == "fosp_ros" else teleop_launch
            for arg in argv[4:]:
                assert arg.split(":=")[0] in known, (argv, arg)
        elif argv[:3] == ["ros2", "service", "call"]:
            assert argv[3] in services and argv[4] == "std_srvs/srv/Trigger", argv
        else:
            raise AssertionError(f"a command this test does not know: {argv}")
