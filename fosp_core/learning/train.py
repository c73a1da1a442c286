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
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fosp_core.agent.agent import Agent
from fosp_core.agent.config import AgentConfig
from fosp_core.agent.replay import SequenceReplay
from fosp_core.learning import distributed
from fosp_core.learning.runs import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    DATASET_NAME,
    keep_weights,
    load_agent,
    load_checkpoint,
    load_run_config,
)
from fosp_core.util.config import save_yaml
from fosp_core.util.files import save_figure, save_tensors, write_text
from fosp_core.util.stats import wilson_interval


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
    save_tensors(state, path)


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

    from fosp_core.data.dataset import load_training_data

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
        write_text(out / DATASET_NAME, str(Path(data_dir).resolve()) + "\n")

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
        write_text(out / "ddp.json", json.dumps(
            {"world_size": len(checksums), "weight_checksums": checksums}) + "\n")
    if len(set(checksums)) != 1:
        raise RuntimeError(f"data-parallel replicas diverged: weight checksums {checksums}")


# --------------------------------------------------------------------------------------------
# Evaluation.


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
    try:
        save_figure(fig, path, dpi=80)
    finally:
        plt.close(fig)


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

    from fosp_core.envs.layouts import all_layouts
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.envs.tasks import task_spec

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

