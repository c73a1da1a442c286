"""Tiny configs and synthetic datasets shared by the agent / replay / training tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fosp_core.agent.config import AgentConfig, cpu
from fosp_core.data.dataset import DatasetWriter
from fosp_core.util.config import merge

STATE_DIM = 25


def tiny_config(obs_mode: str = "state", algo: str = "fosp", **overrides) -> AgentConfig:
    """cpu() shrunk until one train step takes milliseconds."""
    sizes = {"deter": 32, "stoch": 4, "classes": 4, "hidden": 32, "mlp_layers": 1, "cnn_depth": 4}
    data = {
        "algo": algo,
        "obs_mode": obs_mode,
        "batch_size": 4,
        "batch_length": 8,
        "model": sizes,
        "actor_critic": {"horizon": 5},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return merge(cpu(), data)


def make_trajectory(seed: int, steps: int = 20) -> dict[str, np.ndarray]:
    """A point that moves by its actions; reward near a goal, cost near an obstacle.

    Row 0 is the reset row (zero action, reward, cost), as the dataset format requires.
    """
    rng = np.random.default_rng(seed)
    rows = steps + 1
    state = np.zeros((rows, STATE_DIM), np.float32)
    action = np.zeros((rows, 6), np.float32)
    reward = np.zeros(rows, np.float32)
    cost = np.zeros(rows, np.float32)
    state[0, :3] = rng.uniform(-1, 1, 3)
    state[0, 6:9] = (0.5, 0.5, 0.0)  # goal
    for t in range(1, rows):
        action[t] = rng.uniform(-1, 1, 6)
        state[t] = state[t - 1]
        state[t, :3] = np.clip(state[t - 1, :3] + 0.2 * action[t, :3], -1, 1)
        reward[t] = float(np.linalg.norm(state[t, :2] - 0.5) < 0.3)
        cost[t] = float(np.linalg.norm(state[t, :2] + 0.5) < 0.3)
    image = rng.integers(0, 256, (rows, 64, 64, 3), dtype=np.uint8)
    return {"image": image, "pose": state[:, :6].copy(), "action": action,
            "reward": reward, "cost": cost, "state": state}


def write_dataset(directory: Path, episodes: int = 6, steps: int = 20) -> Path:
    writer = DatasetWriter(directory)
    for seed in range(episodes):
        arrays = make_trajectory(seed, steps)
        writer.add(arrays, {"task": "synthetic", "behaviour": "random", "seed": seed,
                            "success": bool(arrays["reward"].any()),
                            "violation": bool(arrays["cost"].any()), "layout": {}})
    return directory


def fosp_process(*args: str) -> subprocess.Popen:
    """``fosp ARGS`` in a child process (one torch thread), its stdout and stderr piped."""
    return subprocess.Popen([sys.executable, "-m", "fosp.cli", *args],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])


def interrupt(proc: subprocess.Popen, ready, timeout: float = 120.0) -> str:
    """Ctrl-C to ``proc`` once ``ready()`` holds; asserts it stopped as the CLI promises (exit
    code 130, no traceback) and returns its stderr."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    return err


def tb_scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one TensorBoard scalar, as TensorBoard shows it (purged events hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def strict_loads(text: str):
    """json.loads as JavaScript's JSON.parse reads: NaN and Infinity are errors."""
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=reject)
