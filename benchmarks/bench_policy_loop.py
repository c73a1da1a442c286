"""Policy loop under load: step latency and deadline misses while a fine-tuning round runs.

    .venv/bin/python benchmarks/bench_policy_loop.py [--obs image] [--rate 10] [--grad-steps 40]

A thin wrapper over ``fosp_core.bench.policy_loop_during_round`` (``fosp bench`` runs it too).
"""

from __future__ import annotations

import argparse
import os
import platform

from fosp_core.bench import policy_loop_during_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--obs", default="image", choices=["image", "state"])
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--grad-steps", type=int, default=40)
    args = parser.parse_args()
    r = policy_loop_during_round(args.config, args.obs, args.rate, args.grad_steps)
    print(f"{platform.machine()}, {os.cpu_count()} cores: {r['config']} config, {r['obs']} obs, "
          f"{r['rate_hz']:.0f} Hz policy loop during a {r['grad_steps']}-step fine-tuning round "
          f"({r['round_s']:.1f} s): {r['ticks']} steps, step p50 {r['step_ms_p50']:.1f} ms, "
          f"p99 {r['step_ms_p99']:.1f} ms, deadline misses {r['deadline_misses']}")


if __name__ == "__main__":
    main()
