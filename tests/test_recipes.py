"""Recipes as data (config/recipes): loading, checking, and how each command applies them."""

from __future__ import annotations

import pytest

from fosp.cli import build_parser, finetune_settings, main, pretrain_config
from fosp_core.agent.config import cpu
from fosp_core.learning.recipes import load_recipe, recipe_names, with_recipe
from fosp_core.util.config import merge, save_yaml
from fosp_core.util.errors import UserError
from tests.agent_helpers import tiny_config


def test_the_shipped_recipes_load_and_the_paper_one_is_the_method_as_printed():
    assert {"paper", "safe-clone"} <= set(recipe_names())
    paper = load_recipe("paper")
    assert paper.extract is None  # the jointly trained actor (eq. 19-20)
    assert paper.pex and not paper.deterministic  # eq. 21 drawn
    tuned = merge(cpu(), with_recipe(paper, "finetune", {}))
    assert (tuned.fosp.online_actor_init, tuned.fosp.online_actor_loss) == ("fresh", "eq23")
    assert tuned.fosp.foresight_stop == 0 and not tuned.fosp.hold_on_success
    assert tuned.recipe == "paper"
    clone = load_recipe("safe-clone")
    assert clone.extract.weights == "safe-success" and clone.deterministic
    assert merge(cpu(), with_recipe(clone, "finetune", {})).fosp.online_actor_loss == \
        "safe_success"


@pytest.mark.parametrize("text, message", [
    ("pretrain: {fosp.cost_limt: 1}\n", "pretrain"),
    ("extract: {weights: best}\n", "extract.weights"),
    ("finetune: {set: {fosp.online_actor_loss: 3}, pex: true}\nextra: 1\n", "unknown recipe"),
    ("finetune: [1, 2]\n", "finetune must be a mapping"),
])
def test_a_bad_recipe_fails_with_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        load_recipe(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(UserError, match="paper, safe-clone"):
        load_recipe("fastest")


def test_pretrain_records_the_recipe_and_the_command_line_wins(tmp_path):
    args = ["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "1",
            "--recipe", "paper", "--algo", "safedreamer",
            "--set", "actor_critic.awr_normalise=false"]
    config = pretrain_config(build_parser().parse_args(args))
    assert config.recipe == "paper"
    assert config.algo == "safedreamer"  # --algo over the recipe's algo: fosp
    assert config.actor_critic.awr_normalise is False  # --set over the recipe


def _run_with_recipe(directory, recipe: str):
    save_yaml(tiny_config(recipe=recipe), directory / "config.yaml")
    return directory


def test_finetuning_follows_the_runs_own_recipe_unless_told_otherwise(tmp_path):
    run = _run_with_recipe(tmp_path, "safe-clone")

    def settings(*extra):
        return finetune_settings(build_parser().parse_args(
            ["finetune", "--run", str(run), "--out", str(tmp_path / "o"), *extra]))

    overrides, pex, deterministic = settings()
    assert overrides["recipe"] == "safe-clone" and pex and deterministic
    assert overrides["fosp"]["foresight_stop"] == 0.5
    overrides, pex, deterministic = settings("--recipe", "paper", "--no-pex")
    assert overrides["fosp"]["online_actor_init"] == "fresh" and not pex and not deterministic
    overrides, _, deterministic = settings("--no-deterministic",
                                           "--set", "fosp.foresight_stop=0.25")
    assert not deterministic and overrides["fosp"]["foresight_stop"] == 0.25


def test_a_run_without_a_recipe_fine_tunes_as_before(tmp_path):
    run = _run_with_recipe(tmp_path, "")
    args = build_parser().parse_args(["finetune", "--run", str(run), "--out", str(tmp_path)])
    assert finetune_settings(args) == ({}, True, False)


def test_extracting_with_a_recipe_that_keeps_the_joint_actor_is_refused(tmp_path, capsys):
    run = _run_with_recipe(tmp_path, "paper")
    assert main(["extract", "--run", str(run), "--out", str(tmp_path / "x"),
                 "--recipe", "paper"]) != 0
    assert "nothing to extract" in capsys.readouterr().err


def test_a_recipe_file_of_ones_own_is_recorded_so_later_steps_find_it_again(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("finetune: {deterministic: true, set: {fosp.cost_max: 0.2}}\n")
    args = ["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "1",
            "--recipe", str(mine)]
    config = pretrain_config(build_parser().parse_args(args))
    assert config.recipe == str(mine)
    run = tmp_path / "run"
    run.mkdir()
    save_yaml(config, run / "config.yaml")
    overrides, _, deterministic = finetune_settings(build_parser().parse_args(
        ["finetune", "--run", str(run), "--out", str(tmp_path / "o")]))
    assert deterministic and overrides["fosp"]["cost_max"] == 0.2
