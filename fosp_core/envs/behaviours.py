"""Scripted behaviours that stand in for the paper's teleoperated demonstrations.

- ``safe``: follows a planned path around the obstacles to the target (demonstration data);
- ``unsafe``: heads straight for the target, through whatever is in the way (violation data);
- ``random``: a smoothed random walk (App. D.3's random policy).

Each adds Gaussian action noise. ``give_up`` makes a safe or unsafe behaviour stop part-way
along its path and hover there, which is how the paper's "failure" trajectories look (the
operator did not reach the target). The behaviours see the true object positions, as a human
teleoperator does.
"""

from __future__ import annotations

import abc

import numpy as np

from fosp_core.envs.planner import DEMO_MARGINS, MARGIN, plan_path
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import START_Z
from fosp_core.robot.geometry import delta_to_action

BEHAVIOURS = ("safe", "unsafe", "random")
WAYPOINT_REACHED = 0.012  # metres


class Scripted(abc.ABC):
    """Waypoint follower shared by the safe and unsafe behaviours."""

    def __init__(self, env: SafeReachEnv, rng: np.random.Generator, noise: float = 0.15,
                 give_up: float | None = None):
        self.env, self.rng, self.noise, self.give_up = env, rng, noise, give_up
        self.waypoints: list[np.ndarray] = []

    @abc.abstractmethod
    def plan(self, start: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
        """Waypoints in the table plane from start to the target."""

    def reset(self) -> None:
        start = self.env.pose()[:2]
        target = self.env.target_position()[:2]
        self.waypoints = self.plan(start, target)
        if self.give_up is not None:
            self.waypoints = _truncate(start, self.waypoints, self.give_up)

    def act(self, pose: np.ndarray) -> np.ndarray:
        near = np.linalg.norm(self.waypoints[0] - pose[:2]) < WAYPOINT_REACHED
        while len(self.waypoints) > 1 and near:
            self.waypoints.pop(0)
            near = np.linalg.norm(self.waypoints[0] - pose[:2]) < WAYPOINT_REACHED
        goal_xy = self.waypoints[0]
        # Hold the approach height and the tool-down orientation; move in the table plane.
        delta = np.concatenate([goal_xy - pose[:2], [START_Z - pose[2]], -pose[3:]])
        # Full speed far away, proportional near the goal so the arm settles instead of bouncing.
        action = delta_to_action(delta, self.env.workspace)
        action += self.rng.normal(0.0, self.noise, size=6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class SafeBehaviour(Scripted):
    def plan(self, start, target):
        obstacles = self.env.obstacle_positions()[:, :2]
        for margin in (*DEMO_MARGINS, MARGIN):  # the widest berth the layout allows
            path = plan_path(start, target, obstacles, self.env.spec_, margin)
            if path is not None:
                return path
        return [target]


class UnsafeBehaviour(Scripted):
    def plan(self, start, target):
        return [target]


class RandomBehaviour:
    """Smoothed random actions: an AR(1) process keeps motion coherent like a wandering hand."""

    def __init__(self, env: SafeReachEnv, rng: np.random.Generator, noise: float = 0.15,
                 give_up: float | None = None):
        self.rng, self.noise = rng, noise
        self._a = np.zeros(6)

    def reset(self) -> None:
        self._a = np.zeros(6)

    def act(self, pose: np.ndarray) -> np.ndarray:
        self._a = 0.8 * self._a + 0.6 * self.rng.normal(size=6)
        self._a[3:] *= 0.3  # mostly translate, as an operator would
        return np.clip(self._a + self.rng.normal(0.0, self.noise, 6), -1, 1).astype(np.float32)


def _truncate(start: np.ndarray, waypoints: list[np.ndarray], fraction: float) -> list[np.ndarray]:
    """Keep the first ``fraction`` of the path's length; the end point becomes the last waypoint."""
    points = [np.asarray(start)] + list(waypoints)
    lengths = [np.linalg.norm(b - a) for a, b in zip(points[:-1], points[1:])]
    budget = fraction * sum(lengths)
    kept = []
    for a, b, length in zip(points[:-1], points[1:], lengths):
        if budget <= length:
            kept.append(a + (b - a) * (budget / max(length, 1e-9)))
            return kept
        kept.append(b)
        budget -= length
    return kept


def behaviour_rates(name: str, seeds: int, task: str = "safereach") -> tuple[float, float]:
    """(success rate, violating-episode rate) of a behaviour over seeds 0..seeds-1, state mode."""
    env = SafeReachEnv(task=task, obs_mode="state")
    successes = violations = 0
    for seed in range(seeds):
        _, info = env.reset(seed=seed)
        agent = make_behaviour(name, env, np.random.default_rng(seed))
        agent.reset()
        reward = cost = 0.0
        for _ in range(env.config.episode_steps):
            _, r, _, _, info = env.step(agent.act(info["pose"]))
            reward, cost = reward + r, cost + info["cost"]
        successes += reward > 0
        violations += cost > 0
    env.close()
    return successes / seeds, violations / seeds


def make_behaviour(name: str, env: SafeReachEnv, rng: np.random.Generator, noise: float = 0.15,
                   give_up: float | None = None):
    classes = {"safe": SafeBehaviour, "unsafe": UnsafeBehaviour, "random": RandomBehaviour}
    if name not in classes:
        raise ValueError(f"unknown behaviour {name!r}; choose one of {', '.join(BEHAVIOURS)}")
    return classes[name](env, rng, noise=noise, give_up=give_up)
