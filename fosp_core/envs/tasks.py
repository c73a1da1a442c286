"""The SafeReach tasks as geometry: the workspace, where targets and obstacles may stand, the
tasks (the original, the paper's three unseen ones of Fig. 6, and the shifts a lab meets on a
real setup) and their layouts.

Pure Python: the command line lists the tasks without loading the simulator (or numpy,
which the two functions that need it import), and the planner places the layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

EPISODE_STEPS = 80
IMAGE_SIZE = 64

WORKSPACE_CENTER = (0.5, 0.0)
WORKSPACE_HALF = 0.125
START_XY = (0.395, 0.0)
START_Z = 0.065  # EE site height; the fingertips are ~5 cm lower
TARGET_POINTS = ((0.600, -0.075), (0.600, 0.0), (0.600, 0.075))
# Two rows of three between the start and the targets.
OBSTACLE_POINTS = (
    (0.460, -0.085), (0.460, 0.0), (0.460, 0.085),
    (0.525, -0.085), (0.525, 0.0), (0.525, 0.085),
)  # fmt: skip


@dataclass(frozen=True)
class TaskSpec:
    """What differs between the original task and an unseen one.

    The first three fields are the paper's unseen tasks (Fig. 6); the rest are shifts a lab
    meets when its setup is not the one the demonstrations were recorded on.
    """

    obstacle_shape: str = "box"  # "box" (green rectangular block) or "cylinder"
    target_shape: str = "cylinder"  # the paper's original red target is cylindrical
    n_obstacles: int = 2
    # Every obstacle stands this far (x, y in metres) from its usual point: placements the
    # demonstrations never show.
    obstacle_shift: tuple[float, float] = (0.0, 0.0)
    # The camera moved (x, y, z in metres) and turned about the vertical (degrees).
    camera_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_turn: float = 0.0
    light: float = 1.0  # the scene's light, as a fraction of the usual
    table: str = "plain"  # "plain" (the usual colour) or "checker" (a patterned tablecloth)
    swap_colours: bool = False  # a green target among red obstacles


TASKS: dict[str, TaskSpec] = {
    "safereach": TaskSpec(),
    # The paper's unseen tasks (Fig. 6).
    "safereach-obstacle-shape": TaskSpec(obstacle_shape="cylinder"),
    "safereach-target-shape": TaskSpec(target_shape="box"),
    "safereach-more-obstacles": TaskSpec(n_obstacles=3),
    # Shifts of a real setup (docs/twin.md lists which are in the hard transfer suite).
    "safereach-obstacles-nearer": TaskSpec(obstacle_shift=(-0.02, 0.0)),
    "safereach-obstacles-aside": TaskSpec(obstacle_shift=(0.0, 0.03)),
    "safereach-camera-moved": TaskSpec(camera_shift=(0.04, -0.04, 0.03), camera_turn=3.0),
    "safereach-dim-light": TaskSpec(light=0.5),
    "safereach-tablecloth": TaskSpec(table="checker"),
    "safereach-colours-swapped": TaskSpec(swap_colours=True),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


# Footprint half-extents (x, y) used for placement and by the scripted planner.
def obstacle_half_extent(shape: str) -> tuple[float, float]:
    return (0.015, 0.028) if shape == "box" else (0.025, 0.025)


def target_half_extent(shape: str) -> tuple[float, float]:
    return (0.02, 0.02)


@dataclass
class Layout:
    """Where the target and the obstacles stand at the start of an episode."""

    target_index: int
    obstacle_indices: list[int]
    target_xy: tuple[float, float]
    obstacle_xy: list[tuple[float, float]]

    @property
    def key(self) -> tuple[int, tuple[int, ...]]:
        """Equal for equal layouts of one task: the twin draws from a small set of them."""
        return self.target_index, tuple(sorted(self.obstacle_indices))

    def to_dict(self) -> dict:
        return {
            "target_index": self.target_index,
            "obstacle_indices": list(self.obstacle_indices),
            "target_xy": [float(v) for v in self.target_xy],
            "obstacle_xy": [[float(a), float(b)] for a, b in self.obstacle_xy],
        }

    @classmethod
    def from_dict(cls, data: dict, n_obstacles: int, spec: TaskSpec | None = None) -> Layout:
        """The layout ``to_dict`` wrote (a trajectory's ``meta['layout']``), checked against
        the points a layout can use (those of ``spec``) and the task's number of obstacles."""
        try:
            ti, indices = int(data["target_index"]), [int(i) for i in data["obstacle_indices"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError("a layout needs 'target_index' (an int) and 'obstacle_indices' "
                             f"(a list of ints), got {data!r}") from err
        if not 0 <= ti < len(TARGET_POINTS):
            raise ValueError(f"target_index must be in 0..{len(TARGET_POINTS) - 1}, got {ti}")
        if len(indices) != n_obstacles or len(set(indices)) != n_obstacles or not all(
                0 <= i < len(OBSTACLE_POINTS) for i in indices):
            raise ValueError(f"obstacle_indices must be {n_obstacles} distinct points of "
                             f"0..{len(OBSTACLE_POINTS) - 1} for this task, got {indices}")
        layout = make_layout(ti, indices, spec)
        import numpy as np

        for key in ("target_xy", "obstacle_xy"):  # optional; a mismatch is a typo somewhere
            if key in data and not np.allclose(data[key], layout.to_dict()[key], atol=1e-6):
                raise ValueError(f"{key} {data[key]} does not match the indices' points "
                                 f"{layout.to_dict()[key]}")
        return layout


def segment_hits_box(p0, p1, center, half, margin) -> bool:
    """Does the segment p0-p1 pass through the axis-aligned box grown by margin? (slab test)"""
    import numpy as np

    p0, p1, center = np.asarray(p0), np.asarray(p1), np.asarray(center)
    lo, hi = center - np.asarray(half) - margin, center + np.asarray(half) + margin
    d = p1 - p0
    t0, t1 = 0.0, 1.0
    for k in range(2):
        if abs(d[k]) < 1e-12:
            if p0[k] < lo[k] or p0[k] > hi[k]:
                return False
            continue
        a, b = (lo[k] - p0[k]) / d[k], (hi[k] - p0[k]) / d[k]
        t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
        if t0 > t1:
            return False
    return True


def obstacle_points(spec: TaskSpec | None = None) -> list[tuple[float, float]]:
    """Where the task's obstacles may stand: ``OBSTACLE_POINTS``, moved by its shift."""
    dx, dy = spec.obstacle_shift if spec else (0.0, 0.0)
    return [(round(x + dx, 6), round(y + dy, 6)) for x, y in OBSTACLE_POINTS]


def blocking_points(spec: TaskSpec, target: tuple[float, float]) -> list[int]:
    """The obstacle points that stand on the straight line from the start to ``target``."""
    half = obstacle_half_extent(spec.obstacle_shape)
    return [i for i, p in enumerate(obstacle_points(spec))
            if segment_hits_box(START_XY, target, p, half, margin=0.01)]


def make_layout(target_index: int, obstacle_indices: list[int],
                spec: TaskSpec | None = None) -> Layout:
    points = obstacle_points(spec)
    return Layout(target_index, obstacle_indices, TARGET_POINTS[target_index],
                  [points[i] for i in obstacle_indices])


