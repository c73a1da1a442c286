"""``fosp transfer``: the offline suite, the hard-task rule, the fine-tuning grid and its page."""

from __future__ import annotations

import json

import pytest

from fosp.cli import main
from fosp_core.learning.transfer import is_hard


def _offline(success: float, violation: float) -> dict:
    return {"success_rate": success, "violation_rate": violation}


@pytest.mark.parametrize("a, b, hard", [
    ((0.61, 0.29), (0.9, 0.0), False),
    ((0.60, 0.0), (0.9, 0.0), True),  # <= 60% success in one recipe
    ((0.9, 0.0), (1.0, 0.30), True),  # >= 30% violating in the other
])
def test_the_hard_task_rule(a, b, hard):
    results = {"paper": {"t": _offline(*a)}, "safe-clone": {"t": _offline(*b)}}
    assert is_hard(results, "t") is hard


def test_transfer_evaluates_offline_fine_tunes_and_writes_the_page(pretrained, tmp_path,
                                                                    capsys):
    run, data = pretrained
    out = tmp_path / "transfer"
    command = ["transfer", "--model", f"paper={run}", "--tasks", "safereach-dim-light",
               "--episodes", "2", "--trajectories", "1", "--grad-steps", "1",
               "--eval-episodes", "1", "--methods", "direct", "--workers", "1",
               "--data", str(data), "--out", str(out)]
    assert main(command) == 0
    stored = json.loads((out / "offline/paper/safereach-dim-light.json").read_text())
    assert stored["episodes"] == 2
    report = out / "finetune/paper/safereach-dim-light/direct-s0/report.json"
    assert json.loads(report.read_text())["trajectories"] == 1
    text = (out / "transfer.md").read_text()
    hard = "**yes**" if is_hard({"paper": {"safereach-dim-light": stored}},
                                "safereach-dim-light") else "no"
    assert f"| {hard} |" in text
    assert "| paper | `safereach-dim-light` | direct | 0 |" in text
    assert "real task 1 | 40% / 50% | 45% / 40% | 65% / 20%" in text
    # The same command again resumes: nothing is run twice.
    before = report.stat().st_mtime_ns
    assert main(command) == 0
    assert report.stat().st_mtime_ns == before
    assert "0 to run" in capsys.readouterr().out
    # Another seed by another command: the page pools every stored run and lists both
    # commands, each once.
    assert main([*command, "--seeds", "1"]) == 0
    text = (out / "transfer.md").read_text()
    assert "| paper | `safereach-dim-light` | direct | 0, 1 |" in text
    listed = [line for line in text.splitlines() if line.startswith("fosp transfer")]
    assert listed == ["fosp " + " ".join(command), "fosp " + " ".join([*command, "--seeds", "1"])]


def test_transfer_refuses_a_model_that_is_not_recipe_equals_run(tmp_path, capsys):
    assert main(["transfer", "--model", str(tmp_path), "--out", str(tmp_path)]) != 0
    assert "RECIPE=RUN" in capsys.readouterr().err
