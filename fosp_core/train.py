"""Offline pretraining (Algorithm 1 lines 2-11) and evaluation in the simulated SafeReach twin.

A run directory holds::

    config.yaml       the AgentConfig of the run (written once; a resume reads it back)
    checkpoint.pt     latest checkpoint, written atomically
    checkpoints/      with ``keep_every``: weights alone at earlier steps, step_NNNNNN.pt
    tb/               TensorBoard scalars: every loss, multipliers, REF mean, values
    rollout.png       a strip of frames from ``evaluate``'s first episode

Checkpoints hold only tensors and plain containers (``torch.load(weights_only=True)``):
weights, optimiser states, multipliers, the step, the replay generator's state and the torch
and numpy global RNG states. Resuming restores all of them, so the step after a resume
computes exactly the loss an uninterrupted run would have computed.

``export_run`` writes a small run directory for shipping a trained agent (the repository keeps
one in ``models/``): config, weights in float16 without optimiser or sampler state, and a
``source.json`` saying where it came from. It evaluates and fine-tunes like any run (fresh
optimisers) but cannot be resumed as a pretraining run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fosp_core import distributed
from fosp_core.agent.agent import Agent
from fosp_core.agent.config import AgentConfig
from fosp_core.agent.replay import SequenceReplay
from fosp_core.config import load_yaml, merge, save_yaml, to_dict
from fosp_core.files import load_tensors
from fosp_core.shipped import SOURCE_NAME  # exported runs: where the weights came from
from fosp_core.stats import wilson_interval

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "checkpoint.pt"
DATASET_NAME = "dataset.txt"  # path of the dataset the run was trained on
LEARNER_FILE = "learner.pt"  # a fine-tuned directory's state (fosp finetune, the ROS learner)
KEPT_DIR = "checkpoints"  # weights kept every keep_every steps (fosp eval --step)


class Interrupted(Exception):
    """A long job (training, collection) stopped on SIGINT or SIGTERM with its finished work
    saved: a checkpoint to resume from, whole dataset files. The CLI exits with 130."""


@contextlib.contextmanager
def stop_on_signal():
    """An Event that SIGINT and SIGTERM set instead of interrupting, so that a training loop
    can stop between two steps with a checkpoint of a whole step. A second SIGINT interrupts
    at once (KeyboardInterrupt). Outside the main thread, where Python cannot handle signals,
    the Event is never set and the signals act as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step and saving (Ctrl-C again: at once, unsaved)",
              file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------
# Checkpoints.


def _numpy_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached"]))


def save_checkpoint(path: Path, step: int, agent: Agent, replay: SequenceReplay) -> None:
    """torch.save to a temp file in the same directory, then os.replace: never half a file."""
    state = {
        "step": step,
        "agent": agent.state_dict(),
        "replay": replay.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    atomic_torch_save(state, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then os.replace: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(path: Path, step: int, modules: dict[str, torch.Tensor]) -> None:
    """A checkpoint of weights and buffers alone: acts and fine-tunes, cannot be resumed."""
    atomic_torch_save({"step": step, "agent": {"modules": modules, "optimizers": {}}}, path)


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
    info = {"step": step, "exported_from": str(Path(run_dir).resolve()), **source}
    (out / SOURCE_NAME).write_text(json.dumps(info, indent=1) + "\n")
    return out


def kept_weights_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / KEPT_DIR / f"step_{step:06d}.pt"


def keep_weights(run_dir: str | os.PathLike, step: int, agent: Agent) -> None:
    """Weights and buffers alone (no optimiser, replay or RNG state) of this step.

    Offline training does not settle on its best policy (README, image-mode figures), so a
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


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    _set_numpy_rng_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Pretraining.


def pretrain(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AgentConfig,
    steps: int,
    resume: bool = False,
    device: str = "cpu",
    seed: int = 0,
    ckpt_every: int = 1000,
    progress: bool = True,
    keep_every: int = 0,
    skip_bad: bool = False,
) -> dict[str, float]:
    """Train the agent offline for ``steps`` total steps; returns the last step's metrics.

    ``skip_bad`` trains without the dataset's unreadable files (``load_training_data``).

    ``keep_every`` > 0 also keeps the weights of every such step (``keep_weights``).

    With ``resume`` the run continues from ``out_dir``'s checkpoint and its saved config (the
    ``config`` argument is then ignored) up to ``steps`` in total. Without it, an existing
    checkpoint in ``out_dir`` is an error rather than silently overwritten.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from fosp_core.dataset import load_training_data

    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if resume:
        config = load_run_config(out)
        checkpoint = load_checkpoint(out)
        if "replay" not in checkpoint:
            raise ValueError(f"{out}: exported weights (no optimiser or sampler state) cannot be "
                             "resumed; start a new run with fosp pretrain instead")
    elif ckpt_path.exists():
        raise ValueError(f"{out}: already holds a checkpoint; pass resume=True (--resume)")
    else:
        checkpoint = None
    dataset = load_training_data(data_dir, skip_bad)
    parallel = distributed.init(device)  # under torchrun: one rank of N
    main_rank = distributed.rank() == 0
    out.mkdir(parents=True, exist_ok=True)
    if not resume and main_rank:
        save_yaml(config, out / CONFIG_NAME)
        # Fine-tuning continues from the same data: remember where it is.
        (out / DATASET_NAME).write_text(str(Path(data_dir).resolve()) + "\n")

    torch.manual_seed(seed)
    np.random.seed(seed)
    # Each rank draws its own batches; the model init is the same (and broadcast below).
    replay = SequenceReplay(
        dataset.trajectories, config.batch_size, config.batch_length, config.obs_mode,
        seed + distributed.rank(),
    )
    agent = Agent(config, device)
    agent.fit_normalizer(dataset.trajectories)  # a resume overwrites it with the saved one
    step = 0
    if checkpoint is not None:
        agent.load_state_dict(checkpoint["agent"])
        replay.load_state_dict(checkpoint["replay"])
        _restore_rng(checkpoint["rng"])
        step = int(checkpoint["step"])
        if parallel and not main_rank:
            # The checkpoint holds rank 0's sampler; other ranks continue on their own stream
            # (a resume is exact for a single process, statistically equal under torchrun).
            replay.rng = np.random.default_rng([seed, distributed.rank(), step])
    if parallel:
        agent.actor_critic.grad_sync = distributed.average_gradients
        distributed.broadcast_from_rank0(agent)

    # purge_step hides events a killed run logged after its last checkpoint (TensorBoard
    # drops those at purge_step and later; the checkpoint's own step was logged before it).
    writer = (SummaryWriter(str(out / "tb"), purge_step=step + 1 if resume else None)
              if main_rank else None)
    metrics: dict[str, float] = {}
    bar = tqdm(total=steps, initial=step, disable=not progress or not main_rank,
               desc="pretrain", unit="step")
    signals = contextlib.ExitStack()
    # Under torchrun every rank would have to stop at the same step: signals act as usual.
    stop = threading.Event() if parallel else signals.enter_context(stop_on_signal())
    try:
        while step < steps:
            if stop.is_set():
                save_checkpoint(ckpt_path, step, agent, replay)
                raise Interrupted(f"pretraining stopped at step {step}; checkpoint saved in "
                                  f"{out}, continue with --resume")
            metrics = agent.train_step(replay.sample())
            if parallel:  # multipliers and return ranges come from each rank's batch
                distributed.average_buffers(agent)
            step += 1
            if not main_rank:
                continue
            for name, value in metrics.items():
                writer.add_scalar(name, value, step)
            bar.update(1)
            bar.set_postfix(
                model=f"{metrics['model/loss']:.2f}", actor=f"{metrics['ac/actor_loss']:.3f}"
            )
            if step % ckpt_every == 0 or step == steps:
                save_checkpoint(ckpt_path, step, agent, replay)
            if keep_every > 0 and step % keep_every == 0:
                keep_weights(out, step, agent)
        if parallel:
            _check_replicas(agent, out, main_rank)
    finally:
        signals.close()
        bar.close()
        if writer is not None:
            writer.close()
        if parallel:
            distributed.shutdown()
    return metrics


def _check_replicas(agent: Agent, out: Path, main_rank: bool) -> None:
    """All ranks must end with the same weights; rank 0 records the evidence in ddp.json."""
    checksums = distributed.weight_checksums(agent)
    if main_rank:
        (out / "ddp.json").write_text(json.dumps(
            {"world_size": len(checksums), "weight_checksums": checksums}) + "\n")
    if len(set(checksums)) != 1:
        raise RuntimeError(f"data-parallel replicas diverged: weight checksums {checksums}")


# --------------------------------------------------------------------------------------------
# Evaluation.


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


def _write_strip(frames: list[np.ndarray], path: Path, title: str) -> None:
    """One row of frames as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(1.6 * len(frames), 1.9), squeeze=False)
    for ax, (t, frame) in zip(axes[0], frames):
        ax.imshow(frame)
        ax.set_title(f"t={t}", fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.78, wspace=0.05)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def layout_outcome(layout, success: bool, costs) -> dict[str, Any]:
    """One row of ``per_layout``: the layout's points, whether its episode succeeded and
    violated, and the action that drew the first cost (``costs`` per dataset row, row 0 the
    reset; None without a cost)."""
    costs = np.asarray(costs)
    return {"target_index": layout.target_index,
            "obstacle_indices": sorted(layout.obstacle_indices),
            "success": bool(success), "violation": bool(costs.any()),
            "first_cost": int(np.argmax(costs > 0)) if costs.any() else None}


def evaluate(
    run_dir: str | os.PathLike,
    task: str = "safereach",
    episodes: int = 10,
    seed: int = 0,
    frame_every: int = 8,
    device: str = "cpu",
    step: int | None = None,
    progress: bool = False,
    each_layout: bool = False,
) -> dict[str, Any]:
    """Run the deterministic policy for ``episodes`` episodes of SafeReachEnv.

    Success is an episode with any reward, violation one with any cost > 0 (the dataset's
    definitions), each rate with its 95% Wilson interval; ``layouts`` counts the distinct
    layouts among the episodes. Episode k is reset with seed ``seed + k``. Writes
    ``rollout.png``. ``step`` evaluates the weights kept at that step. ``each_layout``
    runs one episode on each of the task's distinct layouts instead (``episodes`` unused)
    and adds ``per_layout`` (see ``layout_outcome``).
    """
    from tqdm import tqdm

    from fosp_core.envs.safereach import SafeReachEnv, all_layouts, task_spec

    fixed = all_layouts(task_spec(task)) if each_layout else None
    episodes = len(fixed) if fixed else episodes
    if episodes < 1:
        raise ValueError(f"need at least one evaluation episode, got {episodes}")
    agent, step = load_agent(run_dir, device, step=step)
    env = SafeReachEnv(task=task, obs_mode=agent.config.obs_mode)
    rewards, costs, successes, violations = [], [], [], []
    layouts, per_layout = set(), []
    frames: list[tuple[int, np.ndarray]] = []
    try:
        for episode in tqdm(range(episodes), desc=f"eval {task}", unit="ep",
                            disable=not progress, leave=False):
            obs, _ = env.reset(seed=seed + episode,
                               options={"layout": fixed[episode]} if fixed else None)
            layouts.add(env.layout.key)
            agent.reset()
            episode_costs = []
            reward_sum = 0.0
            hit = False
            t, done = 0, False
            while not done:
                if episode == 0 and t % frame_every == 0:
                    frames.append((t, env.render_image(128)))
                obs, reward, terminated, truncated, info = env.step(agent.act(obs))
                t += 1
                done = terminated or truncated
                reward_sum += reward
                episode_costs.append(info["cost"])
                hit |= reward > 0
            rewards.append(reward_sum)
            costs.append(float(np.sum(episode_costs)))
            successes.append(hit)
            violations.append(costs[-1] > 0)
            if fixed:
                per_layout.append(layout_outcome(env.layout, hit, [0.0, *episode_costs]))
    finally:
        env.close()
    result = {
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "violation_rate": float(np.mean(violations)),
        "success_ci": list(wilson_interval(sum(successes), episodes)),
        "violation_ci": list(wilson_interval(sum(violations), episodes)),
        "reward_return": float(np.mean(rewards)),
        "cost_return": float(np.mean(costs)),
        # Acting deterministically, a policy repeats itself on a repeated layout: the rates
        # weigh this many distinct layouts, and the intervals assume independent episodes.
        "layouts": len(layouts),
    }
    if fixed:
        result["per_layout"] = per_layout
    if frames:
        title = f"{task} step {step}: " + json.dumps(
            {k: round(v, 2) for k, v in result.items() if isinstance(v, float)}
        )
        _write_strip(frames, Path(run_dir) / "rollout.png", title)
    return result

