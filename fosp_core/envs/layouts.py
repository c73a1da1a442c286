"""The layouts of a task that the arm can solve: a way around the obstacles must exist.

``sample_layout`` draws one as the twin's reset does; ``all_layouts`` lists every one a task
has (27-33), for evaluating each once.
"""

from __future__ import annotations

import itertools

import numpy as np

from fosp_core.envs.planner import plan_path
from fosp_core.envs.tasks import (
    OBSTACLE_POINTS,
    START_XY,
    TARGET_POINTS,
    Layout,
    TaskSpec,
    blocking_points,
    make_layout,
)


def _passable(layout: Layout, spec: TaskSpec) -> bool:
    return plan_path(START_XY, layout.target_xy, layout.obstacle_xy, spec) is not None


def sample_layout(spec: TaskSpec, rng: np.random.Generator) -> Layout:
    """Target at one of 3 points; obstacles at distinct points of 6 (App. D.1).

    The first obstacle always stands on the straight line from the start to the target, as in
    the paper's setup where the arm has to go around; the others are random. Layouts in which
    no way around exists are redrawn (only possible with 3 obstacles in one row).
    """
    while True:
        ti = int(rng.integers(len(TARGET_POINTS)))
        first = int(rng.choice(blocking_points(spec, TARGET_POINTS[ti])))
        rest = [i for i in range(len(OBSTACLE_POINTS)) if i != first]
        others = rng.choice(rest, size=spec.n_obstacles - 1, replace=False).tolist()
        layout = make_layout(ti, [first] + [int(i) for i in others], spec)
        if _passable(layout, spec):
            return layout


def all_layouts(spec: TaskSpec) -> list[Layout]:
    """Every distinct layout ``sample_layout`` can draw for this task, once, ordered by key.

    There are few (27-33 per task): random evaluation seeds repeat them, and a deterministic
    policy does the same on every repeat, so evaluating each once (``fosp eval
    --each-layout``) shows which layouts a policy fails on and weighs them equally.
    """
    found: dict[tuple, Layout] = {}
    for ti, target in enumerate(TARGET_POINTS):
        for first in blocking_points(spec, target):
            rest = [i for i in range(len(OBSTACLE_POINTS)) if i != first]
            for others in itertools.combinations(rest, spec.n_obstacles - 1):
                layout = make_layout(ti, [first, *others], spec)
                if layout.key not in found and _passable(layout, spec):
                    found[layout.key] = layout
    return [found[key] for key in sorted(found)]
