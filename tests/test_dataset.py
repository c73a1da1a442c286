"""fosp_core.data.dataset: format round trip, atomic writes, damage handling, summaries."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from fosp_core.data import dataset as ds
from fosp_core.data.dataset import (
    TRAJECTORY_KEYS,
    DatasetError,
    DatasetWriter,
    Trajectory,
    format_summary,
    load_dataset,
    load_index,
    plot_returns,
    read_trajectory,
    rows_to_arrays,
    summarize,
    validate_trajectory,
    write_trajectory,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_traj(
    seed: int = 0, steps: int = 4, k: int = 25, reward_at: int | None = None,
    cost_at: int | None = None,
) -> dict[str, np.ndarray]:
    """Synthetic trajectory with T = steps + 1 rows in the Dreamer row convention."""
    rng = np.random.default_rng(seed)
    t = steps + 1
    action = rng.uniform(-1, 1, (t, 6)).astype(np.float32)
    action[0] = 0.0
    reward = np.zeros(t, np.float32)
    cost = np.zeros(t, np.float32)
    if reward_at is not None:
        reward[reward_at] = 1.0 + 0.25 * seed
    if cost_at is not None:
        cost[cost_at] = 0.5
    return {
        "image": rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8),
        "pose": rng.normal(size=(t, 6)).astype(np.float32),
        "action": action,
        "reward": reward,
        "cost": cost,
        "state": rng.normal(size=(t, k)).astype(np.float32),
    }


def make_meta(behaviour: str = "safe", seed: int | None = 0, **extra) -> dict:
    meta = {"task": "safereach", "behaviour": behaviour, "seed": seed,
            "layout": {"obstacle": [0.4, 0.1, 0.2], "goal": [0.5, -0.1, 0.15]}}
    meta.update(extra)
    return meta


def write_n(directory: Path, n: int) -> list[Path]:
    writer = DatasetWriter(directory)
    return [writer.add(make_traj(seed=i, reward_at=2 if i % 2 else None), make_meta(seed=i))
            for i in range(n)]


# --------------------------------------------------------------------------------------------
# Round trip and writer


def test_round_trip_arrays_and_meta_exact(tmp_path: Path) -> None:
    arrays = make_traj(seed=3, reward_at=4, cost_at=2)
    meta = make_meta("unsafe", seed=7, operator="alice", nested={"a": [1, 2.5, None]})
    path = tmp_path / "traj_000000.npz"
    write_trajectory(path, arrays, meta)

    got_arrays, got_meta = read_trajectory(path)
    assert set(got_arrays) == set(TRAJECTORY_KEYS)
    for key in TRAJECTORY_KEYS:
        assert got_arrays[key].dtype == arrays[key].dtype
        assert got_arrays[key].shape == arrays[key].shape
        assert got_arrays[key].tobytes() == arrays[key].tobytes(), key
    assert got_meta == {**meta, "success": True, "violation": True, "format": 1, "length": 5}
    # The caller's dict is not modified by the writer.
    assert "format" not in meta
    # No pickle: the archive loads with pickle disabled and meta is a 0-d unicode array.
    with np.load(path, allow_pickle=False) as npz:
        assert npz["meta"].shape == () and npz["meta"].dtype.kind == "U"
    assert [p.name for p in tmp_path.iterdir()] == ["traj_000000.npz"]


def test_meta_success_violation_derived_and_checked(tmp_path: Path) -> None:
    arrays = make_traj(reward_at=None, cost_at=3)
    write_trajectory(tmp_path / "traj_000000.npz", arrays, make_meta(seed=np.int64(5)))
    _, meta = read_trajectory(tmp_path / "traj_000000.npz")
    assert (meta["success"], meta["violation"], meta["seed"]) == (False, True, 5)
    with pytest.raises(ValueError, match="success"):
        write_trajectory(tmp_path / "traj_000001.npz", arrays, make_meta(success=True))
    with pytest.raises(ValueError, match="layout"):
        meta = make_meta()
        del meta["layout"]
        write_trajectory(tmp_path / "traj_000001.npz", arrays, meta)
    assert not (tmp_path / "traj_000001.npz").exists()


def test_writer_numbering_continues_across_instances(tmp_path: Path) -> None:
    d = tmp_path / "data" / "run"  # nested: the writer creates it
    first = DatasetWriter(d)
    paths = [first.add(make_traj(seed=i), make_meta(seed=i)) for i in range(2)]
    assert [p.name for p in paths] == ["traj_000000.npz", "traj_000001.npz"]
    assert len(first) == 2
    before = paths[0].read_bytes()

    second = DatasetWriter(d)
    assert len(second) == 2
    p = second.add(make_traj(seed=9), make_meta(seed=9))
    assert p.name == "traj_000002.npz"
    assert len(second) == 3
    assert paths[0].read_bytes() == before

    # Gaps are not refilled: numbering follows the highest existing file.
    (d / "traj_000007.npz").write_bytes(p.read_bytes())
    assert DatasetWriter(d).add(make_traj(seed=10), make_meta()).name == "traj_000008.npz"
    assert sorted(x.name for x in d.glob("traj_*.npz")) == [
        "traj_000000.npz", "traj_000001.npz", "traj_000002.npz", "traj_000007.npz",
        "traj_000008.npz",
    ]


def test_index_matches_files(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path)
    specs = [("safe", 3, None), ("unsafe", None, 2), ("random", 1, 4)]
    for i, (behaviour, r, c) in enumerate(specs):
        writer.add(make_traj(seed=i, reward_at=r, cost_at=c), make_meta(behaviour, seed=i))

    index = json.loads((tmp_path / "index.json").read_text())
    assert index["format"] == 1
    episodes = index["episodes"]
    assert [e["file"] for e in episodes] == [f"traj_{i:06d}.npz" for i in range(3)]
    assert [e["behaviour"] for e in episodes] == ["safe", "unsafe", "random"]
    assert [e["success"] for e in episodes] == [True, False, True]
    assert [e["violation"] for e in episodes] == [False, True, True]
    assert [e["reward_return"] for e in episodes] == [1.0, 0.0, 1.5]
    assert [e["cost_return"] for e in episodes] == [0.0, 0.5, 0.5]
    assert all(e["length"] == 5 and e["task"] == "safereach" for e in episodes)
    assert [e["seed"] for e in episodes] == [0, 1, 2]

    # Every record equals what a fresh read of the file gives.
    loaded = load_dataset(tmp_path, strict=True)
    assert [t.record() for t in loaded.trajectories] == episodes
    assert load_index(tmp_path) == episodes
    assert writer.records == episodes


def test_writer_thread_safe(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path)
    arrays = make_traj(steps=1)

    def work() -> None:
        for _ in range(3):
            writer.add(arrays, make_meta())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    names = sorted(p.name for p in tmp_path.glob("traj_*.npz"))
    assert names == [f"traj_{i:06d}.npz" for i in range(12)]
    assert [e["file"] for e in load_index(tmp_path)] == names
    assert len(json.loads((tmp_path / "index.json").read_text())["episodes"]) == 12


def test_writer_rejects_state_dim_change(tmp_path: Path) -> None:
    DatasetWriter(tmp_path).add(make_traj(k=25), make_meta())
    writer = DatasetWriter(tmp_path)
    with pytest.raises(ValueError, match="25"):
        writer.add(make_traj(k=7), make_meta())
    assert len(writer) == 1


# --------------------------------------------------------------------------------------------
# Damaged files


def _damage(directory: Path) -> dict[str, Path]:
    """Five good trajectories, three of them then damaged in different ways."""
    paths = write_n(directory, 5)
    truncated, empty, garbage = paths[1], paths[2], paths[4]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty.write_bytes(b"")
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    return {"truncated": truncated, "empty": empty, "garbage": garbage,
            "good0": paths[0], "good3": paths[3]}


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
def test_read_damaged_file_names_path(tmp_path: Path, kind: str) -> None:
    bad = _damage(tmp_path)[kind]
    with pytest.raises(DatasetError) as info:
        read_trajectory(bad)
    assert str(bad) in str(info.value)
    assert info.value.path == bad
    assert info.value.reason
    assert "pickle" not in str(info.value)


def test_load_dataset_skips_bad_files_or_raises_when_strict(tmp_path: Path) -> None:
    files = _damage(tmp_path)
    data = load_dataset(tmp_path)
    assert [t.path for t in data.trajectories] == [files["good0"], files["good3"]]
    assert [t.meta["seed"] for t in data.trajectories] == [0, 3]
    assert [p for p, _ in data.errors] == [files["truncated"], files["empty"], files["garbage"]]
    assert all(reason for _, reason in data.errors)
    assert data.directory == tmp_path

    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path, strict=True)
    assert info.value.path == files["truncated"]

    text = format_summary(summarize(data), data.errors)
    assert str(files["empty"]) in text and "unreadable files (3)" in text


def test_read_rejects_wrong_contents(tmp_path: Path) -> None:
    arrays = make_traj()
    missing = tmp_path / "traj_000000.npz"
    with open(missing, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if k != "cost"}, meta=np.array("{}"))
    with pytest.raises(DatasetError, match="cost"):
        read_trajectory(missing)

    bad_json = tmp_path / "traj_000001.npz"
    with open(bad_json, "wb") as f:
        np.savez(f, **arrays, meta=np.array("{not json"))
    with pytest.raises(DatasetError, match="JSON"):
        read_trajectory(bad_json)

    short = dict(arrays, pose=arrays["pose"][:-1])
    mismatch = tmp_path / "traj_000002.npz"
    with open(mismatch, "wb") as f:
        np.savez(f, **short, meta=np.array("{}"))
    with pytest.raises(DatasetError, match="mismatched lengths") as info:
        read_trajectory(mismatch)
    assert str(mismatch) in str(info.value)


def test_load_dataset_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(file)


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.update(image=a["image"][:, :32]), "image"),
        (lambda a: a.update(pose=a["pose"][:, :5]), "pose"),
        (lambda a: a.update(state=a["state"][:, 0]), "state"),
        (lambda a: a.update(action=a["action"].astype(np.float64)), "dtype"),
        (lambda a: a.update(image=a["image"].astype(np.float32)), "dtype"),
        (lambda a: a.update(reward=a["reward"][:-1]), "mismatched lengths"),
        (lambda a: a["cost"].__setitem__(1, np.nan), "non-finite"),
        (lambda a: a["pose"].__setitem__((2, 0), np.inf), "non-finite"),
        (lambda a: a.pop("action"), "missing"),
        (lambda a: a.update(depth=np.zeros(5, np.float32)), "unexpected"),
        (lambda a: a.update(reward=[0.0] * 5), "numpy array"),
    ],
)
def test_validate_rejects(change, match: str) -> None:
    arrays = make_traj()
    validate_trajectory(arrays)  # the unmodified trajectory is fine
    change(arrays)
    with pytest.raises(ValueError, match=match):
        validate_trajectory(arrays)


# --------------------------------------------------------------------------------------------
# Atomicity


def test_crash_during_replace_leaves_no_trajectory(tmp_path: Path, monkeypatch) -> None:
    writer = DatasetWriter(tmp_path)
    good = writer.add(make_traj(seed=1), make_meta())
    good_bytes = good.read_bytes()
    index_bytes = (tmp_path / "index.json").read_bytes()

    def crash(src, dst):
        raise OSError("simulated power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        writer.add(make_traj(seed=2), make_meta())
    with pytest.raises(OSError, match="power cut"):
        write_trajectory(tmp_path / "traj_000005.npz", make_traj(seed=3), make_meta())
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.glob("traj_*.npz")) == ["traj_000000.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "traj_000000.npz"]
    assert good.read_bytes() == good_bytes
    assert (tmp_path / "index.json").read_bytes() == index_bytes
    assert len(writer) == 1
    # The writer recovers: the failed number is reused, nothing is skipped or overwritten.
    assert writer.add(make_traj(seed=4), make_meta()).name == "traj_000001.npz"
    assert good.read_bytes() == good_bytes


def test_temp_file_left_by_crash_is_ignored(tmp_path: Path) -> None:
    write_n(tmp_path, 2)
    # What a kill -9 mid-write leaves behind: a temp file that must never count as data.
    (tmp_path / ".traj_000002.npz.123.abcd.tmp").write_bytes(b"PK\x03\x04half")
    data = load_dataset(tmp_path, strict=True)
    assert len(data) == 2 and data.errors == []
    assert DatasetWriter(tmp_path).add(make_traj(), make_meta()).name == "traj_000002.npz"


# --------------------------------------------------------------------------------------------
# Index rebuild


def test_load_index_rebuilds_when_missing_or_corrupt(tmp_path: Path) -> None:
    write_n(tmp_path, 3)
    index_path = tmp_path / "index.json"
    expected = json.loads(index_path.read_text())["episodes"]
    assert [e["success"] for e in expected] == [False, True, False]

    index_path.unlink()
    assert load_index(tmp_path) == expected

    index_path.write_text('{"format": 1, "episodes": [{"file": "traj_0')
    assert load_index(tmp_path) == expected

    index_path.write_text(json.dumps({"format": 1, "episodes": [{"file": 3}]}))
    assert load_index(tmp_path) == expected

    # A valid-looking but stale cache (last add crashed before the index write) is completed.
    index_path.write_text(json.dumps({"format": 1, "episodes": expected[:2]}))
    assert load_index(tmp_path) == expected

    # And a restarted writer rewrites a full index.
    DatasetWriter(tmp_path).add(make_traj(seed=8), make_meta("teleop"))
    episodes = json.loads(index_path.read_text())["episodes"]
    assert [e["file"] for e in episodes] == [f"traj_{i:06d}.npz" for i in range(4)]
    assert episodes[:3] == expected and episodes[3]["behaviour"] == "teleop"


def test_load_index_uses_cache_when_valid(tmp_path: Path) -> None:
    write_n(tmp_path, 2)
    index_path = tmp_path / "index.json"
    index = json.loads(index_path.read_text())
    index["episodes"][0]["reward_return"] = 42.0  # marker that only the cache can supply
    index_path.write_text(json.dumps(index))
    assert [e["reward_return"] for e in load_index(tmp_path)] == [42.0, 1.25]


# --------------------------------------------------------------------------------------------
# Summaries and plot


def _rec(behaviour: str, success: bool, violation: bool, r: float, c: float) -> dict:
    return {"file": "traj_000000.npz", "task": "t", "behaviour": behaviour, "seed": None,
            "success": success, "violation": violation, "length": 5,
            "reward_return": r, "cost_return": c}


def test_summarize_exact_values() -> None:
    records = [
        _rec("safe", True, False, 1.0, 0.0),
        _rec("safe", True, False, 3.0, 0.0),
        _rec("unsafe", True, True, 2.0, 4.0),
        _rec("unsafe", False, True, 0.0, 2.0),
    ]
    s = summarize(records)
    assert s["episodes"] == 4
    assert s["success_rate"] == 0.75
    assert s["violation_rate"] == 0.5
    assert s["reward_return"] == 1.5
    assert s["cost_return"] == 1.5
    assert s["outcomes"] == {"safe_success": 2, "safe_fail": 0, "unsafe_success": 1,
                             "unsafe_fail": 1}
    assert sorted(s["by_behaviour"]) == ["safe", "unsafe"]
    safe, unsafe = s["by_behaviour"]["safe"], s["by_behaviour"]["unsafe"]
    assert (safe["episodes"], safe["success_rate"], safe["violation_rate"]) == (2, 1.0, 0.0)
    assert (safe["reward_return"], safe["cost_return"]) == (2.0, 0.0)
    assert (unsafe["episodes"], unsafe["success_rate"], unsafe["violation_rate"]) == (2, 0.5, 1.0)
    assert (unsafe["reward_return"], unsafe["cost_return"]) == (1.0, 3.0)
    assert unsafe["outcomes"] == {"safe_success": 0, "safe_fail": 0, "unsafe_success": 1,
                                  "unsafe_fail": 1}
    assert "by_behaviour" not in safe

    text = format_summary(s)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["behaviour", "episodes"]
    assert lines[2].split() == ["all", "4", "75.0", "50.0", "1.500", "1.500"]
    assert lines[3].split() == ["safe", "2", "100.0", "0.0", "2.000", "0.000"]
    assert lines[4].split() == ["unsafe", "2", "50.0", "100.0", "1.000", "3.000"]
    assert "safe_success=2" in text and "unsafe_fail=1" in text
    assert "unreadable" not in text


def test_summarize_trajectories_and_empty(tmp_path: Path) -> None:
    write_n(tmp_path, 4)
    data = load_dataset(tmp_path)
    s = summarize(data.trajectories)
    assert s["episodes"] == 4 and s["success_rate"] == 0.5 and s["violation_rate"] == 0.0
    assert s["reward_return"] == (1.25 + 1.75) / 4
    assert s["outcomes"]["safe_success"] == 2 and s["outcomes"]["safe_fail"] == 2
    assert summarize(load_index(tmp_path)) == s

    empty = summarize([])
    assert empty["episodes"] == 0
    assert empty["success_rate"] == 0.0 and empty["violation_rate"] == 0.0
    assert empty["reward_return"] == 0.0 and empty["by_behaviour"] == {}
    assert sum(empty["outcomes"].values()) == 0
    assert "all" in format_summary(empty)


def test_trajectory_properties() -> None:
    arrays = make_traj(seed=2, reward_at=1, cost_at=3)
    arrays["cost"][4] = 0.25
    t = Trajectory(arrays=arrays, meta={"behaviour": "policy", "success": True,
                                         "violation": True}, path=Path("traj_000000.npz"))
    assert (t.reward_return, t.cost_return, t.length) == (1.5, 0.75, 5)
    assert (t.success, t.violation, t.behaviour) == (True, True, "policy")


def test_plot_returns_writes_png(tmp_path: Path) -> None:
    records = [_rec("safe", True, False, 1.0, 0.0), _rec("unsafe", True, True, 2.0, 3.0),
               _rec("random", False, False, 0.0, 0.0)]
    png = tmp_path / "returns.png"
    plot_returns(records, png)
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["returns.png"]  # no temp file left

    write_n(tmp_path / "d", 2)
    png2 = tmp_path / "traj.png"
    plot_returns(load_dataset(tmp_path / "d").trajectories, png2)
    assert png2.read_bytes().startswith(PNG_SIGNATURE)

    empty = tmp_path / "empty.png"
    plot_returns([], empty)
    assert empty.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_paths_draws_each_trajectory_by_outcome(tmp_path: Path, capsys) -> None:
    from fosp.cli import main
    from fosp_core.data.dataset import plot_paths

    writer = DatasetWriter(tmp_path / "d")
    for seed, reward_at, cost_at in ((0, 2, None), (1, 3, 1), (2, None, 2), (3, None, None),
                                     (4, 4, None)):
        writer.add(make_traj(seed=seed, reward_at=reward_at, cost_at=cost_at), make_meta())
    png = tmp_path / "plots" / "paths.png"
    counts = plot_paths(load_dataset(tmp_path / "d"), tmp_path / "paths.png")
    assert counts == {"safe_success": 2, "safe_fail": 1, "unsafe_success": 1, "unsafe_fail": 1}
    assert main(["dataset", "info", str(tmp_path / "d"), "--paths", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE) and f"plot: {png}" in capsys.readouterr().out
    assert [p.name for p in png.parent.iterdir()] == ["paths.png"]  # no temp file left


def test_module_constants() -> None:
    assert ds.TRAJECTORY_KEYS == ("image", "pose", "action", "reward", "cost", "state")
    assert issubclass(DatasetError, Exception)


def test_to_policy_image_is_the_one_resize():
    from fosp_core.data.images import to_policy_image

    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:240] = 200  # top half bright
    small = to_policy_image(frame)
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8
    # INTER_AREA averages: rows fully inside the bright half are 200, the rest 0
    assert small[:31].min() == 200 and small[33:].max() == 0
    same = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    np.testing.assert_array_equal(to_policy_image(same), same)
    with pytest.raises(ValueError, match="RGB"):
        to_policy_image(np.zeros((64, 64)))


def test_trajectory_bytes_round_trip_and_bad_bytes(tmp_path):
    from fosp_core.data.dataset import trajectory_from_bytes, trajectory_to_bytes

    arrays = make_traj(4)
    meta = make_meta("policy")
    data = trajectory_to_bytes(arrays, meta)
    back, back_meta = trajectory_from_bytes(data)
    for key in arrays:
        np.testing.assert_array_equal(back[key], arrays[key])
    assert back_meta["behaviour"] == "policy" and back_meta["length"] == len(arrays["reward"])
    write_trajectory(tmp_path / "t.npz", arrays, meta)
    assert read_trajectory(tmp_path / "t.npz")[1] == back_meta
    with pytest.raises(DatasetError, match="from-policy"):
        trajectory_from_bytes(data[: len(data) // 2], "from-policy")
    with pytest.raises(DatasetError, match="no zip header"):
        trajectory_from_bytes(b"garbage!", "from-policy")


def test_rows_to_arrays_stacks_live_rows_and_fills_missing_modalities():
    pose = np.arange(6, dtype=np.float64)
    rows = [
        {"pose": pose, "action": np.zeros(6), "reward": 0.0, "cost": 0.0,
         "state": np.ones(25)},
        {"pose": pose + 1, "action": np.full(6, 0.5), "reward": 1.0, "cost": 1.0,
         "image": np.full((64, 64, 3), 200, np.uint8)},
    ]
    arrays = rows_to_arrays(rows, image_size=64, state_dim=25)
    validate_trajectory(arrays)
    assert arrays["pose"].dtype == np.float32 and arrays["image"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["pose"][1], pose + 1)
    np.testing.assert_array_equal(arrays["reward"], [0.0, 1.0])
    np.testing.assert_array_equal(arrays["cost"], [0.0, 1.0])
    assert arrays["image"][0].max() == 0 and arrays["image"][1].min() == 200  # row 0: no image
    assert arrays["state"][0].min() == 1 and arrays["state"][1].max() == 0  # row 1: no state
