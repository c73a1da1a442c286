"""Run directories: what a trained run holds, finding and loading it, exporting it.

A pretraining run (``fosp pretrain --out RUN``) holds ``config.yaml``, ``checkpoint.pt``
(weights, optimisers, replay sampler and random state: ``--resume`` continues it exactly),
``dataset.txt`` (where its data is) and optionally ``checkpoints/step_*.pt`` (kept weights).
A fine-tuned directory (``fosp finetune --out``, the ROS learner's ``RUN/online``) holds
``config.yaml`` and ``learner.pt``. An exported run (``fosp export``, ``models/``) holds the
config, float16 weights and ``source.json``: the commands that made it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from fosp_core.agent.agent import Agent
from fosp_core.agent.config import AgentConfig
from fosp_core.util.config import load_yaml, merge, save_yaml, to_dict
from fosp_core.util.files import load_tensors, save_tensors, write_text

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "checkpoint.pt"
DATASET_NAME = "dataset.txt"  # path of the dataset the run was trained on
LEARNER_FILE = "learner.pt"  # a fine-tuned directory's state (fosp finetune, the ROS learner)
KEPT_DIR = "checkpoints"  # weights kept every keep_every steps (fosp eval --step)
SOURCE_NAME = "source.json"  # an exported run: where its weights came from (fosp.shipped)


def save_weights(path: Path, step: int, modules: dict[str, torch.Tensor]) -> None:
    """A checkpoint of weights and buffers alone: acts and fine-tunes, cannot be resumed."""
    save_tensors({"step": step, "agent": {"modules": modules, "optimizers": {}}}, path)


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike,
               half: bool = True, **source: Any) -> Path:
    """Copy a run's config and weights (no optimiser, replay or RNG state) to ``out_dir``.

    ``half`` stores float32 tensors as float16, which halves the file; loading casts them
    back. Other dtypes (the float64 multipliers, integer counters) are kept as they are.
    ``source`` (e.g. the command that trained the run) goes to ``source.json`` with the step.
    """
    config = load_run_config(run_dir)
    checkpoint = load_checkpoint(run_dir)
    out = Path(out_dir)
    if (out / CHECKPOINT_NAME).exists():
        # Exporting over a run (its own included) would drop the optimiser and replay state
        # that --resume needs; a shipped model is replaced by removing it first.
        raise ValueError(f"{out}: already holds a {CHECKPOINT_NAME}; export to a new "
                         "directory (remove the old export first to replace it)")
    modules = checkpoint["agent"]["modules"]
    if half:
        modules = {k: v.half() if v.dtype == torch.float32 else v for k, v in modules.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(config, out / CONFIG_NAME)
    step = int(checkpoint["step"])
    save_weights(out / CHECKPOINT_NAME, step, modules)
    # No machine path in what ships: the run as seen from the working directory, or its name.
    run_path = Path(run_dir).resolve()
    origin = (run_path.relative_to(Path.cwd()) if run_path.is_relative_to(Path.cwd())
              else Path(run_path.name))
    info = {"step": step, "exported_from": origin.as_posix(), **source}
    write_text(out / SOURCE_NAME, json.dumps(info, indent=1) + "\n")
    return out


def kept_weights_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / KEPT_DIR / f"step_{step:06d}.pt"


def keep_weights(run_dir: str | os.PathLike, step: int, agent: Agent) -> None:
    """Weights and buffers alone (no optimiser, replay or RNG state) of this step.

    Offline training does not settle on its best policy (docs/results.md, image mode), so a
    run can keep its earlier weights to evaluate and choose from; they act and fine-tune like
    the latest checkpoint but cannot be resumed.
    """
    path = kept_weights_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, step, agent.state_dict()["modules"])


def existing_run(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path; a missing directory is named as such, before any file in it."""
    if Path(run_dir).is_file():
        raise FileNotFoundError(f"{run_dir} is a file, not a run directory")
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    return Path(run_dir)


def is_finetuned(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a fine-tuned learner (the ``out`` of ``fosp finetune``, or
    the ROS learner's ``RUN/online``) rather than a pretrained run."""
    directory = Path(directory)
    return (directory / LEARNER_FILE).is_file() and not (directory / CHECKPOINT_NAME).is_file()


def pretrained_run(run_dir: str | os.PathLike) -> Path:
    """``existing_run``, and not a fine-tuned directory, which holds no pretraining state."""
    path = existing_run(run_dir)
    if is_finetuned(path):
        raise FileNotFoundError(
            f"{run_dir}: a fine-tuned directory, not a pretrained run; `fosp eval` and the "
            "policy node's run take it, `fosp finetune --resume` continues it, and fine-tuning "
            "anew starts from the pretrained run")
    return path


def load_checkpoint(run_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The latest checkpoint of a run, or with ``step`` the weights it kept at that step."""
    pretrained_run(run_dir)
    if step is None:
        path = Path(run_dir) / CHECKPOINT_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{run_dir}: no {CHECKPOINT_NAME} (has this run been trained?)"
            )
    else:
        path = kept_weights_path(run_dir, step)
        if not path.is_file():
            kept = sorted(int(p.stem[len("step_"):])
                          for p in (Path(run_dir) / KEPT_DIR).glob("step_*.pt"))
            raise FileNotFoundError(
                f"{run_dir}: no weights kept at step {step} (kept: "
                f"{', '.join(map(str, kept)) if kept else 'none; pretrain with --keep-every K'})"
            )
    return load_tensors(path)


def run_dataset(run_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> str:
    """The dataset to continue a run from: ``data`` when given, else the one it trained on."""
    recorded = pretrained_run(run_dir) / DATASET_NAME
    if data is not None:
        return str(data)
    if not recorded.is_file():
        raise FileNotFoundError(f"{run_dir}: no {DATASET_NAME}; pass the dataset with --data")
    return recorded.read_text().strip()


def load_run_config(run_dir: str | os.PathLike) -> AgentConfig:
    path = existing_run(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG_NAME}; not a run directory")
    return load_yaml(AgentConfig, path)


def load_agent(run_dir: str | os.PathLike, device: str = "cpu",
               overrides: dict[str, Any] | None = None,
               step: int | None = None) -> tuple[Agent, int]:
    """The trained agent of a run directory and the step it was saved at.

    ``overrides`` (nested, as for ``merge``) change the run's config first; ones that change
    the networks' shapes raise ``ValueError`` naming them. ``step`` picks kept weights.
    """
    saved = load_run_config(run_dir)
    config = merge(saved, overrides or {})
    checkpoint = load_checkpoint(run_dir, step)
    agent = Agent(config, device)
    try:
        agent.load_state_dict(checkpoint["agent"])
    except RuntimeError as err:
        changed = _changed_keys(to_dict(saved), to_dict(config))
        if not changed:
            raise
        first = next((line.strip() for line in str(err).splitlines()[1:]), str(err))
        raise ValueError(f"{run_dir}: its weights do not fit the config with "
                         f"{', '.join(changed)} changed: a trained run's network sizes are "
                         f"fixed ({first})") from err
    return agent, int(checkpoint["step"])


def _changed_keys(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested config dicts."""
    changed = []
    for key, value in after.items():
        if isinstance(value, dict) and isinstance(before.get(key), dict):
            changed += _changed_keys(before[key], value, f"{prefix}{key}.")
        elif before.get(key) != value:
            changed.append(f"{prefix}{key}={value!r}")
    return changed
