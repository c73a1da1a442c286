"""The simulated SafeReach twin: spaces, determinism, tasks and the Fig. 8 labelling."""

import numpy as np
import pytest

from fosp_core.envs.behaviours import behaviour_rates, make_behaviour
from fosp_core.envs.layouts import all_layouts, sample_layout
from fosp_core.envs.planner import DEMO_MARGINS, GRIPPER_HALF, MARGIN, plan_path
from fosp_core.envs.safereach import STATE_DIM, SafeReachEnv
from fosp_core.envs.tasks import (
    EPISODE_STEPS,
    OBSTACLE_POINTS,
    START_XY,
    TARGET_POINTS,
    TASKS,
    Layout,
    task_spec,
)


@pytest.fixture(scope="module")
def env():
    e = SafeReachEnv(task="safereach", obs_mode="image")
    yield e
    e.close()


def test_spaces_and_episode_length(env):
    obs, info = env.reset(seed=1)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["pose"].shape == (6,) and info["state"].shape == (STATE_DIM,)
    assert env.observation_space.contains(obs)
    truncated = False
    for t in range(EPISODE_STEPS):
        assert not truncated, f"truncated early at step {t}"
        _, _, terminated, truncated, info = env.step(np.zeros(6, np.float32))
        assert not terminated
    assert truncated and info["step"] == EPISODE_STEPS


def test_image_shows_red_target_and_green_obstacles(env):
    obs, _ = env.reset(seed=0)
    img = obs["image"].astype(int)
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    green = (img[..., 1] > 120) & (img[..., 0] < 100) & (img[..., 2] < 100)
    assert red.sum() > 10 and green.sum() > 20


def test_same_seed_same_frames_different_seed_differs():
    a, b = SafeReachEnv(), SafeReachEnv()
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 6)).astype(np.float32)
    frames = []
    for e in (a, b):
        obs, _ = e.reset(seed=7)
        seq = [obs["image"]]
        for act in actions:
            obs, *_ = e.step(act)
            seq.append(obs["image"])
        frames.append(np.stack(seq))
    np.testing.assert_array_equal(frames[0], frames[1])
    layouts = {tuple(a.reset(seed=s)[1]["layout"]["obstacle_indices"]) for s in range(10)}
    assert len(layouts) > 1


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task(task):
    spec = task_spec(task)
    e = SafeReachEnv(task=task, obs_mode="state")
    obs, info = e.reset(seed=3)
    assert obs["state"].shape == (STATE_DIM,)
    slots = obs["state"][9:].reshape(4, 4)
    assert slots[:, 3].sum() == spec.n_obstacles  # presence flags
    assert len(info["layout"]["obstacle_xy"]) == spec.n_obstacles
    m = e.model
    target_type = m.geom_type[m.geom("target").id]
    obstacle_type = m.geom_type[m.geom("obstacle0").id]
    names = {2: "sphere", 5: "cylinder", 6: "box"}
    assert names[int(target_type)] == spec.target_shape
    assert names[int(obstacle_type)] == spec.obstacle_shape
    e.step(np.zeros(6))
    e.close()


def test_unknown_task_and_mode_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task"):
        SafeReachEnv(task="reach")
    with pytest.raises(ValueError, match="obs_mode"):
        SafeReachEnv(obs_mode="depth")


@pytest.mark.parametrize("seed", range(30))
def test_layouts_use_placement_points_and_block_the_straight_line(seed):
    spec = TASKS["safereach-more-obstacles"]
    layout = sample_layout(spec, np.random.default_rng(seed))
    assert layout.target_xy in TARGET_POINTS
    assert len(set(layout.obstacle_indices)) == spec.n_obstacles
    assert all(p in OBSTACLE_POINTS for p in layout.obstacle_xy)
    # the straight line is blocked, but the planner finds a way around
    assert plan_path(START_XY, layout.target_xy, layout.obstacle_xy[:1], spec)[0] is not None
    assert len(plan_path(START_XY, layout.target_xy, layout.obstacle_xy, spec)) > 1


@pytest.mark.parametrize("task", ["safereach", "safereach-more-obstacles"])
def test_all_layouts_are_those_sampling_draws_once_each(task):
    spec = TASKS[task]
    layouts = all_layouts(spec)
    keys = [layout.key for layout in layouts]
    assert keys == sorted(set(keys))
    rng = np.random.default_rng(0)
    assert set(keys) == {sample_layout(spec, rng).key for _ in range(1500)}
    for layout in layouts:
        assert layout.target_xy == TARGET_POINTS[layout.target_index]
        assert layout.obstacle_xy == [OBSTACLE_POINTS[i] for i in layout.obstacle_indices]
    if task == "safereach":
        # By hand: two obstacle points stand on each target's straight line (the centre
        # target's column; a side target's first-row centre and second-row side point), so
        # each target has 5 + 5 - 1 pairs holding one of them, all passable: 3 x 9.
        assert len(layouts) == 27


def test_layout_from_dict_round_trips_and_rejects_bad_layouts():
    layout = sample_layout(TASKS["safereach-more-obstacles"], np.random.default_rng(3))
    assert Layout.from_dict(layout.to_dict(), 3) == layout
    assert Layout.from_dict({"target_index": 2, "obstacle_indices": [5, 1]}, 2) == \
        _layout(2, [5, 1])
    for bad, match in [({"target_index": 3, "obstacle_indices": [0, 1]}, "target_index"),
                       ({"target_index": 0, "obstacle_indices": [0]}, "2 distinct"),
                       ({"target_index": 0, "obstacle_indices": [1, 1]}, "2 distinct"),
                       ({"target_index": 0, "obstacle_indices": [0, 6]}, "2 distinct"),
                       ({"obstacle_indices": [0, 1]}, "needs 'target_index'"),
                       ({"target_index": 0, "obstacle_indices": "ab"}, "needs"),
                       (dict(layout.to_dict(), target_xy=[0.5, 0.0]), "target_xy")]:
        with pytest.raises(ValueError, match=match):
            Layout.from_dict(bad, 2 if "target_xy" not in bad else 3)


def _layout(target_index, obstacle_indices):
    return Layout(target_index, obstacle_indices, TARGET_POINTS[target_index],
                  [OBSTACLE_POINTS[i] for i in obstacle_indices])


def test_cost_labelling_follows_fig8():
    """Cost is 1 from the first touch until the pushed obstacle is at rest, else 0."""
    e = SafeReachEnv(obs_mode="state")
    # Obstacle straight ahead of the start; drive into it, then back off and wait.
    _, info = e.reset(seed=0, options={"layout": _layout(1, [1, 3])})
    push = np.array([1, 0, 0, 0, 0, 0], np.float32)
    back = -push
    costs, touches, moving = [], [], []
    for t in range(40):
        _, _, _, _, info = e.step(push if t < 12 else back if t < 20 else np.zeros(6))
        costs.append(info["cost"])
        touches.append(info["touch_obstacle"])
        moving.append(bool(e._obstacles_moving().any()))
    costs = np.array(costs)
    first = touches.index(True)
    assert first > 0 and np.all(costs[:first] == 0)  # nothing before the first touch
    assert costs[first] == 1
    # While labelled, every step is a touch or follows a labelled step with the obstacle moving.
    for t in range(first + 1, len(costs)):
        expected = touches[t] or (costs[t - 1] == 1 and moving[t])
        assert costs[t] == float(expected), f"step {t}"
    assert costs[-1] == 0  # the obstacle came to rest after the arm backed off
    moved = np.linalg.norm(e.obstacle_positions()[0, :2] - OBSTACLE_POINTS[1])
    assert moved > 0.01  # touching displaced it: obstacles are movable bodies


def test_reward_while_gripper_touches_target():
    e = SafeReachEnv(obs_mode="state")
    # No obstacle between the start and the middle target: go straight and keep pushing.
    _, info = e.reset(seed=0, options={"layout": _layout(1, [0, 2])})
    rewards, touch = [], []
    for _ in range(30):
        _, r, _, _, info = e.step(np.array([1, 0, 0, 0, 0, 0], np.float32))
        rewards.append(r)
        touch.append(info["touch_target"])
        assert info["cost"] == 0
    assert rewards == [float(t) for t in touch]
    assert sum(rewards) >= 5  # it stays in contact once there
    assert rewards[0] == 0  # and is not rewarded before getting there


@pytest.mark.parametrize("move", [[1, 0, 0, 0, 0, 0], [0.5, -1, -1, 0, 0, 1],
                                  [1, 0, -1, 0.5, 0.5, 1]])
def test_zero_actions_hold_the_arm_still(move):
    """A policy's stop or hold sends zeros for the rest of an episode: the arm must stay.

    Re-anchoring every step on the measured pose (which lags the target) crept 0.8-3.9 cm
    and 0.10-0.20 rad over these 70 steps; holding the first held pose keeps it within
    1.1 mm and 0.01 rad."""
    e = SafeReachEnv(obs_mode="state")
    e.reset(seed=0, options={"layout": _layout(1, [0, 2])})
    for _ in range(5):
        e.step(np.array(move, np.float32))
    poses = np.array([e.step(np.zeros(6, np.float32))[4]["pose"] for _ in range(70)])
    assert np.abs(poses[:, :3] - poses[0, :3]).max() < 0.003
    assert np.abs(poses[:, 3:] - poses[0, 3:]).max() < 0.02
    # A moving action ends the hold.
    moved = e.step(np.array([-1, 0, 0, 0, 0, 0], np.float32))[4]["pose"]
    assert moved[0] < poses[-1, 0] - 0.005


def test_actions_never_leave_workspace():
    e = SafeReachEnv(obs_mode="state")
    _, info = e.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(60):
        action = rng.choice([-1e6, 1e6, np.nan, 0.0], size=6)
        _, _, _, _, info = e.step(action)
        pose = info["pose"]
        # Tracking overshoot of the soft weld is small; the commanded target is always inside.
        assert np.all(pose[:2] >= np.array([0.375, -0.125]) - 0.02)
        assert np.all(pose[:2] <= np.array([0.625, 0.125]) + 0.02)


@pytest.mark.parametrize("name,min_success,max_violation,min_violation", [
    ("safe", 0.9, 0.1, 0.0),
    ("unsafe", 0.0, 1.0, 0.5),
])
def test_scripted_behaviour_rates(name, min_success, max_violation, min_violation):
    success, violation = behaviour_rates(name, seeds=20)
    assert success >= min_success
    assert min_violation <= violation <= max_violation


def test_safe_demonstrator_keeps_a_wide_berth_where_the_layout_allows():
    """Gap between the fingers' and the obstacles' footprints along the noise-free safe path:
    at least the wide clearance (less the corner the waypoint switch cuts) where such a path
    exists, and never below the 12 mm every layout guarantees."""
    e = SafeReachEnv(task="safereach", obs_mode="state")
    half = np.array([0.015, 0.028])  # box obstacle footprint
    kinds = set()
    for seed in range(8):
        _, info = e.reset(seed=seed)
        layout = e.layout
        wide = plan_path(START_XY, layout.target_xy, layout.obstacle_xy, e.spec_,
                         DEMO_MARGINS[0]) is not None
        kinds.add(wide)
        demo = make_behaviour("safe", e, np.random.default_rng(seed), noise=0.0)
        demo.reset()
        gap = np.inf
        for _ in range(EPISODE_STEPS):
            _, _, _, _, info = e.step(demo.act(info["pose"]))
            for centre in layout.obstacle_xy:
                apart = np.abs(info["pose"][:2] - np.array(centre)) - (half + GRIPPER_HALF)
                gap = min(gap, float(apart.max()))
        least = DEMO_MARGINS[0] - GRIPPER_HALF if wide else MARGIN - GRIPPER_HALF
        assert gap >= least.min() - 0.005, (seed, wide, gap)
    e.close()
    assert kinds == {True, False}  # both the wide path and the fallback were exercised


def test_shipped_yaml_matches_defaults_and_is_checked(tmp_path):
    from pathlib import Path

    from fosp_core.envs.safereach import SafeReachConfig, load_env_config
    from fosp_core.util.config import ConfigError

    shipped = Path(__file__).resolve().parents[1] / "config" / "safereach.yaml"
    assert load_env_config(shipped) == SafeReachConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("env:\n  workspace:\n    hgih: [1, 2]\n")
    with pytest.raises(ConfigError, match="hgih"):
        load_env_config(bad)
    small = tmp_path / "small.yaml"
    small.write_text("env:\n  task: safereach-more-obstacles\n  obs_mode: state\n")
    e = SafeReachEnv(config=load_env_config(small))
    assert e.spec_.n_obstacles == 3 and "state" in e.observation_space.spaces


def _first_frame(task: str, seed: int = 3):
    env = SafeReachEnv(task=task, obs_mode="image")
    obs, info = env.reset(seed=seed)
    return env, obs, info


def test_placement_shifts_move_every_obstacle_and_keep_every_layout_passable():
    from fosp_core.envs.tasks import obstacle_points, task_spec

    for task in ("safereach-obstacles-nearer", "safereach-obstacles-aside"):
        spec = task_spec(task)
        shifted = obstacle_points(spec)
        assert not set(shifted) & set(OBSTACLE_POINTS)  # placements the data never shows
        assert np.allclose(np.subtract(shifted, OBSTACLE_POINTS), spec.obstacle_shift)
        layouts = all_layouts(spec)
        assert len(layouts) >= 12
        env, _, _ = _first_frame(task)
        assert np.allclose(env.obstacle_positions()[:, :2], env.layout.obstacle_xy, atol=1e-4)
        assert all(p in shifted for p in env.layout.obstacle_xy)


@pytest.mark.parametrize("task", ["safereach-camera-moved", "safereach-dim-light",
                                  "safereach-tablecloth", "safereach-colours-swapped"])
def test_visual_shifts_change_the_image_and_nothing_else(task):
    base_env, base_obs, base_info = _first_frame("safereach")
    env, obs, info = _first_frame(task)
    assert env.layout.key == base_env.layout.key
    assert np.array_equal(info["state"], base_info["state"])  # same scene, other pixels
    changed = np.abs(obs["image"].astype(int) - base_obs["image"]).max(-1) > 30
    assert changed.mean() > 0.02, f"{task}: only {changed.mean():.1%} of pixels changed"


def test_dim_light_is_darker_and_swapped_colours_swap_red_and_green():
    _, base, _ = _first_frame("safereach")
    _, dim, _ = _first_frame("safereach-dim-light")
    assert dim["image"].mean() < 0.75 * base["image"].mean()
    _, swapped, _ = _first_frame("safereach-colours-swapped")

    def count(image, channel):  # pixels clearly of one primary colour
        others = [c for c in range(3) if c != channel]
        return int((image[..., channel].astype(int) - image[..., others].max(-1) > 60).sum())

    red, green = count(base["image"], 0), count(base["image"], 1)
    assert red > 0 and green > 0
    assert count(swapped["image"], 0) == pytest.approx(green, rel=0.25)
    assert count(swapped["image"], 1) == pytest.approx(red, rel=0.25)
