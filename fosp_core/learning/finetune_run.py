"""``fosp finetune``: few-shot safe fine-tuning in the simulated twin, with a Table-3 report.

Algorithm 1 lines 13-24 on a SafeReach task: roll out one trajectory with safe policy
expansion, add it to the replay (and to ``OUT/online_data``), run G gradient steps, hand the
new weights to the acting policy, repeat. The report has three rows, like the paper's Table 3:

- before: 20 evaluation episodes with the pretrained agent (deterministic PEX);
- during: the fine-tuning trajectories themselves (sampled actions, or the most likely ones
  with ``deterministic``), with the cost regret (total cost / total steps, App. D.2) and how
  often each policy was chosen;
- after: 20 evaluation episodes at the end.

With expansion, every trajectory's metadata keeps which policy chose each action
(``meta["policy"]``: 0 offline, 1 online, one entry per action), and the report says how
often the offline policy chose the actions that led into a violation: the frozen policy
cannot learn the new task, so a share above its overall share means it steers into costs.

Rates come with 95% Wilson intervals: over 20 episodes they are about +-20 points wide.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fosp_core.agent.config import AgentConfig
from fosp_core.data.collect import record_episode
from fosp_core.learning.finetune import (
    POLICIES,
    EpisodeLog,
    Learner,
    PexPolicy,
    RoundLog,
    acting_weights,
    round_summary,
)
from fosp_core.learning.runs import LEARNER_FILE, is_finetuned, load_agent, run_dataset
from fosp_core.learning.train import Interrupted, layout_outcome, stop_on_signal
from fosp_core.util import jsonfile
from fosp_core.util.files import load_tensors, save_figure, save_tensors
from fosp_core.util.stats import wilson_interval

EVAL_SEED_OFFSET = 100_000  # evaluation layouts never coincide with fine-tuning ones
LEAD_IN_ACTIONS = 5  # the actions up to a violation's first cost that count as leading into it
KEPT_ROUNDS_DIR = "rounds"  # with keep_every: the acting weights after every K-th round
PROGRESS_KEY = "finetune"  # the report so far, as JSON, inside LEARNER_FILE
# The random state a rollout left, saved before its trajectory is stored: a resume that
# trains on the stored trajectory goes on from exactly there.
ROLLOUT_STATE = "rollout_state.pt"


def episode_seed(seed: int, trajectory: int) -> int:
    """The twin's episode seed of fine-tuning trajectory ``trajectory`` (from 0) of a run with
    ``seed``: it alone draws the layout, so every method meets the same layouts in order."""
    return 1000 * seed + trajectory


def rollout(env, policy: PexPolicy, seed: int, deterministic: bool, render: bool,
            layout=None) -> tuple[dict, dict, dict]:
    """One episode in the dataset's row convention, plus PEX statistics; on ``layout``
    instead of the one ``seed`` draws."""
    obs, info = env.reset(seed=seed, options={"layout": layout} if layout else None)
    policy.reset()
    log = EpisodeLog()

    def act(obs: dict, info: dict) -> np.ndarray:
        decision = policy.step(obs, deterministic=deterministic,
                               touching_target=bool(info.get("touch_target", False)))
        log.add(decision)
        return decision.action

    arrays, info = record_episode(env, obs, info, act, render)
    meta = {"task": env.config.task, "behaviour": "policy", "seed": seed,
            "layout": info["layout"], "source": "finetune", **log.meta(),
            "image_rendered": render or env.config.obs_mode == "image"}
    return arrays, meta, log.chosen


class OfflineControl:
    """The pretrained policy alone, never fine-tuned, rolled out on each fine-tuning
    trajectory's layout (the same episode seed): what the robot would have done without any
    learning. A fine-tuning trajectory that violates where this did not is a violation that
    learning added; PEX's frozen policy is there to keep those few. Acts as fine-tuning
    does (``deterministic``, or sampled from torch's random state seeded with the episode
    seed) and with the same config overrides, and leaves the global random state as it found
    it, so the fine-tuning run itself is the same with or without it."""

    def __init__(self, run: Path, config: AgentConfig, overrides: dict | None, device: str,
                 seed: int):
        with torch.random.fork_rng(devices=[]):  # building an Agent draws initial weights
            agent, _ = load_agent(run, device, overrides)
            self.policy = PexPolicy(config, acting_weights(agent, None), device, seed)

    def violates(self, env, seed: int, deterministic: bool, render: bool) -> bool:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            arrays, _, _ = rollout(env, self.policy, seed, deterministic, render)
        return bool(arrays["cost"].any())


def episode_rates(episodes: list[tuple[dict, dict]], stopped: list[bool] | None = None
                  ) -> dict[str, Any]:
    """Success / violation rates, mean returns and the online policy's share of steps, over
    (arrays, chosen-counts) pairs; with ``stopped`` (one flag per episode) also the share of
    episodes the foresight stop ended."""
    rewards = [float(a["reward"].sum()) for a, _ in episodes]
    costs = [float(a["cost"].sum()) for a, _ in episodes]
    chosen = [c for _, c in episodes]
    online = sum(c["online"] for c in chosen) / max(1, sum(sum(c.values()) for c in chosen))
    n = len(episodes)
    if n == 0:  # e.g. a demo whose graph delivered no trajectory: no rate to report
        nan = float("nan")
        return {"episodes": 0, "success_rate": nan, "violation_rate": nan,
                "success_ci": [0.0, 1.0], "violation_ci": [0.0, 1.0], "reward_return": nan,
                "cost_return": nan, "online_share": nan, "stopped_rate": nan}
    successes, violations = sum(r > 0 for r in rewards), sum(c > 0 for c in costs)
    return {
        "episodes": n,
        "success_rate": successes / n,
        "violation_rate": violations / n,
        "success_ci": list(wilson_interval(successes, n)),
        "violation_ci": list(wilson_interval(violations, n)),
        "reward_return": float(np.mean(rewards)),
        "cost_return": float(np.mean(costs)),
        "online_share": float(online),
        "stopped_rate": float(np.mean(stopped)) if stopped else float("nan"),
    }


def lead_in_offline_share(episodes: list[tuple[dict, list[int]]],
                          actions: int = LEAD_IN_ACTIONS) -> float:
    """Share of the actions leading into violations that the offline policy chose.

    ``episodes`` are (arrays, per-action policy indices) pairs; ``policy[k]`` chose the action
    of row k + 1 (row 0 is the reset). For each episode with a cost, the ``actions`` actions up
    to and including the one that drew its first cost are counted. NaN without a violation or
    without per-action choices (episodes recorded before they were kept)."""
    offline = total = 0
    for arrays, policy in episodes:
        cost = np.asarray(arrays["cost"])
        if not policy or not cost.any():
            continue
        if len(policy) != len(cost) - 1:
            raise ValueError(f"{len(policy)} policy choices for {len(cost) - 1} actions")
        first = int(np.argmax(cost > 0))  # >= 1: the reset row carries no cost
        window = policy[max(0, first - actions):first]
        offline += sum(1 for p in window if p == 0)
        total += len(window)
    return offline / total if total else float("nan")


def evaluate_policy(env, policy: PexPolicy, episodes: int, seed: int,
                    progress: str = "", layouts: list | None = None) -> dict[str, Any]:
    """Deterministic episodes ``seed``, ``seed + 1``, ...; ``progress`` names a progress bar.
    The result's ``layouts`` counts the distinct layouts among them (see ``train.evaluate``).
    Given a list of ``layouts``, one episode on each of them instead, and ``per_layout``.
    With expansion (``expansion``), ``lead_in_offline_share`` says which policy eq. 21 chose
    for the actions leading into the violations: a fine-tuned run that violates where its
    offline policy would not have is told apart from one whose frozen policy does."""
    from tqdm import tqdm

    episodes = len(layouts) if layouts else episodes
    runs, choices, stopped, drawn, per_layout = [], [], [], set(), []
    for k in tqdm(range(episodes), desc=progress, unit="ep", disable=not progress,
                  leave=False):
        arrays, meta, chosen = rollout(env, policy, seed + k, deterministic=True, render=False,
                                       layout=layouts[k] if layouts else None)
        runs.append((arrays, chosen))
        choices.append((arrays, meta["policy"]))
        stopped.append(meta["stopped_at"] is not None)
        drawn.add(env.layout.key)
        if layouts:
            per_layout.append(layout_outcome(env.layout, arrays["reward"].sum() > 0,
                                             arrays["cost"]))
    result = dict(episode_rates(runs, stopped), layouts=len(drawn),
                  expansion=policy.offline_actor is not None,
                  lead_in_offline_share=lead_in_offline_share(choices))
    return dict(result, per_layout=per_layout) if layouts else result


def kept_round_path(directory: str | os.PathLike, round_: int) -> Path:
    return Path(directory) / KEPT_ROUNDS_DIR / f"round_{round_:04d}.pt"


def finetuned_policy(directory: str | os.PathLike, device: str = "cpu", seed: int = 0,
                     round_: int | None = None) -> PexPolicy:
    """The acting policy of a fine-tuned ``directory``: its config and the latest weights
    of its learner (what the ROS policy node would load), or those kept after ``round_``."""

    from fosp_core.learning.finetune import saved_acting_weights
    from fosp_core.learning.runs import load_run_config

    directory = Path(directory)
    config = load_run_config(directory)
    if round_ is None:
        weights = saved_acting_weights(directory / LEARNER_FILE)
    else:
        path = kept_round_path(directory, round_)
        if not path.is_file():
            kept = sorted(int(p.stem[len("round_"):])
                          for p in (directory / KEPT_ROUNDS_DIR).glob("round_*.pt"))
            raise FileNotFoundError(f"{directory}: no weights kept after round {round_} "
                                    f"(kept: {kept or 'none; fosp finetune --keep-every K'})")
        weights = load_tensors(path)
    return PexPolicy(config, weights, device, seed)


def load_policy(directory: str | os.PathLike, device: str = "cpu", seed: int = 0) -> PexPolicy:
    """The policy to act with from ``directory``, what the ROS policy node's ``run`` takes:
    a pretrained run, expanded as fine-tuning starts when it has Q critics (a FOSP run), or
    a fine-tuned one (``fosp finetune --out``, the learner's ``RUN/online``) with its latest
    weights, so a policy fine-tuned on the robot can be run again without learning."""
    if is_finetuned(directory):
        return finetuned_policy(directory, device, seed)
    return PexPolicy.from_run(directory, pex=None, device=device, seed=seed)


def evaluate_finetuned(directory: str | os.PathLike, task: str, episodes: int, seed: int = 0,
                       device: str = "cpu", progress: bool = False,
                       round_: int | None = None, each_layout: bool = False
                       ) -> dict[str, Any]:
    """The fine-tuned policy in ``directory`` (its latest acting weights, with expansion when
    it has a frozen offline actor) over ``episodes`` deterministic episodes, on the layouts of
    the report's "after" row: the first 20 are that row's, and none is a fine-tuning layout.
    ``round_`` takes the weights kept after that round instead (``keep_every``);
    ``each_layout`` runs one episode on each of the task's distinct layouts instead."""
    from fosp_core.envs.layouts import all_layouts
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.envs.tasks import task_spec

    layouts = all_layouts(task_spec(task)) if each_layout else None
    if not layouts and episodes < 1:
        raise ValueError(f"need at least one evaluation episode, got {episodes}")
    policy = finetuned_policy(directory, device, seed, round_)
    env = SafeReachEnv(task=task, obs_mode=policy.config.obs_mode)
    try:
        return evaluate_policy(env, policy, episodes, EVAL_SEED_OFFSET + seed,
                               progress=f"eval {task}" if progress else "", layouts=layouts)
    finally:
        env.close()


class Tally:
    """The fine-tuning trajectories so far, counted for the report's "during" row and log, from
    what their meta keeps (``EpisodeLog.meta``; in the twin and through ROS alike)."""

    def __init__(self) -> None:
        self.runs: list[tuple[dict, dict]] = []  # (arrays, chosen counts)
        self.choices: list[tuple[dict, list[int]]] = []  # (arrays, per-action policy)
        self.stopped: list[bool] = []
        self.vetoed = dict.fromkeys(POLICIES, 0)
        self.cost = self.steps = 0.0

    def add(self, arrays: dict, meta: dict) -> dict[str, Any]:
        """Count one trajectory; returns its log entry."""
        chosen = meta.get("chosen") or dict.fromkeys(POLICIES, 0)
        self.runs.append((arrays, chosen))
        self.choices.append((arrays, meta.get("policy", [])))
        self.stopped.append(meta.get("stopped_at") is not None)
        for name, count in meta.get("vetoed", {}).items():
            self.vetoed[name] += count
        self.cost += float(arrays["cost"].sum())
        self.steps += len(arrays["cost"]) - 1
        return {"trajectory": len(self.runs), "success": bool(arrays["reward"].any()),
                "violation": bool(arrays["cost"].any()),
                "cost_regret": self.cost / max(1.0, self.steps),
                "online_share": chosen["online"] / max(1, sum(chosen.values())),
                "choice_margin": meta.get("choice_margin"),
                "stopped": self.stopped[-1]}

    def row(self) -> dict[str, Any]:
        return dict(episode_rates(self.runs, self.stopped),
                    cost_regret=self.cost / self.steps if self.steps else 0.0,
                    lead_in_offline_share=lead_in_offline_share(self.choices),
                    vetoed_share={k: v / max(1.0, self.steps) for k, v in self.vetoed.items()})


def finetune(run: str | os.PathLike, task: str, trajectories: int, grad_steps: int,
             out: str | os.PathLike, data: str | os.PathLike | None = None, pex: bool = True,
             eval_episodes: int = 20, seed: int = 0, device: str = "cpu",
             progress: bool = True, overrides: dict | None = None,
             deterministic: bool = False, resume: bool = False, keep_every: int = 0,
             skip_bad: bool = False) -> dict:
    """Fine-tune the pretrained ``run`` on ``task``; writes ``out`` and returns the report.

    ``overrides`` change the run's config (nested, e.g. {"fosp": {"pex_temperature": 100}});
    ``out/config.yaml`` records the config used. The fine-tuning trajectories sample each
    policy's action and eq. 21's choice, as the paper does; ``deterministic`` takes the most
    likely of each instead (the ROS policy node's ``deterministic`` parameter): no exploration
    noise on the robot, and the learner still gets a new trajectory per round.

    After every round ``out/learner.pt`` holds the learner, the acting policy's random state
    and the report so far, so a stopped run loses at most its current round: ``resume``
    continues it with the same arguments (``trajectories`` may grow) exactly where it stopped;
    a trajectory stored but not yet trained on is trained on, not rolled out again. Without
    ``resume`` an ``out`` that already holds a fine-tuning run is an error.

    ``keep_every`` > 0 also keeps the acting weights after every such round in
    ``out/rounds/`` (``fosp eval --run OUT --round N``): fine-tuning need not end on its best
    policy, and this shows where it went."""
    from tqdm import tqdm

    from fosp_core.data.dataset import DatasetWriter
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.util.config import save_yaml

    if trajectories < 1 or eval_episodes < 1 or grad_steps < 0 or keep_every < 0:
        raise ValueError(f"need trajectories >= 1, eval episodes >= 1, gradient steps >= 0 "
                         f"and keep_every >= 0, got {trajectories}, {eval_episodes}, "
                         f"{grad_steps} and {keep_every}")
    run, out = Path(run), Path(out)
    data = run_dataset(run, data)
    settings = {"run": str(run.resolve()), "data": str(Path(data).resolve()), "task": task,
                "pex": pex, "grad_steps": grad_steps, "eval_episodes": eval_episodes,
                "seed": seed, "deterministic": deterministic, "overrides": overrides or {}}
    saved = _saved_progress(out, settings, trajectories) if resume else None
    if saved is None and not resume and (out / "config.yaml").exists():
        raise ValueError(f"{out}: already holds a fine-tuning run; continue it with --resume "
                         "(the same arguments) or choose another --out")
    if saved is None and ((out / LEARNER_FILE).exists() or _stored(out)):
        raise ValueError(f"{out}: already holds a fine-tuning run; continue it with --resume "
                         "(the same arguments) or choose another --out")
    learner = Learner.from_run(run, data, pex=pex, device=device, seed=seed,
                               overrides=overrides, skip_bad=skip_bad)
    config = learner.agent.config
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(config, out / "config.yaml")
    writer = DatasetWriter(out / "online_data")
    env = SafeReachEnv(task=task, obs_mode=config.obs_mode)
    policy = PexPolicy(config, learner.snapshot(), device=device, seed=seed)
    render = config.obs_mode == "image"
    control = OfflineControl(run, config, overrides, device, seed)

    def save() -> None:  # after "before" and after every round
        learner.save(out / LEARNER_FILE, policy_rng=policy.generator.get_state(),
                     **{PROGRESS_KEY: json.dumps({"settings": settings, "before": before,
                                                  "log": log})})

    tally, log = Tally(), []
    stored = []
    # Ctrl-C: stop at the end of the evaluation, the trajectory or the gradient step.
    with stop_on_signal() as stop, contextlib.ExitStack() as closing:
        if saved is None:
            before = evaluate_policy(env, policy, eval_episodes, EVAL_SEED_OFFSET + seed,
                                     progress="before fine-tuning" if progress else "")
            save()
        else:
            before, log, stored = _restore(out, *saved, learner, policy, tally)
        bar = tqdm(range(len(log), trajectories), desc=f"finetune {task}", unit="traj",
                   initial=len(log), total=trajectories, disable=not progress)
        curves = closing.enter_context(contextlib.closing(RoundLog(out, learner.steps)))
        for i in bar:
            if stop.is_set():
                break
            if i < len(stored):  # stored before the stop, never trained on
                arrays, meta = stored[i].arrays, stored[i].meta
                _continue_after_rollout(out / ROLLOUT_STATE, i, policy)
            else:
                arrays, meta, _ = rollout(env, policy, episode_seed(seed, i), deterministic,
                                          render)
                save_tensors({"trajectory": i, "policy_rng": policy.generator.get_state(),
                                   "torch_rng": torch.get_rng_state()}, out / ROLLOUT_STATE)
                writer.add(arrays, meta)  # on disk before it is trained on
            learner.add_trajectory(arrays)
            stats = learner.train(grad_steps, stop=stop)
            if stop.is_set():  # a partial round is not saved: the resume trains it again
                break
            policy.load_weights(learner.snapshot())
            entry = dict(tally.add(arrays, meta), train_s=stats["duration_s"],
                         train=round_summary(stats),
                         offline_violation=control.violates(env, episode_seed(seed, i),
                                                            deterministic, render))
            curves.add(learner.steps, stats, entry)
            log.append(entry)
            save()
            if keep_every > 0 and len(log) % keep_every == 0:
                path = kept_round_path(out, len(log))
                path.parent.mkdir(exist_ok=True)
                save_tensors(learner.snapshot(), path)
            bar.set_postfix(success=int(entry["success"]), violation=int(entry["violation"]),
                            online=f"{entry['online_share']:.2f}")
    if stop.is_set():
        env.close()
        raise Interrupted(f"fine-tuning stopped after {len(log)} of {trajectories} rounds; "
                          f"{out} holds them, continue with --resume")
    after = evaluate_policy(env, policy, eval_episodes, EVAL_SEED_OFFSET + seed,
                            progress="after fine-tuning" if progress else "")
    env.close()

    report = {"run": str(run), "task": task, "algo": config.algo, "obs_mode": config.obs_mode,
              "pex": pex, "trajectories": trajectories, "grad_steps": grad_steps, "seed": seed,
              "deterministic": deterministic, "foresight_stop": config.fosp.foresight_stop,
              "foresight_veto": config.fosp.foresight_veto,
              "foresight_veto_latch": config.fosp.foresight_veto_latch,
              "before": before, "during": tally.row(), "after": after,
              "offline_control": control_counts(log), "log": log}
    jsonfile.write(report, out / "report.json")
    plot_finetune(report, out / "finetune.png")
    return report


def _restore(out: Path, state: dict, progress: dict, learner: Learner, policy: PexPolicy,
             tally: Tally) -> tuple[dict, list[dict], list]:
    """Bring a fresh learner, policy and tally back to the saved state of the run in ``out``;
    returns its "before" row, its log and the stored trajectories."""
    from fosp_core.data.dataset import load_dataset

    log = progress["log"]
    stored = load_dataset(out / "online_data", strict=True).trajectories
    if not len(log) <= len(stored) <= len(log) + 1:
        raise ValueError(f"{out}: {len(stored)} stored trajectories for {len(log)} rounds "
                         "done; online_data was changed by hand")
    learner.restore(state, [t.arrays for t in stored])
    policy.load_weights(learner.snapshot())
    policy.generator.set_state(state["policy_rng"])
    for trajectory in stored[:len(log)]:
        tally.add(trajectory.arrays, trajectory.meta)
    return progress["before"], log, stored


def _continue_after_rollout(path: Path, index: int, policy: PexPolicy) -> None:
    """The random state rollout ``index`` left (policy and torch), so training on its stored
    trajectory and everything after goes on as if the run had never stopped. A trajectory
    stored without it (copied by hand, an older version) goes on from the saved round's."""
    if not path.is_file():
        return
    state = load_tensors(path)
    if int(state["trajectory"]) == index:
        policy.generator.set_state(state["policy_rng"])
        torch.set_rng_state(state["torch_rng"])


def _stored(out: Path) -> bool:
    """Whether ``out`` holds stored fine-tuning trajectories."""
    directory = out / "online_data"
    return directory.is_dir() and any(directory.glob("traj_*.npz"))


def _saved_progress(out: Path, settings: dict, trajectories: int) -> tuple[dict, dict] | None:
    """The saved learner state and report so far of the run in ``out``, checked against the
    arguments of the resume; None for a run stopped before anything was saved."""

    path = out / LEARNER_FILE
    if not path.is_file() and (out / "config.yaml").is_file() and not _stored(out):
        return None  # stopped before the evaluation before fine-tuning ended: start over
    if not path.is_file():
        raise ValueError(f"{out}: nothing to resume (no {LEARNER_FILE}; it is written once "
                         "the evaluation before fine-tuning is done)")
    state = load_tensors(path)
    if PROGRESS_KEY not in state:
        raise ValueError(f"{path}: holds no fine-tuning progress (the ROS learner's, or an "
                         "older fosp finetune's), cannot be resumed")
    progress = json.loads(state[PROGRESS_KEY])
    was = progress["settings"]
    changed = [f"{key} was {was.get(key)!r}, now {value!r}"
               for key, value in settings.items() if was.get(key) != value]
    if changed:
        raise ValueError("--resume continues a run with its own arguments; changed: "
                         + "; ".join(changed))
    if trajectories < len(progress["log"]):
        raise ValueError(f"{out}: {len(progress['log'])} trajectories are done already, "
                         f"more than --trajectories {trajectories}")
    return state, progress


def control_counts(log: list[dict]) -> dict[str, int] | None:
    """Fine-tuning trajectories against the offline policy alone on the same layouts
    (``OfflineControl``): how many it violated on, how many violations learning added (the
    trajectory violated, the offline policy did not) and how many it avoided; None for a log
    without the control (runs from before it, the ROS demo)."""
    pairs = [(e["violation"], e["offline_violation"]) for e in log if "offline_violation" in e]
    if not pairs:
        return None
    return {"trajectories": len(pairs), "violating": sum(o for _, o in pairs),
            "added": sum(v and not o for v, o in pairs),
            "avoided": sum(o and not v for v, o in pairs)}


def format_report(report: dict) -> str:
    """Table-3-style text: before / during / after fine-tuning."""
    name = report["algo"] + (" + PEX" if report["pex"] else " (direct fine-tuning)")
    lines = [
        f"{report['task']}: {name}, {report['obs_mode']} obs, {report['trajectories']} "
        f"trajectories x {report['grad_steps']} gradient steps (seed {report['seed']}"
        + (", deterministic acting" if report.get("deterministic") else "") + ")",
        f"{'':8} {'episodes':>8} {'success (95% CI)':>16} {'violation (95% CI)':>18} "
        f"{'reward ret':>10} {'cost ret':>8} {'online':>7}",
    ]
    for row in ("before", "during", "after"):
        r = report[row]
        lines.append(f"{row:8} {r['episodes']:8d} {_rate(r, 'success'):>16} "
                     f"{_rate(r, 'violation'):>18} {r['reward_return']:10.2f} "
                     f"{r['cost_return']:8.2f} {r['online_share']:7.0%}")
    lines.append(f"cost regret during fine-tuning: {report['during']['cost_regret']:.4f}")
    control = report.get("offline_control")
    if control:
        lines.append(f"the offline policy alone on the same {control['trajectories']} layouts: "
                     f"{control['violating']} violating; fine-tuning added {control['added']} "
                     f"violation(s) where it had none and avoided {control['avoided']}")
    lead_in = jsonfile.number(report["during"].get("lead_in_offline_share"))
    if report["pex"] and not np.isnan(lead_in):
        lines.append(f"offline policy chose {lead_in:.0%} of the {LEAD_IN_ACTIONS} actions "
                     f"up to each violation's first cost "
                     f"({1 - report['during']['online_share']:.0%} of all actions)")
    # a report built outside ``finetune`` (a test's, an older run's) may have no log
    margins = [e["choice_margin"] for e in report.get("log", ())
               if e.get("choice_margin") is not None]
    if report["pex"] and margins:
        lines.append(f"eq. 21's draw, mean |P(online) - P(offline)| per action: "
                     f"{np.mean(margins):.3f} (0: a coin flip, 1: certain)")
    if report.get("foresight_stop", 0) > 0:
        shares = ", ".join(f"{row} {report[row]['stopped_rate']:.0%}"
                           for row in ("before", "during", "after"))
        lines.append(f"episodes ended by the foresight stop (foreseen cost >= "
                     f"{report['foresight_stop']}): {shares}")
    if report["pex"] and report.get("foresight_veto"):
        share = report["during"]["vetoed_share"]
        latched = " (latched until the episode ends)" if report.get("foresight_veto_latch") else ""
        lines.append(f"foresight veto{latched} while fine-tuning: dropped the offline proposal "
                     f"at {share['offline']:.0%} of steps, the online one at "
                     f"{share['online']:.0%}")
    return "\n".join(lines)


def _rate(row: dict, name: str) -> str:
    """'40% (22-61%)': the rate and its interval, when the report has one."""
    text = f"{row[name + '_rate']:.0%}"
    if name + "_ci" in row:
        low, high = row[name + "_ci"]
        text += f" ({100 * low:.0f}-{high:.0%})"
    return text


def plot_finetune(report: dict, path: Path) -> None:
    """Per-trajectory success / violation (running mean) and the online policy's share."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    log = report["log"]
    fig = Figure(figsize=(9, 3.4))
    ax, bars = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if log:
        x = [e["trajectory"] for e in log]
        for key, colour in (("success", "tab:green"), ("violation", "tab:red")):
            values = np.array([e[key] for e in log], dtype=float)
            ax.plot(x, np.cumsum(values) / np.arange(1, len(values) + 1), color=colour,
                    label=f"{key} rate (running)")
        ax.plot(x, [e["online_share"] for e in log], color="tab:blue", ls="--",
                label="online policy chosen")
    ax.set(xlabel="fine-tuning trajectory", ylim=(-0.02, 1.02), title=report["task"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trajectories are counted
    ax.legend(fontsize=7)
    rows = ("before", "during", "after")
    pos = np.arange(len(rows))
    for name, offset, color in (("success", -0.2, "tab:green"), ("violation", 0.2, "tab:red")):
        rates = np.array([report[r][f"{name}_rate"] for r in rows])
        errors = None
        if all(f"{name}_ci" in report[r] for r in rows):  # 95% Wilson intervals as error bars
            ci = np.array([report[r][f"{name}_ci"] for r in rows]).T
            errors = np.clip(np.stack([rates - ci[0], ci[1] - rates]), 0, None)
        bars.bar(pos + offset, rates, 0.4, color=color, label=name, yerr=errors, capsize=3)
    bars.set_xticks(pos, rows)
    bars.set(ylim=(0, 1.2), yticks=np.linspace(0, 1, 6), title="Table 3 style (95% intervals)")
    bars.legend(fontsize=7, loc="upper center", ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
