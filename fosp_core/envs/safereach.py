"""SafeReach: the simulated twin of the paper's real-robot task (App. D.1, Fig. 6-8).

A Franka Panda, seen by a static third-person camera, must touch a red target inside a
25 cm x 25 cm white-lined workspace without touching green obstacles.

Design decisions (each a stand-in for something on the real robot):
- The Panda model ships inside the gymnasium-robotics wheel (no download). Its collision meshes
  are also what the 64x64 camera renders: at that size they are indistinguishable from the
  visual meshes and render 2x faster (5 ms vs 11 ms on a 2-core CPU).
- Cartesian control is a mocap weld on the flange, like a Cartesian impedance controller: the
  links are simulated bodies driven by a soft constraint, so they push obstacles physically.
  Gravity compensation and a weak joint spring towards the home posture keep the redundant
  elbow from drifting, as the Franka's own null-space controller does.
- Every action goes through ``fosp_core.robot.geometry.next_target`` (bounded step, workspace box),
  the same function the ROS safety shield uses.
- Labels follow the paper's hand labelling (Fig. 8): cost = 1 from the step the arm first
  touches an obstacle until that obstacle has stopped moving; reward = 1 on every step the
  gripper touches the target. Episodes last 80 steps, with no early termination.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

# Headless rendering on CPU; must be set before mujoco is imported anywhere.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from fosp_core.envs.layouts import sample_layout  # noqa: E402
from fosp_core.envs.state_layout import MAX_OBSTACLES, SLOT_DIM, STATE_DIM  # noqa: E402
from fosp_core.envs.tasks import (  # noqa: E402
    EPISODE_STEPS,
    IMAGE_SIZE,
    START_XY,
    START_Z,
    TARGET_POINTS,
    WORKSPACE_CENTER,
    WORKSPACE_HALF,
    Layout,
    TaskSpec,
    obstacle_half_extent,
    target_half_extent,
    task_spec,
)
from fosp_core.robot.geometry import (  # noqa: E402
    TOOL_DOWN,
    Workspace,
    holds_still,
    limit_target,
    matrix_to_quat,
    next_target,
    pos_rot_from_pose,
    pose_from_pos_rot,
)

OBSTACLE_HEIGHT = 0.06  # above the highest fingertip the workspace box allows
GREEN = "0.15 0.65 0.2 1"
RED = "0.85 0.1 0.1 1"

# Obstacle counts as moving above these speeds (m/s, rad/s).
MOVING_LINEAR = 0.005
MOVING_ANGULAR = 0.05


# Static third-person camera, opposite the robot across the table like the paper's RealSense.
CAMERA_POS = (0.98, 0.30, 0.42)
CAMERA_LOOK_AT = (0.47, 0.0, 0.05)
CAMERA_FOVY = 42

def camera_pose(spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Camera position and the point it looks at: the usual ones, moved and turned about the
    vertical through the camera by the task's ``camera_shift`` and ``camera_turn``."""
    pos = np.add(CAMERA_POS, spec.camera_shift)
    turn = np.radians(spec.camera_turn)
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0],
                         [0.0, 0.0, 1.0]])
    look_at = pos + rotation @ np.subtract(CAMERA_LOOK_AT, CAMERA_POS)
    return pos, look_at


def _look_at_xyaxes(pos, target) -> str:
    """MJCF camera ``xyaxes`` (right and up vectors) for a camera at pos looking at target."""
    forward = np.subtract(target, pos) / np.linalg.norm(np.subtract(target, pos))
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.4f}" for v in (*right, *up))


@functools.lru_cache(maxsize=1)
def panda_asset_dir() -> Path:
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gymnasium-robotics is not installed; it ships the Panda model")
    path = Path(spec.submodule_search_locations[0]) / "envs/assets/kitchen_franka/franka_assets"
    if not (path / "chain.xml").is_file():
        raise RuntimeError(f"Panda model not found in gymnasium-robotics at {path}")
    return path


def _object_xml(name: str, shape: str, xy, rgba: str, movable: bool, size_z: float) -> str:
    hx, hy = obstacle_half_extent(shape) if movable else target_half_extent(shape)
    if shape == "box":
        geom = f'type="box" size="{hx} {hy} {size_z / 2}"'
    elif shape == "cylinder":
        geom = f'type="cylinder" size="{hx} {size_z / 2}"'
    else:
        raise ValueError(f"unknown shape {shape!r}")
    joint = '<freejoint/>' if movable else ""
    mass = 'mass="0.25"' if movable else ""
    return (
        f'<body name="{name}" pos="{xy[0]} {xy[1]} {size_z / 2}">{joint}'
        f'<geom name="{name}" {geom} rgba="{rgba}" {mass} friction="0.4 0.005 0.0001"/></body>'
    )


def build_xml(spec: TaskSpec) -> str:
    """Scene MJCF: table, white workspace lines, Panda, mocap weld, camera, target, obstacles."""
    assets = panda_asset_dir()
    cx, cy = WORKSPACE_CENTER
    h, w = WORKSPACE_HALF, 0.004
    lines = "".join(
        f'<geom type="box" pos="{x} {y} 0.0005" size="{sx} {sy} 0.0005" rgba="1 1 1 1" '
        'contype="0" conaffinity="0"/>'
        for x, y, sx, sy in [
            (cx - h, cy, w, h + w), (cx + h, cy, w, h + w),
            (cx, cy - h, h + w, w), (cx, cy + h, h + w, w),
        ]
    )  # fmt: skip
    target_rgba, obstacle_rgba = (GREEN, RED) if spec.swap_colours else (RED, GREEN)
    objects = [_object_xml("target", spec.target_shape, TARGET_POINTS[0], target_rgba, False,
                           0.04)]
    for i in range(spec.n_obstacles):
        objects.append(
            # Parked off the workspace until reset() places it, so it never disturbs the arm.
            _object_xml(f"obstacle{i}", spec.obstacle_shape, (0.3 + 0.1 * i, 0.4),
                        obstacle_rgba, True, OBSTACLE_HEIGHT)
        )
    quat = " ".join(f"{v:.6f}" for v in matrix_to_quat(TOOL_DOWN))
    camera_pos, look_at = camera_pose(spec)
    ambient, diffuse = (" ".join([f"{level * spec.light:.3f}"] * 3) for level in (0.45, 0.5))
    if spec.table == "checker":
        cloth = ('<asset><texture name="cloth" type="2d" builtin="checker" '
                 'rgb1="0.55 0.45 0.35" rgb2="0.42 0.4 0.5" width="256" height="256"/>'
                 '<material name="cloth" texture="cloth" texrepeat="14 14"/></asset>')
        table_look = 'material="cloth"'
    elif spec.table == "plain":
        cloth, table_look = "", 'rgba="0.55 0.45 0.35 1"'
    else:
        raise ValueError(f"unknown table {spec.table!r}")
    return f"""
<mujoco model="safereach">
  <include file="{assets}/assets.xml"/>
  {cloth}
  <compiler angle="radian" meshdir="{assets}/meshes"/>
  <option timestep="0.002"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="{ambient}" diffuse="{diffuse}" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light pos="0.6 0.2 1.6" dir="-0.1 -0.1 -1" diffuse="{diffuse}" castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.3 0.3 0.32 1"/>
    <geom name="table" type="box" pos="0.45 0 -0.02" size="0.55 0.5 0.02"
          {table_look} friction="0.4 0.005 0.0001"/>
    {lines}
    <body name="panda_base" pos="0 0 0">
      <include file="{assets}/chain.xml"/>
    </body>
    <body name="ee_target" mocap="true" pos="{START_XY[0]} {START_XY[1]} {START_Z}"
          quat="{quat}"/>
    <camera name="third_person" pos="{camera_pos[0]:.4f} {camera_pos[1]:.4f} {camera_pos[2]:.4f}"
            xyaxes="{_look_at_xyaxes(camera_pos, look_at)}" fovy="{CAMERA_FOVY}"/>
    {''.join(objects)}
  </worldbody>
  <equality>
    <weld body1="ee_target" body2="panda0_link7" relpose="0 0 -0.21 1 0 0 0" solref="0.02 1"/>
  </equality>
</mujoco>"""


def compile_model(spec: TaskSpec) -> mujoco.MjModel:
    """Compile the scene, with gravity compensation on the arm's links only.

    Gravity compensation must be set before compiling: the compiled model caches how many
    bodies have it, so setting ``body_gravcomp`` afterwards silently does nothing.
    """
    mj_spec = mujoco.MjSpec.from_string(build_xml(spec))
    for body in mj_spec.bodies:
        if body.name.startswith("panda0_"):
            body.gravcomp = 1.0
    return mj_spec.compile()


@dataclass
class SafeReachConfig:
    """Environment settings shared by the CLI, the sim_robot node and the launch files."""

    task: str = "safereach"
    obs_mode: str = "image"  # "image": 64x64 RGB + pose; "state": privileged vector
    image_size: int = IMAGE_SIZE
    episode_steps: int = EPISODE_STEPS
    control_dt: float = 0.1  # seconds per action (10 Hz, the policy's control rate)
    workspace: Workspace = field(default_factory=Workspace)


def load_env_config(path: str | os.PathLike) -> SafeReachConfig:
    """The ``env`` section of a project YAML file such as ``config/safereach.yaml``."""
    from fosp_core.util.config import from_dict
    from fosp_core.util.files import read_mapping

    data = read_mapping(path)
    return from_dict(SafeReachConfig, data.get("env") or {}, path="env")


class SafeReachEnv(gym.Env):
    """Gymnasium env. ``step`` returns the cost in ``info["cost"]`` (Safety-Gymnasium style).

    ``info`` always carries ``pose``, ``state``, ``cost``, ``touch_target``, ``touch_obstacle``
    and the layout, so a recorder can store every modality whatever the observation mode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str | None = None, obs_mode: str | None = None,
                 config: SafeReachConfig | None = None):
        # Explicit arguments override the config, so callers can say SafeReachEnv("safereach").
        self.config = dataclasses.replace(
            config or SafeReachConfig(),
            **{k: v for k, v in (("task", task), ("obs_mode", obs_mode)) if v is not None},
        )
        if self.config.obs_mode not in ("image", "state"):
            raise ValueError(f"obs_mode must be 'image' or 'state', not {self.config.obs_mode!r}")
        self.spec_ = task_spec(self.config.task)
        self.workspace = self.config.workspace
        self.model = compile_model(self.spec_)
        self.data = mujoco.MjData(self.model)
        self._index_model()
        self._home_qpos = self._settle_home()
        self._renderer: mujoco.Renderer | None = None
        self._big_renderer: mujoco.Renderer | None = None
        self.substeps = int(round(self.config.control_dt / self.model.opt.timestep))

        size = self.config.image_size
        spaces = {
            "pose": gym.spaces.Box(-np.inf, np.inf, (6,), np.float32),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        }
        if self.config.obs_mode == "image":
            spaces = {
                "image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
                "pose": spaces["pose"],
            }
        else:
            spaces = {"state": spaces["state"]}
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
        self.layout: Layout | None = None
        self._t = 0
        self._held: np.ndarray | None = None  # where a run of zero actions holds the arm

    # ---- model bookkeeping -------------------------------------------------------------
    def _index_model(self) -> None:
        m = self.model
        self._site = m.site("end_effector").id
        self._flange = m.body("panda0_link7").id
        arm_bodies = {m.body(f"panda0_link{i}").id for i in range(8)}
        arm_bodies |= {m.body("panda0_leftfinger").id, m.body("panda0_rightfinger").id}
        gripper_bodies = {self._flange, m.body("panda0_leftfinger").id,
                          m.body("panda0_rightfinger").id}
        self._arm_geoms = np.array([g for g in range(m.ngeom) if m.geom_bodyid[g] in arm_bodies])
        self._gripper_geoms = np.array(
            [g for g in range(m.ngeom) if m.geom_bodyid[g] in gripper_bodies]
        )
        self._target_geom = m.geom("target").id
        self._target_body = m.body("target").id
        n = self.spec_.n_obstacles
        self._obstacle_geoms = np.array([m.geom(f"obstacle{i}").id for i in range(n)])
        self._obstacle_joints = [m.body(f"obstacle{i}").jntadr[0] for i in range(n)]
        self._obstacle_bodies = [m.body(f"obstacle{i}").id for i in range(n)]

        # Contacts: arm links do not collide with each other (as on the real arm's own
        # self-collision model) nor the base with the table; everything else does.
        # contype/conaffinity bits: 1 = scene objects, 2 = arm.
        for g in range(m.ngeom):
            if g in set(self._arm_geoms.tolist()):
                m.geom_contype[g], m.geom_conaffinity[g] = 2, 0
            elif m.geom_contype[g] or m.geom_conaffinity[g]:
                m.geom_contype[g], m.geom_conaffinity[g] = 1, 3
        for g in range(m.ngeom):
            if m.geom_bodyid[g] == m.body("panda0_link0").id:
                m.geom_contype[g], m.geom_conaffinity[g] = 0, 0

        # Render the collision meshes (group 3) and hide the heavy visual meshes (group 0).
        for g in self._arm_geoms:
            if m.geom_group[g] == 0:
                m.geom_group[g] = 4
            elif m.geom_group[g] == 3:
                m.geom_group[g], m.geom_rgba[g] = 0, (0.92, 0.92, 0.9, 1.0)
        dark = [m.body(n).id for n in ("panda0_link7", "panda0_leftfinger", "panda0_rightfinger")]
        for g in self._arm_geoms:
            if m.geom_bodyid[g] in dark and m.geom_group[g] == 0:
                m.geom_rgba[g] = (0.25, 0.25, 0.27, 1.0)

        self._arm_qadr = np.array([m.jnt_qposadr[m.joint(f"robot:panda0_joint{i}").id]
                                   for i in range(1, 8)])
        self._finger_qadr = np.array([m.jnt_qposadr[m.joint(f"robot:panda0_finger_joint{i}").id]
                                      for i in (1, 2)])

    def _settle_home(self) -> np.ndarray:
        """Joint posture with the EE at the start pose, found by letting the weld pull the arm."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_qadr] = [0.0, 0.3, 0.0, -2.0, 0.0, 1.3, -0.78]
        d.mocap_pos[0] = (*START_XY, START_Z)
        d.mocap_quat[0] = matrix_to_quat(TOOL_DOWN)
        for _ in range(1500):
            mujoco.mj_step(m, d)
        home = d.qpos[self._arm_qadr].copy()
        # Null-space spring towards home, and fingers held closed, like the real controller.
        for i in range(1, 8):
            j = m.joint(f"robot:panda0_joint{i}").id
            m.jnt_stiffness[j] = 2.0
            m.qpos_spring[m.jnt_qposadr[j]] = home[i - 1]
        for i in (1, 2):
            j = m.joint(f"robot:panda0_finger_joint{i}").id
            m.jnt_stiffness[j] = 200.0
            m.qpos_spring[m.jnt_qposadr[j]] = 0.0
        return home

    # ---- gym API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        m, d = self.model, self.data
        self.layout = options.get("layout") or sample_layout(self.spec_, self.np_random)
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_qadr] = self._home_qpos
        d.qpos[self._finger_qadr] = 0.0
        d.mocap_pos[0] = (*START_XY, START_Z)
        d.mocap_quat[0] = matrix_to_quat(TOOL_DOWN)
        # Static target: move its body in the model (it has no joint).
        m.body_pos[self._target_body][:2] = self.layout.target_xy
        for adr, (x, y) in zip(
            (m.jnt_qposadr[j] for j in self._obstacle_joints), self.layout.obstacle_xy
        ):
            d.qpos[adr:adr + 7] = (x, y, OBSTACLE_HEIGHT / 2, 1.0, 0.0, 0.0, 0.0)
        mujoco.mj_forward(m, d)
        self._t = 0
        self._held = None
        self._disturbed = np.zeros(self.spec_.n_obstacles, dtype=bool)
        pose = self.pose()
        return self._observation(pose), self._info(pose, 0.0, False, False)

    def step(self, action):
        """One control step from a normalised action (pose change in [-1, 1]^6).

        A run of zero actions holds the pose measured at its first step, as the safety
        shield does for the real arm (``next_target``'s ``held``). Re-anchored on the
        measured pose at every step, the hand's lag behind its target (the weld's tracking
        error under gravity) walked a held arm up to 2 cm and 0.13 rad over an episode,
        once into an obstacle.
        """
        target = next_target(self.pose(), action, self.workspace, held=self._held)
        self._held = target if holds_still(action) else None
        return self.step_target(target)

    def step_target(self, target: np.ndarray):
        """One control step towards an absolute Cartesian target, as a Franka controller takes.

        The target is limited again (box, one step from the measured pose): the sim_robot node
        receives targets over ROS and must not trust them any more than the real arm would.
        """
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        target = limit_target(self.pose(), target, self.workspace)
        pos, rot = pos_rot_from_pose(target)
        self.data.mocap_pos[0] = pos
        self.data.mocap_quat[0] = matrix_to_quat(rot)

        touch_target = False
        touched = np.zeros(self.spec_.n_obstacles, dtype=bool)
        # Check contacts every few physics steps so brief touches are not missed.
        chunk = 5
        for _ in range(0, self.substeps, chunk):
            mujoco.mj_step(self.model, self.data, nstep=chunk)
            hit_target, hit_obstacles = self._contacts()
            touch_target |= hit_target
            touched |= hit_obstacles

        # Fig. 8 labelling: cost stays 1 from the first touch until the obstacle is at rest.
        moving = self._obstacles_moving()
        self._disturbed = touched | (self._disturbed & moving)
        cost = float(self._disturbed.any())
        reward = float(touch_target)
        self._t += 1
        truncated = self._t >= self.config.episode_steps
        pose = self.pose()
        info = self._info(pose, cost, touch_target, bool(touched.any()))
        return self._observation(pose), reward, False, truncated, info

    def copy_state_from(self, other: SafeReachEnv) -> None:
        """Continue from where ``other`` (same task, reset to the same layout) is now: what if
        a different action were taken here (``benchmarks/foresight.py``)."""
        if other.layout is None or self.layout is None or \
                other.layout.to_dict() != self.layout.to_dict():
            raise ValueError("copy_state_from needs both envs reset to the same layout")
        mujoco.mj_copyData(self.data, self.model, other.data)
        self._t, self._disturbed = other._t, other._disturbed.copy()
        self._held = None if other._held is None else other._held.copy()

    # ---- sensing -----------------------------------------------------------------------
    def pose(self) -> np.ndarray:
        d = self.data
        rot = d.xmat[self._flange].reshape(3, 3)
        return pose_from_pos_rot(d.site_xpos[self._site], rot)

    def _contacts(self) -> tuple[bool, np.ndarray]:
        ncon = self.data.ncon
        touched = np.zeros(self.spec_.n_obstacles, dtype=bool)
        if ncon == 0:
            return False, touched
        pairs = self.data.contact.geom[:ncon]
        a, b = pairs[:, 0], pairs[:, 1]
        gripper_a, gripper_b = np.isin(a, self._gripper_geoms), np.isin(b, self._gripper_geoms)
        target = bool(np.any((gripper_a & (b == self._target_geom))
                             | (gripper_b & (a == self._target_geom))))
        arm_a, arm_b = np.isin(a, self._arm_geoms), np.isin(b, self._arm_geoms)
        for i, g in enumerate(self._obstacle_geoms):
            touched[i] = bool(np.any((arm_a & (b == g)) | (arm_b & (a == g))))
        return target, touched

    def _obstacles_moving(self) -> np.ndarray:
        d, m = self.data, self.model
        moving = np.zeros(self.spec_.n_obstacles, dtype=bool)
        for i, j in enumerate(self._obstacle_joints):
            v = d.qvel[m.jnt_dofadr[j]:m.jnt_dofadr[j] + 6]
            moving[i] = (np.linalg.norm(v[:3]) > MOVING_LINEAR
                         or np.linalg.norm(v[3:]) > MOVING_ANGULAR)
        return moving

    def obstacle_positions(self) -> np.ndarray:
        return np.array([self.data.xpos[b] for b in self._obstacle_bodies])

    def target_position(self) -> np.ndarray:
        return self.data.xpos[self._target_body].copy()

    def state_vector(self, pose: np.ndarray | None = None) -> np.ndarray:
        """Privileged state: pose, target xyz, and (x, y, z, present) per obstacle slot."""
        pose = self.pose() if pose is None else pose
        slots = np.zeros((MAX_OBSTACLES, SLOT_DIM))
        obstacles = self.obstacle_positions()
        slots[: len(obstacles), :3] = obstacles
        slots[: len(obstacles), 3] = 1.0
        return np.concatenate([pose, self.target_position(), slots.ravel()]).astype(np.float32)

    def render_image(self, size: int | None = None, camera: str = "third_person") -> np.ndarray:
        """RGB frame from the static camera; the 64x64 default is what the policy sees."""
        size = size or self.config.image_size
        if size == self.config.image_size:
            if self._renderer is None:
                self._renderer = mujoco.Renderer(self.model, size, size)
            renderer = self._renderer
        else:
            if self._big_renderer is None or self._big_renderer.width != size:
                if self._big_renderer is not None:
                    self._big_renderer.close()
                self._big_renderer = mujoco.Renderer(self.model, size, size)
            renderer = self._big_renderer
        renderer.update_scene(self.data, camera=camera)
        return renderer.render().copy()

    def render(self):
        return self.render_image()

    def _observation(self, pose: np.ndarray) -> dict:
        if self.config.obs_mode == "image":
            return {"image": self.render_image(), "pose": pose.astype(np.float32)}
        return {"state": self.state_vector(pose)}

    def _info(self, pose, cost: float, touch_target: bool, touch_obstacle: bool) -> dict:
        return {
            "pose": pose.astype(np.float32),
            "state": self.state_vector(pose),
            "cost": cost,
            "touch_target": touch_target,
            "touch_obstacle": touch_obstacle,
            "step": self._t,
            "layout": self.layout.to_dict() if self.layout else None,
        }

    def close(self):
        for r in (self._renderer, self._big_renderer):
            if r is not None:
                r.close()
        self._renderer = self._big_renderer = None


