"""``fosp bench``: the figures a lab needs before it trusts the loop on a robot.

- policy step latency, p50 / p99, for the ``cpu`` and ``paper`` configs: image -> action with
  both policies and the two Q evaluations of safe policy expansion (``PexPolicy.step``);
- one training step (world model + actor-critic) for ``cpu``;
- a 40-step fine-tuning round for ``cpu``, with the policy loop running at 10 Hz beside it,
  counting the ticks that missed their deadline (the policy node's situation when the learner
  shares its machine);
- simulator steps per second with 64x64 rendering;
- loading a 200-trajectory dataset.

Figures only, no pass/fail: timing goals are read off them, not asserted in tests.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fosp_core.agent.agent import Agent
from fosp_core.agent.config import config_by_name
from fosp_core.agent.replay import SequenceReplay
from fosp_core.config import merge
from fosp_core.dataset import DatasetWriter, load_dataset
from fosp_core.finetune import Learner, PexPolicy


def synthetic_dataset(directory: Path, episodes: int, steps: int = 80) -> Path:
    rng = np.random.default_rng(0)
    writer = DatasetWriter(directory)
    for seed in range(episodes):
        rows = steps + 1
        arrays = {
            "image": rng.integers(0, 256, (rows, 64, 64, 3), dtype=np.uint8),
            "pose": rng.normal(size=(rows, 6)).astype(np.float32),
            "action": rng.uniform(-1, 1, (rows, 6)).astype(np.float32),
            "reward": (rng.random(rows) < 0.1).astype(np.float32),
            "cost": (rng.random(rows) < 0.05).astype(np.float32),
            "state": rng.normal(size=(rows, 25)).astype(np.float32),
        }
        arrays["action"][0] = arrays["reward"][0] = arrays["cost"][0] = 0
        writer.add(arrays, {"task": "bench", "behaviour": "random", "seed": seed, "layout": {}})
    return directory


def policy_loop_during_round(config_name: str = "cpu", obs: str = "image", rate: float = 10.0,
                             grad_steps: int = 40, seconds_after: float = 1.0) -> dict:
    """The policy loop at ``rate`` Hz on this thread while a fine-tuning round trains."""
    config = merge(config_by_name(config_name), {"obs_mode": obs})
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(synthetic_dataset(Path(tmp) / "data", episodes=8))
        replay = SequenceReplay(data.trajectories, config.batch_size, config.batch_length, obs)
        learner = Learner(Agent(config), replay)
    policy = PexPolicy(config, learner.snapshot())
    policy.reset()
    rng = np.random.default_rng(1)
    obs_now = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
               "pose": np.zeros(6, np.float32), "state": np.zeros(25, np.float32)}
    keys = ("image", "pose") if obs == "image" else ("state",)
    period = 1.0 / rate
    round_result: dict = {}
    trainer = threading.Thread(target=lambda: round_result.update(learner.train(grad_steps)))
    latencies, misses, ticks = [], 0, 0
    next_tick = time.perf_counter()
    trainer.start()
    end_after = None
    while trainer.is_alive() or end_after is None or time.perf_counter() < end_after:
        if not trainer.is_alive() and end_after is None:
            end_after = time.perf_counter() + seconds_after
        start = time.perf_counter()
        policy.step({k: obs_now[k] for k in keys})
        done = time.perf_counter()
        latencies.append(1e3 * (done - start))
        ticks += 1
        next_tick += period
        if done > next_tick:  # the next tick is already due: this step missed its deadline
            misses += 1
            next_tick = done
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    trainer.join()
    return {"config": config_name, "obs": obs, "rate_hz": rate, "ticks": ticks,
            "step_ms_p50": float(np.percentile(latencies, 50)),
            "step_ms_p99": float(np.percentile(latencies, 99)),
            "deadline_misses": misses, "round_s": round_result.get("duration_s", float("nan")),
            "grad_steps": grad_steps}


def _observation(obs: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    full = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "pose": np.zeros(6, np.float32), "state": np.zeros(25, np.float32)}
    return {k: full[k] for k in (("image", "pose") if obs == "image" else ("state",))}


def policy_step_latency(config_name: str, obs: str = "image", steps: int = 200) -> dict:
    """p50 / p99 of ``PexPolicy.step`` (expanded: two actors, two Q evaluations)."""
    config = merge(config_by_name(config_name), {"obs_mode": obs})
    agent = Agent(config)
    from fosp_core.finetune import acting_weights, expand_policy

    policy = PexPolicy(config, acting_weights(agent, expand_policy(agent)))
    policy.reset()
    observation = _observation(obs)
    for _ in range(10):  # warm-up: first calls allocate
        policy.step(observation)
    times = []
    for t in range(steps):
        if t % 80 == 0:
            policy.reset()
        start = time.perf_counter()
        policy.step(observation)
        times.append(1e3 * (time.perf_counter() - start))
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def train_step_time(config_name: str, obs: str = "image", steps: int = 3) -> float:
    """Mean seconds of ``Agent.train_step`` (world model + actor-critic), after a warm-up."""
    config = merge(config_by_name(config_name), {"obs_mode": obs})
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(synthetic_dataset(Path(tmp) / "data", episodes=4))
    replay = SequenceReplay(data.trajectories, config.batch_size, config.batch_length, obs)
    agent = Agent(config)
    agent.train_step(replay.sample())
    start = time.perf_counter()
    for _ in range(steps):
        agent.train_step(replay.sample())
    return (time.perf_counter() - start) / steps


def sim_steps_per_second(steps: int = 400) -> float:
    from fosp_core.envs.safereach import SafeReachEnv

    env = SafeReachEnv(obs_mode="image")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for t in range(steps):
        if t % 80 == 79:
            env.reset(seed=t)
        env.step(rng.uniform(-1, 1, 6))
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def dataset_load_time(episodes: int = 200) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_dataset(Path(tmp) / "data", episodes=episodes)
        start = time.perf_counter()
        dataset = load_dataset(path, strict=True)
        elapsed = time.perf_counter() - start
        assert len(dataset) == episodes
    return elapsed


def run_all(grad_steps: int = 40, progress=print) -> dict:
    results: dict = {"torch_threads": torch.get_num_threads()}
    progress("policy step latency (cpu, paper)...")
    cpu = policy_step_latency("cpu")
    paper = policy_step_latency("paper", steps=60)
    results.update(policy_step_ms_p50_cpu=cpu["p50"], policy_step_ms_p99_cpu=cpu["p99"],
                   policy_step_ms_p50_paper=paper["p50"], policy_step_ms_p99_paper=paper["p99"])
    progress("train step (cpu)...")
    results["train_step_s_cpu"] = train_step_time("cpu")
    progress(f"{grad_steps}-step fine-tuning round with the 10 Hz policy loop beside it...")
    loop = policy_loop_during_round("cpu", "image", 10.0, grad_steps)
    results.update(finetune_round_s_cpu=loop["round_s"], deadline_misses=loop["deadline_misses"],
                   policy_loop_ticks=loop["ticks"],
                   policy_step_ms_p99_cpu_during_round=loop["step_ms_p99"])
    progress("simulator and dataset...")
    results["sim_steps_per_s"] = sim_steps_per_second()
    results["dataset_load_s_200"] = dataset_load_time(200)
    return results


def format_results(results: dict) -> str:
    rows = [
        ("policy step p50 / p99, cpu config (ms)",
         f"{results['policy_step_ms_p50_cpu']:.1f} / {results['policy_step_ms_p99_cpu']:.1f}"),
        ("policy step p50 / p99, paper config (ms)",
         f"{results['policy_step_ms_p50_paper']:.1f} / {results['policy_step_ms_p99_paper']:.1f}"),
        ("train step, cpu config (s)", f"{results['train_step_s_cpu']:.2f}"),
        ("fine-tuning round, cpu config (s)", f"{results['finetune_round_s_cpu']:.1f}"),
        ("policy loop during the round: ticks / deadline misses at 10 Hz",
         f"{results['policy_loop_ticks']} / {results['deadline_misses']}"),
        ("simulator steps/s with 64x64 rendering", f"{results['sim_steps_per_s']:.0f}"),
        ("load 200 trajectories (s)", f"{results['dataset_load_s_200']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
