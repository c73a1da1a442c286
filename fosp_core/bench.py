"""``fosp bench``: the figures a lab needs before it trusts the loop on a robot.

- policy step latency, p50 / p99, for the ``cpu`` and ``paper`` configs: image -> action with
  both policies and the two Q evaluations of safe policy expansion (``PexPolicy.step``);
- one training step (world model + actor-critic) for ``cpu``, in fp32 and in bf16
  (``train.precision``);
- a 40-step fine-tuning round for ``cpu``, with the policy loop running at 10 Hz beside it,
  counting the ticks that missed their deadline (the policy node's situation when the learner
  shares its machine);
- simulator steps per second with 64x64 rendering;
- loading a 200-trajectory dataset.

Figures only, no pass/fail: timing goals are read off them, not asserted in tests.

``compare_with(ref)`` measures the train step and the policy step of this tree and of a git
revision (``fosp bench --against HEAD~1``) in alternating child processes, so a regression
shows as a ratio measured under the same load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fosp_core.agent.agent import Agent
from fosp_core.agent.config import config_by_name
from fosp_core.agent.replay import SequenceReplay
from fosp_core.data.dataset import DatasetWriter, load_dataset
from fosp_core.learning.finetune import Learner, PexPolicy
from fosp_core.util.config import merge


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
    from fosp_core.learning.finetune import acting_weights, expand_policy

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


def train_step_time(config_name: str, obs: str = "image", steps: int = 3,
                    precision: str = "fp32") -> float:
    """Mean seconds of ``Agent.train_step`` (world model + actor-critic), after a warm-up."""
    config = merge(config_by_name(config_name),
                   {"obs_mode": obs, "train": {"precision": precision}})
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
    progress("train step (cpu; fp32, bf16)...")
    results["train_step_s_cpu"] = train_step_time("cpu")
    results["train_step_s_cpu_bf16"] = train_step_time("cpu", precision="bf16")
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
        ("train step, cpu config, fp32 / bf16 (s)",
         f"{results['train_step_s_cpu']:.2f} / {results['train_step_s_cpu_bf16']:.2f}"),
        ("fine-tuning round, cpu config (s)", f"{results['finetune_round_s_cpu']:.1f}"),
        ("policy loop during the round: ticks / deadline misses at 10 Hz",
         f"{results['policy_loop_ticks']} / {results['deadline_misses']}"),
        ("simulator steps/s with 64x64 rendering", f"{results['sim_steps_per_s']:.0f}"),
        ("load 200 trajectories (s)", f"{results['dataset_load_s_200']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# The figures ``compare_with`` takes from a tree: only calls that older trees have too.
_AB_FIGURES = """
import inspect, json
import torch
torch.set_num_threads(int(__import__("os").environ.get("FOSP_BENCH_THREADS", "2")))
from fosp_core import bench
out = {"train_step_s_fp32": bench.train_step_time("cpu", steps=STEPS)}
if "precision" in inspect.signature(bench.train_step_time).parameters:
    out["train_step_s_bf16"] = bench.train_step_time("cpu", steps=STEPS, precision="bf16")
latency = bench.policy_step_latency("cpu", steps=200)
out.update(policy_step_ms_p50=latency["p50"], policy_step_ms_p99=latency["p99"])
print(json.dumps(out))
"""


def _figures(tree: Path, steps: int) -> dict[str, float]:
    code = _AB_FIGURES.replace("STEPS", str(steps))
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(tree)), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {tree} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_with(ref: str, rounds: int = 3, steps: int = 3, progress=print) -> dict:
    """This tree's figures against git revision ``ref``'s, A/B interleaved ``rounds`` times;
    medians of each, and the ratio this / ref (below 1: faster now)."""
    import numpy as np

    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(here), "archive", ref], capture_output=True,
                                 check=False)
        if archive.returncode != 0:
            raise ValueError(f"--against {ref}: not a revision of a git checkout at {here} "
                             f"({archive.stderr.decode().strip()})")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        samples: dict[str, list[dict]] = {"this": [], ref: []}
        for round_ in range(rounds):
            for name, tree in (("this", here), (ref, Path(tmp))):
                progress(f"round {round_ + 1} of {rounds}: {name}...")
                samples[name].append(_figures(tree, steps))
    medians = {name: {key: float(np.median([s[key] for s in runs if key in s]))
                      for key in runs[0]} for name, runs in samples.items()}
    ratios = {key: medians["this"][key] / medians[ref][key]
              for key in medians["this"] if key in medians[ref]}
    return {"ref": ref, "rounds": rounds, "this": medians["this"], "other": medians[ref],
            "ratio": ratios}


def format_comparison(result: dict) -> str:
    ref = result["ref"]
    lines = [f"{'':28} {'this tree':>10} {ref:>10} {'ratio':>7}"]
    for key, value in result["this"].items():
        other = result["other"].get(key)
        ratio = result["ratio"].get(key)
        lines.append(f"{key:28} {value:10.3f} "
                     + (f"{other:10.3f} {ratio:7.2f}" if other is not None else f"{'n/a':>10}"))
    lines.append(f"(medians of {result['rounds']} alternating rounds; ratio = this / {ref})")
    return "\n".join(lines)
