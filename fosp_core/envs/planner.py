"""Shortest collision-free path in the table plane, for the scripted safe behaviour.

A visibility graph: nodes are the start, the goal and the corners of every obstacle footprint
grown by the gripper's half-width plus a clearance; edges are straight segments that cross no
grown footprint; Dijkstra picks the shortest. Cylinders are treated as their bounding squares,
which only adds clearance.
"""

from __future__ import annotations

import heapq

import numpy as np

from fosp_core.envs.tasks import (
    WORKSPACE_CENTER,
    WORKSPACE_HALF,
    TaskSpec,
    obstacle_half_extent,
    segment_hits_box,
)

# Half-extent (x, y) of the closed fingers around the EE point (they spread along y) plus a
# clearance for action noise and tracking lag. MARGIN is the least a path must keep: layouts
# without such a path are redrawn (``sample_layout``).
GRIPPER_HALF = np.array([0.022, 0.032])
CLEARANCE = 0.012
MARGIN = GRIPPER_HALF + CLEARANCE
# Clearances (x, y) the scripted demonstrator keeps where the layout allows, widest first, as
# a human operator gives obstacles a wide berth (more sideways, where the fingers spread).
# With 12 mm only, policies learned from the demonstrations cut the corners by 1-2 cm and
# touched the obstacles (docs/implementation.md, "clearances").
DEMO_MARGINS = (GRIPPER_HALF + np.array([0.025, 0.04]), GRIPPER_HALF + np.array([0.018, 0.018]))


def plan_path(start, goal, obstacles_xy, spec: TaskSpec, margin: np.ndarray = MARGIN):
    """Waypoints (list of xy arrays, start excluded, goal included) or None if blocked."""
    half = np.asarray(obstacle_half_extent(spec.obstacle_shape))
    centers = [np.asarray(c, dtype=float) for c in obstacles_xy]
    lo = np.asarray(WORKSPACE_CENTER) - WORKSPACE_HALF
    hi = np.asarray(WORKSPACE_CENTER) + WORKSPACE_HALF

    def free(p0, p1) -> bool:
        # A hair less than the corner offset so that paths may run along the grown edges.
        return not any(segment_hits_box(p0, p1, c, half, margin - 1e-4) for c in centers)

    nodes = [np.asarray(start, dtype=float), np.asarray(goal, dtype=float)]
    for c in centers:
        for sx in (-1, 1):
            for sy in (-1, 1):
                corner = c + np.array([sx, sy]) * (half + margin + 1e-3)
                if np.all(corner >= lo) and np.all(corner <= hi):
                    nodes.append(corner)

    dist = {0: 0.0}
    previous: dict[int, int] = {}
    queue = [(0.0, 0)]
    done = set()
    while queue:
        d, i = heapq.heappop(queue)
        if i in done:
            continue
        done.add(i)
        if i == 1:
            break
        for j in range(len(nodes)):
            if j in done or not free(nodes[i], nodes[j]):
                continue
            nd = d + float(np.linalg.norm(nodes[j] - nodes[i]))
            if nd < dist.get(j, np.inf):
                dist[j], previous[j] = nd, i
                heapq.heappush(queue, (nd, j))
    if 1 not in dist:
        return None
    path, i = [], 1
    while i != 0:
        path.append(nodes[i])
        i = previous[i]
    return path[::-1]
