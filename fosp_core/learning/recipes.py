"""Recipes: what each step of the method does, kept as data in ``config/recipes/NAME.yaml``.

A preset (``cpu``, ``paper``) says how big the networks are and how fast they learn; a recipe
says which method runs on them: the settings of pretraining, of the policy extraction (or none)
and of fine-tuning that differ from the preset, each with a comment naming the paper's
equation or the reason for the departure. ``--recipe NAME`` of ``fosp pretrain``, ``fosp
extract``, ``fosp finetune``, the learner node and the launch file reads one; the run's
config records its name (``recipe``), and later steps default to the recipe of their run.

A recipe file::

    description: one line
    pretrain: {KEY: VALUE, ...}          # agent config keys (dotted), as --set takes them
    extract: null | {weights: eq19 | safe-success, updates: N, set: {KEY: VALUE}}
    finetune: {pex: BOOL, deterministic: BOOL, set: {KEY: VALUE, ...}}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fosp_core.util.config import deep_update, merge, nest
from fosp_core.util.errors import UserError
from fosp_core.util.files import read_mapping, shipped_path

RECIPES_DIR = "config/recipes"
EXTRACT_WEIGHTS = ("eq19", "safe-success")


@dataclass(frozen=True)
class Extraction:
    """``fosp extract`` after pretraining: the actor refitted to the frozen critics."""

    weights: str = "eq19"
    updates: int = 4000
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str  # the file's stem, for reports
    source: str  # what ``load_recipe`` finds it by again: a shipped name or a file's path
    description: str
    pretrain: dict[str, Any]  # nested config overrides (``merge``'s form)
    extract: Extraction | None  # None: keep the jointly trained actor
    pex: bool  # fine-tune with policy expansion (sec. 4.3) or the offline actor directly
    deterministic: bool  # fine-tuning trajectories act by the most likely choice
    finetune: dict[str, Any]  # nested config overrides for fine-tuning


def recipe_names() -> list[str]:
    """The recipes shipped in config/recipes, by name."""
    return sorted(p.stem for p in shipped_path(RECIPES_DIR).glob("*.yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped recipe's file, or a YAML file of one's own."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if not Path(text).is_file():
            raise UserError(f"recipe file {text} does not exist")
        return Path(text)
    path = shipped_path(RECIPES_DIR) / f"{text}.yaml"
    if not path.is_file():
        raise UserError(f"unknown recipe {text!r}; choose one of {', '.join(recipe_names())} "
                        "or give a YAML file")
    return path


def nested(flat: Any, where: str) -> dict[str, Any]:
    """A recipe section's dotted keys in ``merge``'s nested form."""
    if not isinstance(flat, dict):
        raise UserError(f"{where}: expected a mapping of config keys, got {flat!r}")
    return nest(flat)


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """Read and check a recipe; a mistake names the file and the key."""
    path = recipe_path(name_or_path)
    data = read_mapping(path)
    unknown = set(data) - {"description", "pretrain", "extract", "finetune"}
    if unknown:
        raise UserError(f"{path}: unknown recipe sections {sorted(unknown)}")
    extract = data.get("extract")
    if extract is not None:
        if not isinstance(extract, dict) or set(extract) - {"weights", "updates", "set"}:
            raise UserError(f"{path}: extract must be null or a mapping of weights, updates "
                            f"and set, got {extract!r}")
        weights = extract.get("weights", "eq19")
        if weights not in EXTRACT_WEIGHTS:
            raise UserError(f"{path}: extract.weights must be one of {EXTRACT_WEIGHTS}, "
                            f"got {weights!r}")
        extract = Extraction(weights, int(extract.get("updates", 4000)),
                             nested(extract.get("set") or {}, f"{path}: extract.set"))
    finetune = data.get("finetune") or {}
    if not isinstance(finetune, dict) or set(finetune) - {"pex", "deterministic", "set"}:
        raise UserError(f"{path}: finetune must be a mapping of pex, deterministic and set, "
                        f"got {finetune!r}")
    recipe = Recipe(
        name=path.stem, description=str(data.get("description", "")),
        source=path.stem if path.parent == shipped_path(RECIPES_DIR) else str(path),
        pretrain=nested(data.get("pretrain") or {}, f"{path}: pretrain"), extract=extract,
        pex=bool(finetune.get("pex", True)),
        deterministic=bool(finetune.get("deterministic", False)),
        finetune=nested(finetune.get("set") or {}, f"{path}: finetune.set"))
    _check_keys(recipe, path)
    return recipe


def _check_keys(recipe: Recipe, path: Path) -> None:
    """Every key must be an agent config key: a typo fails here, not after an hour's training."""
    from fosp_core.agent.config import cpu

    for section, overrides in (("pretrain", recipe.pretrain), ("finetune", recipe.finetune),
                               ("extract", recipe.extract.overrides if recipe.extract else {})):
        try:
            merge(cpu(), overrides)
        except (UserError, ValueError) as err:
            raise UserError(f"{path}: {section}: {err}") from None


def recipe_of_run(name: str | None, run_dir: str | os.PathLike) -> Recipe | None:
    """The recipe a later step follows: the one named, else the one the run records."""
    if name:
        return load_recipe(name)
    from fosp_core.learning.runs import load_run_config

    recorded = load_run_config(run_dir).recipe
    return load_recipe(recorded) if recorded else None


def with_recipe(recipe: Recipe | None, step: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Config overrides for ``step`` (pretrain, extract, finetune): the recipe's settings, its
    source (the run records it, so later steps find it again), then ``overrides``
    (``--set``), which win."""
    if recipe is None:
        return overrides
    own = {"pretrain": recipe.pretrain, "finetune": recipe.finetune,
           "extract": recipe.extract.overrides if recipe.extract else {}}[step]
    return deep_update(deep_update(own, {"recipe": recipe.source}), overrides)


def extract_settings(name: str | None, run_dir: str | os.PathLike, weights: str | None,
                     updates: int | None, overrides: dict[str, Any]
                     ) -> tuple[str, int, dict[str, Any]]:
    """Weights, updates and config overrides of ``fosp extract``: the recipe's (the one named,
    else the pretrained run's own), where the command line does not give them."""
    recipe = recipe_of_run(name, run_dir)
    extraction = recipe.extract if recipe else None
    if name and extraction is None:
        raise UserError(f"recipe {recipe.name} keeps the jointly trained actor (extract: "
                        "null): there is nothing to extract")
    return (weights or (extraction.weights if extraction else "eq19"),
            updates or (extraction.updates if extraction else 4000),
            with_recipe(recipe if extraction else None, "extract", overrides))
