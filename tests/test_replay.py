"""fosp_core.agent.replay: window shapes, is_first, uniform windows, exact resume, add()."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fosp_core.agent.replay import SequenceReplay, hold_rows


def traj(index: int, rows: int) -> dict[str, np.ndarray]:
    """state[:, 0] = 1000 * trajectory index + row, so a window tells where it came from."""
    state = np.zeros((rows, 25), np.float32)
    state[:, 0] = 1000 * index + np.arange(rows)
    return {
        "state": state,
        "image": np.zeros((rows, 64, 64, 3), np.uint8),
        "pose": np.zeros((rows, 6), np.float32),
        "action": np.ones((rows, 6), np.float32),
        "reward": np.arange(rows, dtype=np.float32),
        "cost": np.zeros(rows, np.float32),
    }


def test_shapes_dtypes_and_is_first() -> None:
    replay = SequenceReplay([traj(0, 30), traj(1, 12)], batch_size=7, length=5, seed=1)
    batch = replay.sample()
    assert set(batch) == {"state", "action", "reward", "cost", "safe_success", "hold",
                          "is_first"}
    assert batch["state"].shape == (7, 5, 25) and batch["state"].dtype == torch.float32
    assert batch["action"].shape == (7, 5, 6)
    assert batch["reward"].shape == batch["cost"].shape == batch["safe_success"].shape == (7, 5)
    assert batch["is_first"].dtype == torch.bool
    assert batch["is_first"][:, 0].all() and not batch["is_first"][:, 1:].any()


def test_windows_are_contiguous_slices_of_one_trajectory() -> None:
    replay = SequenceReplay([traj(0, 9), traj(1, 6), traj(2, 20)], batch_size=64, length=6)
    for _ in range(5):
        ids = replay.sample()["state"][..., 0].numpy()
        assert np.all(np.diff(ids, axis=1) == 1)  # consecutive rows, never across trajectories
        assert np.all(ids // 1000 == ids[:, :1] // 1000)


def test_every_row_is_covered_about_equally() -> None:
    # Draws per trajectory: rows + length - 1 (10 rows -> 14, 30 rows -> 34).
    replay = SequenceReplay([traj(0, 10), traj(1, 30)], batch_size=20000, length=5, seed=0)
    ids = replay.sample()["state"][..., 0].numpy()
    assert np.mean(ids[:, 0] < 1000) == pytest.approx(14 / 48, abs=0.02)
    long = (ids[ids[:, 0] >= 1000] - 1000).astype(int)
    assert long[:, 0].min() == 0 and long[:, 0].max() == 25  # windows stay inside the rows
    coverage = np.bincount(long.ravel(), minlength=30) / len(long)
    # Each row lies in 5 of the 34 draws, the 4 first and last rows in up to 8: the episode
    # start is covered as often as the middle, not 5 times less as with uniform starts.
    assert coverage[0] == pytest.approx(5 / 34, abs=0.015)
    assert coverage[15] == pytest.approx(5 / 34, abs=0.015)
    assert coverage[3] == pytest.approx(8 / 34, abs=0.015)
    assert coverage.min() >= 5 / 34 - 0.015


def test_short_trajectories_give_no_windows() -> None:
    replay = SequenceReplay([traj(0, 3), traj(1, 8)], batch_size=32, length=8)
    assert np.all(replay.sample()["state"][:, 0, 0].numpy() == 1000)
    with pytest.raises(ValueError, match="no trajectory"):
        SequenceReplay([traj(0, 3)], batch_size=2, length=8).sample()


def test_image_mode_keys() -> None:
    batch = SequenceReplay([traj(0, 10)], 2, 4, obs_mode="image").sample()
    assert set(batch) == {"image", "pose", "action", "reward", "cost", "safe_success", "hold",
                          "is_first"}
    assert batch["image"].shape == (2, 4, 64, 64, 3) and batch["image"].dtype == torch.uint8


def test_state_round_trip_through_weights_only_load_resumes_exactly() -> None:
    replay = SequenceReplay([traj(i, 15) for i in range(4)], batch_size=8, length=5, seed=3)
    replay.sample()
    buffer = io.BytesIO()
    torch.save(replay.state_dict(), buffer)
    expected = [replay.sample()["state"] for _ in range(3)]

    buffer.seek(0)
    fresh = SequenceReplay([traj(i, 15) for i in range(4)], batch_size=8, length=5, seed=99)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for want in expected:
        assert torch.equal(fresh.sample()["state"], want)


def test_load_state_from_another_dataset_is_refused() -> None:
    state = SequenceReplay([traj(0, 15)], 2, 5).state_dict()
    with pytest.raises(ValueError, match="not the same dataset"):
        SequenceReplay([traj(0, 15), traj(1, 15)], 2, 5).load_state_dict(state)


def test_added_trajectories_are_sampled() -> None:
    replay = SequenceReplay([traj(0, 10)], batch_size=200, length=5)
    assert np.all(replay.sample()["state"][..., 0].numpy() < 1000)
    replay.add([traj(1, 10)])
    assert len(replay) == 2 and replay.num_windows == 2 * (10 + 5 - 1)
    ids = replay.sample()["state"][:, 0, 0].numpy() // 1000
    assert 0.3 < ids.mean() < 0.7


def test_missing_keys_are_named() -> None:
    bad = traj(0, 10)
    del bad["state"]
    with pytest.raises(ValueError, match="state"):
        SequenceReplay([bad], 2, 5)


def test_safe_success_flags_every_row_by_its_trajectory_outcome() -> None:
    # Reached the target without a cost -> 1.0; with a cost, or without the target -> 0.0.
    safe, unsafe, missed = traj(0, 12), traj(1, 12), traj(2, 12)
    unsafe["cost"][7] = 1.0
    missed["reward"][:] = 0.0
    replay = SequenceReplay([safe, unsafe, missed], batch_size=500, length=4, seed=0)
    batch = replay.sample()
    which = (batch["state"][..., 0] // 1000).long()
    assert set(which.unique().tolist()) == {0, 1, 2}
    expected = torch.tensor([1.0, 0.0, 0.0])[which]
    assert torch.equal(batch["safe_success"], expected)
    assert batch["safe_success"].dtype == torch.float32


def test_success_weight_marks_only_the_safe_successes_added_with_it() -> None:
    # Demonstrations first (weight 1), then two trajectories added with weight 4: the safe
    # one carries 4.0 on every row, the violating one 0.0; sampling is not changed by it.
    demo, new_safe, new_unsafe = traj(0, 12), traj(1, 12), traj(2, 12)
    new_unsafe["cost"][3] = 1.0
    replay = SequenceReplay([demo], batch_size=600, length=4, seed=0)
    replay.add([new_safe, new_unsafe], success_weight=4.0)
    batch = replay.sample()
    which = (batch["state"][..., 0] // 1000).long()
    assert torch.equal(batch["safe_success"], torch.tensor([1.0, 4.0, 0.0])[which])
    shares = torch.bincount(which[:, 0], minlength=3) / 600
    assert torch.all((shares > 0.25) & (shares < 0.42))  # uniform over equal trajectories


def test_hold_rows_start_with_the_action_taken_from_the_first_touch() -> None:
    # Row 2 is the first to touch the target; row 3 holds the action taken from it.
    assert hold_rows(np.array([0, 0, 1, 0, 1], np.float32), 2.0).tolist() == [0, 0, 0, 2, 2]
    assert hold_rows(np.array([1, 0, 0], np.float32), 1.0).tolist() == [0, 1, 1]
    assert hold_rows(np.zeros(4, np.float32), 1.0).tolist() == [0, 0, 0, 0]
    assert hold_rows(np.array([0, 0, 0, 1], np.float32), 1.0).tolist() == [0, 0, 0, 0]


def test_hold_weight_marks_the_rows_after_the_touch_of_the_trajectories_added_with_it() -> None:
    # The first trajectory, given to the constructor without a hold weight, keeps hold 0; a
    # new trajectory that touched the target at row 5 and then violated carries the weight
    # from row 6 on, violation or not; one that never touched, nothing.
    demo, new_touch, new_miss = traj(0, 12), traj(1, 12), traj(2, 12)
    for t in (demo, new_touch, new_miss):
        t["reward"][:] = 0.0
    demo["reward"][2:] = 1.0
    new_touch["reward"][5:8] = 1.0
    new_touch["cost"][9] = 1.0
    replay = SequenceReplay([demo], batch_size=600, length=4, seed=0)
    replay.add([new_touch, new_miss], hold_weight=3.0)
    batch = replay.sample()
    which = (batch["state"][..., 0] // 1000).long()
    row = (batch["state"][..., 0] % 1000).long()
    expected = torch.where((which == 1) & (row >= 6), 3.0, 0.0)
    assert set(which.unique().tolist()) == {0, 1, 2}
    assert torch.equal(batch["hold"], expected)
    assert batch["hold"].dtype == torch.float32
    # The constructor takes the weight for its own trajectories.
    held = SequenceReplay([demo], batch_size=1, length=4, hold_weight=3.0)._trajectories[0]
    np.testing.assert_array_equal(held["hold"], [0.0] * 3 + [3.0] * 9)
