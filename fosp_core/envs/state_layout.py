"""What the SafeReach twin's privileged ``state`` vector holds, index by index.

Kept apart from ``fosp_core.envs.safereach`` (which loads MuJoCo) so that the bag converter
and the agent can read the layout without a simulator.

    [0:6]    end-effector pose (x, y, z, roll, pitch, yaw), metres / radians
    [6:9]    target position (x, y, z)
    [9:25]   MAX_OBSTACLES slots of (x, y, z, present); unused slots are all zero
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the bag converter reads the layout without loading torch
    from torch import Tensor

POSE_DIM = 6
MAX_OBSTACLES = 4
SLOT_DIM = 4  # x, y, z, present
STATE_DIM = POSE_DIM + 3 + SLOT_DIM * MAX_OBSTACLES


def split_state(state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(..., STATE_DIM) -> pose (..., 6), target (..., 3), obstacle positions (..., slots, 3)
    and their present flags (..., slots)."""
    if state.shape[-1] != STATE_DIM:
        raise ValueError(f"a SafeReach state has {STATE_DIM} values, got {state.shape[-1]}")
    slots = state[..., POSE_DIM + 3:].unflatten(-1, (MAX_OBSTACLES, SLOT_DIM))
    return state[..., :POSE_DIM], state[..., POSE_DIM:POSE_DIM + 3], slots[..., :3], slots[..., 3]
