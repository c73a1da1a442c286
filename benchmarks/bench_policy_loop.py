"""Policy loop under load: step latency and deadline misses while a fine-tuning round runs.

    .venv/bin/python benchmarks/bench_policy_loop.py [--obs image] [--rate 10] [--grad-steps 40]

The acting API (``PexPolicy.step``: image -> action with both policies' Q evaluations) runs at
the control rate on one thread, exactly as the policy node's timer does, while a ``Learner``
runs a fine-tuning round on another (as the learner node does when both share a machine).
Prints p50/p99 step latency and the ticks that missed their deadline (a step that did not
finish before the next tick was due). Figures, no assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
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


def run(config_name: str, obs: str, rate: float, grad_steps: int, seconds_after: float) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--obs", default="image", choices=["image", "state"])
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--grad-steps", type=int, default=40)
    parser.add_argument("--after", type=float, default=1.0, help="s to keep acting afterwards")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    r = run(args.config, args.obs, args.rate, args.grad_steps, args.after)
    print(f"{r['config']} config, {r['obs']} obs, {r['rate_hz']:.0f} Hz policy loop during a "
          f"{r['grad_steps']}-step fine-tuning round ({r['round_s']:.1f} s): "
          f"{r['ticks']} steps, step p50 {r['step_ms_p50']:.1f} ms, "
          f"p99 {r['step_ms_p99']:.1f} ms, deadline misses {r['deadline_misses']}")


if __name__ == "__main__":
    main()
