"""Sequence replay: random windows of ``length`` rows out of a list of trajectories.

Every *row* of the dataset is equally likely to be trained on. Uniform window starts (as
DreamerV3's replay) would not do that: the first and last ``length - 1`` rows of a trajectory
lie in fewer windows, row 0 in one window of the 66 that an 81-row trajectory offers, 16 times
less often than a middle row. The start of an episode is where SafeReach's decisions are made
(the first obstacle stands 6 cm ahead), and under-sampling it makes cloned policies violate
far more often (docs/implementation.md, "Replay"). So a window start is drawn
uniformly from ``length - 1`` places before the first start to as many after the last one,
and clamped to the trajectory: the first and last windows take the extra draws, and every row
lies in at least ``length`` of the ``rows + length - 1`` draws of its trajectory (the early and
late rows in at most twice as many). A window never crosses a trajectory boundary;
trajectories shorter than the window are kept but give no windows, since padding them would
teach the world model a fake "stand still" ending.

``is_first`` is True at the first row of every window: the recurrent state starts from zeros
there, as DreamerV3 does when it replays a chunk from the middle of an episode. Because
windows lie inside one trajectory, row 0 of a trajectory is always a window's first row.

Every row also carries ``safe_success``: on each row of a trajectory that reached the target
(a reward) without earning a cost, the weight it was added with (1.0 unless ``add`` is told
otherwise), 0.0 elsewhere, so an actor can be fitted to the safe successes alone
(``fosp.online_actor_loss: safe_success``; fine-tuning adds the robot's own trajectories with
``fosp.online_success_weight``). It is derived from the trajectory's own reward and cost when
it is added, as ``Trajectory.success`` and ``.violation`` are. The weight never changes how
rows are sampled.

And every row carries ``hold``: ``hold_rows`` of the trajectory's reward, with the weight
``add`` was given (0.0 unless told otherwise). It marks the actions taken after the target was
first touched, which in hindsight should have held the arm still (``fosp.online_hold_weight``).

All randomness comes from one ``numpy.random.Generator``; ``state_dict`` / ``load_state_dict``
save and restore its exact state (as plain ints and strings, loadable with
``torch.load(weights_only=True)``), so a resumed run draws the same batches it would have drawn.
Online fine-tuning calls ``add`` with new trajectories as they are collected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

# Keys every batch carries, beside the observation keys of the mode.
_COMMON_KEYS = ("action", "reward", "cost")
SAFE_SUCCESS = "safe_success"  # derived per trajectory in ``add``
HOLD = "hold"  # derived per row in ``add``
OBS_KEYS = {"image": ("image", "pose"), "state": ("state",)}


def hold_rows(reward: np.ndarray, weight: float) -> np.ndarray:
    """``weight`` on the rows whose action was taken at or after the first rewarded row.

    A row holds the action that led to it (the Dreamer convention), so the action taken from
    the first row that touches the target is the next row's: reward (0, 0, 1, 0, 1) gives
    (0, 0, 0, w, w). Touching the target is the whole task and every later step that keeps
    touching it earns reward, so the right move from there on is to hold still; a trajectory
    that drifted off into an obstacle afterwards teaches that as well as one that did not.
    No reward, no hold rows.
    """
    hold = np.zeros(len(reward), dtype=np.float32)
    touched = np.flatnonzero(np.asarray(reward) > 0)
    if len(touched):
        hold[touched[0] + 1:] = weight
    return hold


class SequenceReplay:
    """Samples (batch_size, length) windows as torch tensors.

    Args:
        trajectories: dicts of per-row arrays (``Trajectory.arrays`` from ``load_dataset``),
            or objects with an ``.arrays`` attribute holding one.
        batch_size, length: B and T of every batch.
        obs_mode: 'image' keeps image and pose, 'state' keeps state (and no images, which
            would otherwise take most of the memory).
        seed: seed of the generator.
        hold_weight: the ``hold`` weight of these trajectories (``add``).
    """

    def __init__(
        self,
        trajectories: Iterable[Any],
        batch_size: int,
        length: int,
        obs_mode: str = "state",
        seed: int = 0,
        hold_weight: float = 0.0,
    ) -> None:
        if obs_mode not in OBS_KEYS:
            raise ValueError(f"obs_mode must be one of {tuple(OBS_KEYS)}, got {obs_mode!r}")
        self.batch_size, self.length, self.obs_mode = batch_size, length, obs_mode
        self.keys = OBS_KEYS[obs_mode] + _COMMON_KEYS
        self.rng = np.random.default_rng(seed)
        self._trajectories: list[dict[str, np.ndarray]] = []
        # _ends[i] = number of window draws in trajectories 0..i; a global draw index is
        # mapped back to (trajectory, draw) with a binary search, and the draw to a start.
        self._ends = np.zeros(0, dtype=np.int64)
        self.add(trajectories, hold_weight=hold_weight)

    def __len__(self) -> int:
        """Number of trajectories held."""
        return len(self._trajectories)

    @property
    def num_windows(self) -> int:
        """Number of window draws (clamped starts counted once per draw)."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def add(self, trajectories: Iterable[Any], success_weight: float = 1.0,
            hold_weight: float = 0.0) -> None:
        """Append trajectories; later batches sample from old and new ones uniformly.

        ``success_weight`` is the ``safe_success`` value of the rows of those among them that
        are safe successes; ``hold_weight`` is the ``hold`` value of every added
        trajectory's rows after it first touched the target (``hold_rows``).
        """
        counts = []
        for traj in trajectories:
            arrays: Mapping[str, np.ndarray] = getattr(traj, "arrays", traj)
            missing = [key for key in self.keys if key not in arrays]
            if missing:
                raise ValueError(f"trajectory lacks {missing} needed in {self.obs_mode} mode")
            kept = {key: np.asarray(arrays[key]) for key in self.keys}
            rows = len(kept["reward"])
            safe_success = np.any(kept["reward"] > 0) and not np.any(kept["cost"] > 0)
            kept[SAFE_SUCCESS] = np.full(rows, success_weight * safe_success, dtype=np.float32)
            kept[HOLD] = hold_rows(kept["reward"], hold_weight)
            self._trajectories.append(kept)
            counts.append(rows + self.length - 1 if rows >= self.length else 0)
        if counts:
            start = self.num_windows
            self._ends = np.concatenate([self._ends, start + np.cumsum(counts)])

    def sample(self) -> dict[str, torch.Tensor]:
        """One batch: each key (B, T, ...), ``safe_success``, ``hold`` and ``is_first`` (B, T)."""
        if self.num_windows == 0:
            raise ValueError(
                f"no trajectory has the {self.length} rows a window needs "
                f"({len(self._trajectories)} trajectories held)"
            )
        index = self.rng.integers(0, self.num_windows, size=self.batch_size)
        which = np.searchsorted(self._ends, index, side="right")
        first_window = np.where(which > 0, self._ends[np.maximum(which - 1, 0)], 0)
        last_start = np.array([len(self._trajectories[i]["reward"]) for i in which]) - self.length
        starts = np.clip(index - first_window - (self.length - 1), 0, last_start)
        batch = {
            key: np.stack(
                [self._trajectories[i][key][s : s + self.length] for i, s in zip(which, starts)]
            )
            for key in (*self.keys, SAFE_SUCCESS, HOLD)
        }
        out = {key: torch.from_numpy(value) for key, value in batch.items()}
        is_first = torch.zeros(self.batch_size, self.length, dtype=torch.bool)
        is_first[:, 0] = True
        out["is_first"] = is_first
        return out

    def state_dict(self) -> dict[str, Any]:
        """Generator state plus the trajectory count, for an exact resume."""
        return {"rng": self.rng.bit_generator.state, "trajectories": len(self._trajectories)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["trajectories"] != len(self._trajectories):
            raise ValueError(
                f"replay state was saved with {state['trajectories']} trajectories, "
                f"this replay holds {len(self._trajectories)}: not the same dataset"
            )
        self.rng.bit_generator.state = dict(state["rng"])
