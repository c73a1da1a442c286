"""SafeReach twin figures: env steps/s with 64x64 rendering, behaviour rates, collection time.

    .venv/bin/python benchmarks/bench_env.py [--seeds 100] [--episodes 200]

Prints figures; asserts nothing (timing belongs here, not in tests).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from fosp_core.data.collect import collect  # noqa: E402
from fosp_core.data.dataset import load_dataset, summarize  # noqa: E402
from fosp_core.envs.behaviours import behaviour_rates  # noqa: E402
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import EPISODE_STEPS


def steps_per_second(obs_mode: str, steps: int = 800) -> float:
    env = SafeReachEnv(obs_mode=obs_mode)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for t in range(steps):
        if t % EPISODE_STEPS == 0:
            env.reset(seed=t)
        env.step(rng.uniform(-1, 1, 6))
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"MUJOCO_GL={os.environ['MUJOCO_GL']}")
    print(f"env steps/s, 64x64 image obs : {steps_per_second('image'):7.1f}")
    print(f"env steps/s, state obs       : {steps_per_second('state'):7.1f}")
    for name in ("safe", "unsafe", "random"):
        success, violation = behaviour_rates(name, args.seeds)
        print(f"{name:>6} behaviour over {args.seeds} seeds: success {success:.0%}, "
              f"violating episodes {violation:.0%}")
    out = tempfile.mkdtemp(prefix="fosp-bench-")
    try:
        start = time.perf_counter()
        collect(out, "safereach", args.episodes, seed=0, mix="real", progress=False)
        elapsed = time.perf_counter() - start
        summary = summarize(load_dataset(out))
        print(f"collect --mix real --episodes {args.episodes}: {elapsed:.1f} s, "
              f"outcomes {summary['outcomes']}")
    finally:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
