"""Does ``train.precision: bf16`` learn what fp32 learns? The learning-equivalence check.

For each seed, pretrain the same config on the same dataset in fp32 and in bf16 (two runs at a
time, one torch thread each), then evaluate every run offline. The decision rule, fixed before
running (docs/notebook/2026-12-06-bf16-equivalence.md):

1. losses: for the world-model loss and the critic loss (mean of each run's last 200 steps),
   the difference of the two precisions' seed means is within two standard errors of that
   difference (from the spread over seeds);
2. evaluation: the pooled success and violation rates of the two precisions have overlapping
   95% Wilson intervals.

    python benchmarks/precision_equivalence.py --data runs/bf16/data --out runs/bf16

Prints one table and the verdict; the runs stay in --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "bf16")
TAIL = 200  # steps at the end of a run whose losses are averaged


def fosp(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fosp.cli", *args], text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{proc.args} failed with {proc.returncode}")
    return out


def tail_mean(run: Path, tag: str) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    values = [e.value for e in events.Scalars(tag)]
    return float(np.mean(values[-TAIL:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--obs", default="state")
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    from fosp_core.util.stats import wilson_interval

    out = Path(args.out)
    runs = {(seed, p): out / f"{p}-s{seed}" for seed in args.seeds for p in PRECISIONS}
    for seed in args.seeds:  # the two precisions of a seed side by side
        procs = [fosp("pretrain", "--data", args.data, "--preset", "cpu", "--obs", args.obs,
                      "--steps", str(args.steps), "--seed", str(seed), "--out", str(run),
                      "--set", f"train.precision={p}", "--ckpt-every", "500")
                 for (s, p), run in runs.items() if s == seed and not (run / "tb").is_dir()]
        for proc in procs:
            finish(proc)
    results: dict = {p: {"model": [], "critic": [], "success": 0, "violation": 0, "n": 0}
                     for p in PRECISIONS}
    for (_seed, p), run in runs.items():
        evaluated = json.loads(finish(fosp("eval", "--run", str(run), "--episodes",
                                           str(args.episodes), "--seed", "1000", "--json")))
        r = results[p]
        r["model"].append(tail_mean(run, "model/loss"))
        r["critic"].append(tail_mean(run, "ac/critic_loss"))
        r["success"] += round(evaluated["success_rate"] * evaluated["episodes"])
        r["violation"] += round(evaluated["violation_rate"] * evaluated["episodes"])
        r["n"] += evaluated["episodes"]
    print(f"{len(args.seeds)} seeds x {args.steps} steps, {args.obs} mode, cpu preset; "
          f"losses: mean of the last {TAIL} steps; evaluation: {args.episodes} episodes a run")
    print(f"{'':10} {'world-model loss':>24} {'critic loss':>22} {'success':>18} "
          f"{'violating':>18}")
    intervals = {}
    for p, r in results.items():
        s_ci = wilson_interval(r["success"], r["n"])
        v_ci = wilson_interval(r["violation"], r["n"])
        intervals[p] = (s_ci, v_ci)
        print(f"{p:10} {np.mean(r['model']):12.2f} +- {np.std(r['model'], ddof=1):7.2f} "
              f"{np.mean(r['critic']):12.3f} +- {np.std(r['critic'], ddof=1):6.3f} "
              f"{r['success'] / r['n']:6.0%} [{s_ci[0]:.0%}-{s_ci[1]:.0%}] "
              f"{r['violation'] / r['n']:6.0%} [{v_ci[0]:.0%}-{v_ci[1]:.0%}]")
    verdicts = []
    for key, name in (("model", "world-model loss"), ("critic", "critic loss")):
        a, b = (np.array(results[p][key]) for p in PRECISIONS)
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        diff = b.mean() - a.mean()
        verdicts.append(abs(diff) <= 2 * se)
        print(f"{name}: bf16 - fp32 = {diff:+.3f}, two standard errors {2 * se:.3f}: "
              f"{'within' if verdicts[-1] else 'OUTSIDE'}")
    for index, name in ((0, "success"), (1, "violation")):
        (lo_a, hi_a), (lo_b, hi_b) = (intervals[p][index] for p in PRECISIONS)
        verdicts.append(lo_a <= hi_b and lo_b <= hi_a)
        print(f"{name} intervals {'overlap' if verdicts[-1] else 'DO NOT overlap'}")
    print("verdict:", "equivalent" if all(verdicts) else "not shown equivalent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
