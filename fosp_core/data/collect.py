"""Collect SafeReach datasets with the scripted behaviours (``fosp collect``).

Two mixes from the paper:
- ``real``: the real-robot dataset composition (App. D.1): of 200 trajectories, 120 safe and
  successful, 30 safe and failed, 40 unsafe and successful, 10 unsafe and failed. Other sizes
  keep these proportions.
- ``sim``: safe : unsafe : random = 1 : 1 : 1 (App. D.3).

An episode that must have a given outcome is re-drawn with the next seed until it has it
(rejection sampling). Candidates are simulated without rendering and only the accepted one is
replayed with the camera: rendering is most of the cost, and a seeded episode replays exactly.
Episodes run in worker processes; the parent writes every file in episode order.

Each file records the collection it belongs to (``meta["plan"]``: task, episodes, seed, mix or
behaviour, cover_layouts) and its place in it (``meta["intended"]["index"]``). Collecting
again with the same arguments therefore adds only the episodes that are missing (after an
interrupted run) and nothing once all are there; a different collection is refused in a
directory that holds one, unless it is asked for (``add``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from fosp_core.data.dataset import DatasetWriter, read_meta, trajectory_files
from fosp_core.envs.behaviours import make_behaviour
from fosp_core.envs.layouts import all_layouts
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import Layout, task_spec
from fosp_core.util.errors import UserError

# (behaviour, wanted success, wanted violation, share of the dataset) from App. D.1.
REAL_MIX = (
    ("safe", True, False, 120),
    ("safe", False, False, 30),
    ("unsafe", True, True, 40),
    ("unsafe", False, True, 10),
)
MAX_ATTEMPTS = 200
NOISE = 0.15


@dataclass(frozen=True)
class EpisodeSpec:
    index: int
    task: str
    behaviour: str
    base_seed: int
    want_success: bool | None = None
    want_violation: bool | None = None
    layout_index: int | None = None  # into ``all_layouts``; None: the one the seed draws


def episode_seed(base_seed: int, index: int, attempt: int) -> int:
    return int(np.random.SeedSequence([base_seed, index, attempt]).generate_state(1)[0])


def split_counts(total: int, shares: list[int]) -> list[int]:
    """Integer counts proportional to shares that add up to total (largest remainder)."""
    exact = np.asarray(shares, dtype=float) * total / sum(shares)
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def plan_episodes(task: str, episodes: int, seed: int, mix: str | None = None,
                  behaviour: str | None = None, cover_layouts: bool = False
                  ) -> list[EpisodeSpec]:
    """The list of episodes to collect, shuffled so the files interleave behaviours.

    ``cover_layouts`` gives the episodes of the ``safe`` behaviour the task's distinct
    layouts in turn, instead of the ones their seeds draw: 200 random draws leave some
    layouts with no safe demonstration or two, and others with 12 (``fosp eval
    --each-layout`` shows where that hurts). The other behaviours keep random layouts: an
    unsafe straight run cannot reach the target in many layouts, so a wanted outcome of
    theirs may not exist on a given one.
    """
    task_spec(task)  # fail early on an unknown task
    if (mix is None) == (behaviour is None):
        raise ValueError("give exactly one of mix or behaviour")
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    kinds: list[tuple[str, bool | None, bool | None]] = []
    if mix == "real":
        counts = split_counts(episodes, [share for *_, share in REAL_MIX])
        for (name, succ, viol, _), n in zip(REAL_MIX, counts):
            kinds += [(name, succ, viol)] * n
    elif mix == "sim":
        for name, n in zip(("safe", "unsafe", "random"), split_counts(episodes, [1, 1, 1])):
            kinds += [(name, None, None)] * n
    elif mix is not None:
        raise ValueError(f"unknown mix {mix!r}; choose real or sim")
    else:
        kinds = [(behaviour, None, None)] * episodes
    order = np.random.default_rng(seed).permutation(len(kinds))
    specs = [EpisodeSpec(i, task, *kinds[k][:1], seed, *kinds[k][1:])
             for i, k in enumerate(order)]
    if cover_layouts:
        count = len(_task_layouts(task))
        safe = [i for i, s in enumerate(specs) if s.behaviour == "safe"]
        for turn, i in enumerate(safe):
            specs[i] = replace(specs[i], layout_index=turn % count)
    return specs


def _give_up(spec: EpisodeSpec, rng: np.random.Generator) -> float | None:
    # A wanted failure: stop part-way, as the paper's operators sometimes did.
    if spec.want_success is False and spec.behaviour == "safe":
        return float(rng.uniform(0.3, 0.85))
    return None


def record_episode(env: SafeReachEnv, obs: dict, info: dict,
                   act: Callable[[dict, dict], np.ndarray], render: bool = True
                   ) -> tuple[dict, dict]:
    """Run an episode that was just reset (``obs``, ``info``) with ``act(obs, info) -> action``
    and keep it in the dataset's row convention (row 0 = reset, then one row per step with
    the action that led to it).

    Images come from the observation in image mode, else from ``render_image`` when
    ``render`` (a state-mode episode can still be stored with its camera frames).
    Returns the arrays and the last step's info.
    """
    rows = env.config.episode_steps + 1
    size = env.config.image_size
    arrays = {
        "image": np.zeros((rows, size, size, 3), np.uint8),
        "pose": np.zeros((rows, 6), np.float32),
        "action": np.zeros((rows, 6), np.float32),
        "reward": np.zeros(rows, np.float32),
        "cost": np.zeros(rows, np.float32),
        "state": np.zeros((rows, info["state"].shape[0]), np.float32),
    }

    def record(t: int) -> None:
        arrays["pose"][t], arrays["state"][t] = info["pose"], info["state"]
        if "image" in obs:
            arrays["image"][t] = obs["image"]
        elif render:
            arrays["image"][t] = env.render_image()

    record(0)
    for t in range(1, rows):
        action = act(obs, info)
        obs, reward, _, _, info = env.step(action)
        arrays["action"][t], arrays["reward"][t], arrays["cost"][t] = action, reward, info["cost"]
        record(t)
    return arrays, info


def rollout(env: SafeReachEnv, behaviour: str, seed: int, give_up: float | None = None,
            noise: float = NOISE, render: bool = True, layout: Layout | None = None
            ) -> tuple[dict, dict]:
    """One scripted episode and its metadata; on ``layout`` instead of the one ``seed``
    draws."""
    obs, info = env.reset(seed=seed, options={"layout": layout} if layout else None)
    agent = make_behaviour(behaviour, env, np.random.default_rng(seed), noise=noise,
                           give_up=give_up)
    agent.reset()  # plans its path in the layout the reset drew
    arrays, info = record_episode(env, obs, info, lambda _, info: agent.act(info["pose"]), render)
    meta = {
        "task": env.config.task,
        "behaviour": behaviour,
        "seed": seed,
        "layout": info["layout"],
        "noise": noise,
        "give_up": give_up,
        "success": bool(arrays["reward"].any()),
        "violation": bool(arrays["cost"].any()),
        "source": "sim",
    }
    return arrays, meta


# ---- worker processes ---------------------------------------------------------------------
_ENVS: dict[str, SafeReachEnv] = {}


def _env(task: str) -> SafeReachEnv:
    if task not in _ENVS:
        _ENVS[task] = SafeReachEnv(task=task, obs_mode="state")
    return _ENVS[task]


@functools.cache
def _task_layouts(task: str) -> tuple[Layout, ...]:
    return tuple(all_layouts(task_spec(task)))  # plans a path for each: once per process


def collect_episode(spec: EpisodeSpec) -> tuple[dict, dict]:
    """Run attempts until the outcome matches the spec, then record the accepted one."""
    env = _env(spec.task)
    wants = spec.want_success is not None or spec.want_violation is not None
    layout = None if spec.layout_index is None else _task_layouts(spec.task)[spec.layout_index]
    for attempt in range(MAX_ATTEMPTS):
        seed = episode_seed(spec.base_seed, spec.index, attempt)
        give_up = _give_up(spec, np.random.default_rng(seed + 1))
        if wants:
            _, meta = rollout(env, spec.behaviour, seed, give_up, render=False,
                              layout=layout)
            if spec.want_success is not None and meta["success"] != spec.want_success:
                continue
            if spec.want_violation is not None and meta["violation"] != spec.want_violation:
                continue
        arrays, meta = rollout(env, spec.behaviour, seed, give_up, render=True,
                               layout=layout)
        meta.update(attempts=attempt + 1, intended=asdict(spec))
        return arrays, meta
    raise RuntimeError(
        f"episode {spec.index}: no outcome success={spec.want_success} "
        f"violation={spec.want_violation} for behaviour {spec.behaviour} in {MAX_ATTEMPTS} tries"
    )


def collection_plan(task: str, episodes: int, seed: int, mix: str | None,
                    behaviour: str | None, cover_layouts: bool) -> dict:
    """What identifies a collection: the arguments that decide its episodes."""
    return {"task": task, "episodes": episodes, "seed": seed, "mix": mix,
            "behaviour": behaviour, "cover_layouts": cover_layouts}


def collected(out: Path, plan: dict) -> tuple[set[int], int]:
    """The episode indices of ``plan`` that ``out`` holds already, and how many of its files
    belong to no collection or another one. Files written before ``meta["plan"]`` existed
    belong to it when their intended episode is the plan's at that index."""
    specs = {spec.index: asdict(spec) for spec in plan_episodes(**plan)}
    done: set[int] = set()
    others = 0
    for path in trajectory_files(out) if out.is_dir() else []:
        meta = read_meta(path) or {}
        intended = meta.get("intended") or {}
        index = intended.get("index")
        if meta.get("plan", plan) == plan and specs.get(index) == intended:
            done.add(int(index))
        else:
            others += 1
    return done, others


def _describe(plan: dict) -> str:
    source = f"mix {plan['mix']}" if plan["mix"] else f"behaviour {plan['behaviour']}"
    return (f"{plan['episodes']} episodes of {plan['task']}, {source}, seed {plan['seed']}"
            + (", covering layouts" if plan["cover_layouts"] else ""))


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def collect(out: str | Path, task: str, episodes: int, seed: int = 0, mix: str | None = None,
            behaviour: str | None = None, workers: int | None = None, progress: bool = True,
            cover_layouts: bool = False, add: bool = False) -> int:
    """Collect into ``out`` the episodes of this collection it does not hold yet (see the
    module docstring); ``add`` allows a directory that holds other trajectories. Returns how
    many were written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory (--out is a dataset directory)")
    specs = plan_episodes(task, episodes, seed, mix=mix, behaviour=behaviour,
                          cover_layouts=cover_layouts)
    plan = collection_plan(task, episodes, seed, mix, behaviour, cover_layouts)
    done, others = collected(out, plan)
    if others and not add:
        raise UserError(f"{out}: holds {others} trajectories of another collection (or "
                        f"recorded ones); adding {_describe(plan)} would mix them: choose a "
                        "new --out, or pass --add to add them anyway")
    specs = [spec for spec in specs if spec.index not in done]
    if not specs:
        return 0
    writer = DatasetWriter(out)
    workers = max(1, min(workers or os.cpu_count() or 1, len(specs)))
    from tqdm import tqdm

    bar = tqdm(total=len(specs), desc=f"collect {task}", unit="ep", disable=not progress)
    if workers == 1:
        results = map(collect_episode, specs)
        pool = None
    else:
        # spawn: each worker owns a fresh OpenGL context; forking a process that has one is unsafe.
        # Ctrl-C reaches the whole process group: the main process stops the workers, which
        # ignore it rather than each printing a traceback.
        pool = mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint)
        results = pool.imap(collect_episode, specs)
    try:
        for arrays, meta in results:
            writer.add(arrays, dict(meta, plan=plan))
            bar.update(1)
            bar.set_postfix(success=f"{meta['success']:d}", violation=f"{meta['violation']:d}")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return len(specs)
