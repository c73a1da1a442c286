"""``fosp demo``: safe fine-tuning of a pretrained run through the real ROS 2 graph.

1. before: the pretrained agent (with policy expansion, deterministic) on the unseen task in
   the twin, in this process;
2. the safereach graph with the simulated robot comes up, one process per node as
   ``ros2 launch`` would start them (the launch file's node list, ``fosp_ros.graph``): the
   policy node runs episodes at 10 Hz through the shield, each trajectory goes to the learner
   node, and after each one this process calls ``/fosp/finetune`` and prints the answer; new
   weights flow back to the policy. (One process per node matters: in a single process the
   policy loop would share the interpreter lock with the renderer and the learner.)
3. after: the learner's final weights, evaluated as in 1;
4. a Table-3-style report (before / during / after), ``report.json`` and ``finetune.png``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fosp_core.data.dataset import load_dataset
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.learning.finetune import PexPolicy
from fosp_core.learning.finetune_run import (
    EVAL_SEED_OFFSET,
    Tally,
    evaluate_policy,
    finetuned_policy,
    plot_finetune,
)
from fosp_core.learning.recipes import recipe_of_run, with_recipe
from fosp_core.learning.runs import load_run_config
from fosp_core.util import jsonfile
from fosp_ros.config import load_graph_config
from fosp_ros.graph import node_parameters, nodes_for


def _ros_value(value) -> str:
    """A parameter value as ``--ros-args -p`` parses it (YAML: true/false, numbers, strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if value != "" else "''"


def _evaluate(policy: PexPolicy, env_config, episodes: int, seed: int) -> dict:
    env = SafeReachEnv(config=env_config)
    try:
        return evaluate_policy(env, policy, episodes, EVAL_SEED_OFFSET + seed, progress="eval")
    finally:
        env.close()


def _during(online: Path) -> tuple[dict, list[dict]]:
    tally = Tally()
    log = [tally.add(t.arrays, t.meta) for t in load_dataset(online).trajectories]
    return tally.row(), log


def run_demo(run: str | os.PathLike, task: str, trajectories: int, grad_steps: int,
             out: str | os.PathLike, eval_episodes: int = 10, seed: int = 0,
             config: str = "", timeout_per_trajectory: float = 300.0,
             data: str | os.PathLike | None = None, deterministic: bool = False,
             recipe: str | None = None, pex: bool = True) -> dict:
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from fosp_ros.ros_client import RosClient

    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env_config = load_graph_config(config or None).env
    env_config.task, env_config.obs_mode = task, load_run_config(run).obs_mode
    recipe = recipe_of_run(recipe, run)
    print(f"[1/4] before fine-tuning: {eval_episodes} evaluation episodes on {task}"
          + (f" (recipe {recipe.name})" if recipe else ""), flush=True)
    before = _evaluate(PexPolicy.from_run(run, pex=pex, seed=seed,
                                          overrides=with_recipe(recipe, "finetune", {})),
                       env_config, eval_episodes, seed)

    print(f"[2/4] ROS graph with the simulated robot: {trajectories} trajectories, "
          f"/fosp/finetune ({grad_steps} steps) after each", flush=True)
    domain = 100 + os.getpid() % 100
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    overrides = {
        "sim_robot": {"task": task, "seed": seed},
        "policy": {"episodes": trajectories, "seed": seed, "deterministic": deterministic},
        "learner": {"run": str(run), "out": str(out / "online"), "auto_finetune": False,
                    "grad_steps": grad_steps, "data": str(data or ""), "pex": pex,
                    "recipe": recipe.source if recipe else ""},
    }
    log_file = open(out / "graph.log", "wb")
    nodes = []
    for spec in nodes_for("safereach", use_sim=True):
        params = {**node_parameters("safereach", spec, True, config),
                  **overrides.get(spec.executable, {})}
        command = [sys.executable, "-m", spec.module, "--ros-args"]
        for key, value in params.items():
            command += ["-p", f"{key}:={_ros_value(value)}"]
        nodes.append(subprocess.Popen(command, env=env, stdout=log_file,
                                      stderr=subprocess.STDOUT))
    client = RosClient(domain, "fosp_demo")
    finished: list[str] = []
    lock = threading.Lock()

    def on_status(msg: String) -> None:
        if msg.data.startswith("episode "):
            with lock:
                finished.append(msg.data)

    client.node.create_subscription(String, "/fosp/policy/status", on_status, 10)
    try:
        for k in range(trajectories):
            deadline = time.monotonic() + timeout_per_trajectory
            while True:
                with lock:
                    if len(finished) > k:
                        break
                if any(n.poll() is not None for n in nodes) or time.monotonic() > deadline:
                    raise RuntimeError(f"the graph stopped or stalled; see {out / 'graph.log'}")
                time.sleep(0.1)
            print(f"  policy: {finished[k]}", flush=True)
            # The learner stores the trajectory when it arrives; wait for it on disk.
            stored = out / "online" / "online_data"
            while len(list(stored.glob("traj_*.npz"))) <= k:
                if time.monotonic() > deadline:
                    raise RuntimeError("the trajectory never reached the learner")
                time.sleep(0.1)
            reply = client.call(Trigger, "/fosp/finetune", timeout=timeout_per_trajectory)
            print(f"  /fosp/finetune: {reply.message}", flush=True)
            if not reply.success:
                raise RuntimeError(f"fine-tuning failed: {reply.message}")
    finally:
        client.close()
        for node in nodes:
            node.send_signal(signal.SIGINT)
        for node in nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
        log_file.close()

    print(f"[3/4] after fine-tuning: {eval_episodes} evaluation episodes", flush=True)
    # The learner writes its config beside its weights (the run's, plus its 'set').
    after = _evaluate(finetuned_policy(out / "online", seed=seed), env_config, eval_episodes,
                      seed)
    during, log = _during(out / "online" / "online_data")
    config_used = load_run_config(run)
    report = {"run": str(run), "task": task, "algo": config_used.algo,
              "obs_mode": config_used.obs_mode, "pex": pex, "trajectories": trajectories,
              "recipe": recipe.name if recipe else "",
              "grad_steps": grad_steps, "seed": seed, "deterministic": deterministic,
              "before": before, "during": during,
              "after": after, "log": log,
              "through": "ROS 2 graph (safereach nodes, one process each)"}
    jsonfile.write(report, out / "report.json")
    plot_finetune(report, out / "finetune.png")
    print("[4/4] report", flush=True)
    return report

