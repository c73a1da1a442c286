"""rosbag2 -> dataset conversion, on real MCAP and SQLite3 bags written with rosbags."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fosp.cli import main
from fosp_core.data.bag import (
    STATE_DIM,
    BagError,
    BagTopics,
    bag_to_dataset,
    image_from_msg,
    typestore,
)
from fosp_core.data.dataset import load_dataset
from tests.bag_writer import array_msg, image_msg, pose_msg, write_demo_bag


def demo_trajectory(steps: int, size: tuple[int, int] = (64, 64), seed: int = 0,
                    reward_at: Sequence[int] = (), cost_at: Sequence[int] = ()
                    ) -> dict[str, np.ndarray]:
    """Random trajectory of T = steps + 1 rows in the dataset row convention."""
    rng = np.random.default_rng(seed)
    t = steps + 1
    arrays = {
        "image": rng.integers(0, 256, (t, *size, 3), dtype=np.uint8),
        "pose": np.concatenate([rng.uniform(0.3, 0.7, (t, 3)), rng.uniform(-0.5, 0.5, (t, 3))],
                               axis=1).astype(np.float32),
        "action": rng.uniform(-1, 1, (t, 6)).astype(np.float32),
        "reward": np.zeros(t, np.float32),
        "cost": np.zeros(t, np.float32),
    }
    arrays["action"][0] = 0.0
    arrays["reward"][list(reward_at)] = 1.0
    arrays["cost"][list(cost_at)] = 1.0
    return arrays


def assert_same(converted: dict[str, np.ndarray], source: dict[str, np.ndarray]) -> None:
    for key in ("image", "action", "reward", "cost"):
        np.testing.assert_array_equal(converted[key], source[key], err_msg=key)
    # Pose goes through a quaternion in the message and back.
    np.testing.assert_allclose(converted["pose"], source["pose"], atol=1e-6)
    np.testing.assert_array_equal(converted["state"],
                                  np.zeros((len(source["action"]), STATE_DIM), np.float32))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_reproduces_the_recorded_arrays(tmp_path: Path, storage: str):
    trajectories = [demo_trajectory(6, seed=1, reward_at=[5], cost_at=[2, 3]),
                    demo_trajectory(9, seed=2)]
    bag = write_demo_bag(tmp_path / "bag", trajectories, storage=storage, idle_actions=3)
    paths = bag_to_dataset(bag, tmp_path / "data", task="safereach-obstacle-shape")
    assert [p.name for p in paths] == ["traj_000000.npz", "traj_000001.npz"]
    dataset = load_dataset(tmp_path / "data", strict=True)
    assert len(dataset) == 2
    for trajectory, source in zip(dataset, trajectories):
        assert_same(trajectory.arrays, source)
        meta = trajectory.meta
        assert meta["task"] == "safereach-obstacle-shape"
        assert meta["behaviour"] == "teleop"
        assert meta["source"] == "rosbag"
        assert meta["seed"] is None and meta["layout"] == {}
        assert meta["bag"] == str(bag)
        assert meta["topics"]["action"] == BagTopics().action
        assert meta["dropped_actions"] == 0
        assert "no privileged state" in meta["state"]
    assert dataset.trajectories[0].success and dataset.trajectories[0].violation
    assert not dataset.trajectories[1].success


def test_state_width_matches_the_simulated_twin():
    from fosp_core.envs.safereach import STATE_DIM as SIM_STATE_DIM

    assert STATE_DIM == SIM_STATE_DIM  # so bag and simulator datasets can share a directory


def test_bgr8_and_other_sizes_are_converted_and_resized_with_inter_area(tmp_path: Path):
    source = demo_trajectory(4, size=(96, 128), seed=3)
    bag = write_demo_bag(tmp_path / "bag", [source], encoding="bgr8")
    bag_to_dataset(bag, tmp_path / "data")
    (trajectory,) = load_dataset(tmp_path / "data", strict=True)
    expected = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA)
                         for im in source["image"]])
    np.testing.assert_array_equal(trajectory.arrays["image"], expected)
    # Channel order matters: a bgr8 bag must not come out blue-red swapped.
    assert not np.array_equal(expected, expected[..., ::-1])


def test_bgr8_at_64x64_is_kept_pixel_exact(tmp_path: Path):
    source = demo_trajectory(3, seed=4)
    bag = write_demo_bag(tmp_path / "bag", [source], encoding="bgr8", storage="sqlite3")
    bag_to_dataset(bag, tmp_path / "data")
    (trajectory,) = load_dataset(tmp_path / "data", strict=True)
    np.testing.assert_array_equal(trajectory.arrays["image"], source["image"])


@pytest.mark.parametrize("marker", ["string", "bool", "toggle"])
def test_episode_markers_split_the_recording(tmp_path: Path, marker: str):
    trajectories = [demo_trajectory(n, seed=n) for n in (3, 7, 5)]
    bag = write_demo_bag(tmp_path / "bag", trajectories, marker=marker, idle_actions=2)
    bag_to_dataset(bag, tmp_path / "data")
    dataset = load_dataset(tmp_path / "data", strict=True)
    # Actions sent between episodes (idle_actions) belong to none of them.
    assert [t.length for t in dataset] == [4, 8, 6]
    for trajectory, source in zip(dataset, trajectories):
        assert_same(trajectory.arrays, source)
    starts = [t.meta["start_ns"] for t in dataset]
    assert starts == sorted(starts) and all(t.meta["stop_ns"] > t.meta["start_ns"]
                                            for t in dataset)


def test_without_episode_topic_the_whole_bag_is_one_trajectory(tmp_path: Path):
    source = demo_trajectory(5, seed=5)
    bag = write_demo_bag(tmp_path / "bag", [source], topics=BagTopics(episode=None))
    paths = bag_to_dataset(bag, tmp_path / "data", episode_topic=None)
    assert len(paths) == 1
    (trajectory,) = load_dataset(tmp_path / "data", strict=True)
    assert_same(trajectory.arrays, source)
    assert trajectory.meta["start_ns"] is None


def test_optional_reward_and_cost_topics_read_zero_when_not_recorded(tmp_path: Path):
    source = demo_trajectory(4, seed=6, reward_at=[2], cost_at=[1])
    bag = write_demo_bag(tmp_path / "bag", [source], topics=BagTopics(reward=None, cost=None))
    bag_to_dataset(bag, tmp_path / "data", reward_topic=None, cost_topic="")
    (trajectory,) = load_dataset(tmp_path / "data", strict=True)
    assert not trajectory.arrays["reward"].any() and not trajectory.arrays["cost"].any()
    np.testing.assert_array_equal(trajectory.arrays["action"], source["action"])


def test_labels_topic_replaces_reward_and_cost(tmp_path: Path):
    source = demo_trajectory(5, seed=8, reward_at=[4], cost_at=[1, 2])
    topics = BagTopics(reward=None, cost=None, labels="/fosp/labels")
    bag = write_demo_bag(tmp_path / "bag", [source], topics=topics, storage="sqlite3")
    # The default reward/cost topic names are not in the bag: labels_topic replaces them.
    bag_to_dataset(bag, tmp_path / "data", labels_topic="/fosp/labels")
    (trajectory,) = load_dataset(tmp_path / "data", strict=True)
    assert_same(trajectory.arrays, source)
    assert trajectory.meta["topics"]["labels"] == "/fosp/labels"
    assert trajectory.meta["topics"]["reward"] is None


S = 1_000_000_000  # ns
MS = 1_000_000


def write_timeline(path: Path, messages: list[tuple[str, int, Any]]) -> Path:
    """A bag with exactly the given (role, time, msg) messages."""
    from rosbags.rosbag2 import Writer

    store = typestore()
    names = {"image": "/camera/camera/color/image_raw",
             "pose": "/franka_robot_state_broadcaster/current_pose", "action": "/fosp/action",
             "cost": "/fosp/cost", "episode": "/fosp/episode"}
    with Writer(path, version=9) as writer:
        conns = {}
        for role, t, msg in sorted(messages, key=lambda m: m[1]):
            if role not in conns:
                conns[role] = writer.add_connection(names[role], msg.__msgtype__,
                                                    typestore=store)
            writer.write(conns[role], t, store.serialize_cdr(msg, msg.__msgtype__))
    return path


def test_step_labels_actions_and_markers_follow_the_live_recorder(tmp_path: Path):
    store = typestore()
    types = store.types
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    poses = [np.array([0.5, 0.0, 0.07, 0.0, 0.0, 0.1 * i]) for i in range(4)]

    def cost(value: float) -> Any:
        return types["std_msgs/msg/Float32"](data=value)

    def marker(text: str) -> Any:
        return types["std_msgs/msg/String"](data=text)

    t0 = 100 * S
    messages = [
        ("episode", t0, marker("start")),
        # Sent before any observation exists: dropped.
        ("action", t0 + 50 * MS, array_msg(store, [1, 0, 0, 0, 0, 0])),
        ("episode", t0 + 60 * MS, marker("start")),  # already recording: ignored
        ("image", t0 + 90 * MS, image_msg(store, images[0], t0 + 90 * MS)),
        ("pose", t0 + 90 * MS, pose_msg(store, poses[0], t0 + 90 * MS)),
        ("action", t0 + 100 * MS, array_msg(store, [0.5, 0, 0, 0, 0, 0])),       # a_1
        # A cost pulse inside step 1 that is already cleared at the next tick still counts.
        ("cost", t0 + 130 * MS, cost(1.0)),
        ("cost", t0 + 160 * MS, cost(0.0)),
        ("image", t0 + 190 * MS, image_msg(store, images[1], t0 + 190 * MS)),
        ("pose", t0 + 190 * MS, pose_msg(store, poses[1], t0 + 190 * MS)),
        ("action", t0 + 200 * MS, array_msg(store, [0, 2.0, 0, 0, 0, 0])),       # a_2, clipped
        ("action", t0 + 250 * MS, array_msg(store, [np.nan, 0, 0, 0, 0, 0])),    # skipped
        ("image", t0 + 290 * MS, image_msg(store, images[2], t0 + 290 * MS)),
        ("pose", t0 + 290 * MS, pose_msg(store, poses[2], t0 + 290 * MS)),
        ("action", t0 + 300 * MS, array_msg(store, [0, 0, -0.25, 0, 0, 0])),     # a_3
        # No cost message during step 3: the value held since step 1 (0) applies.
        ("image", t0 + 390 * MS, image_msg(store, images[3], t0 + 390 * MS)),
        ("pose", t0 + 390 * MS, pose_msg(store, poses[3], t0 + 390 * MS)),
        ("episode", t0 + 395 * MS, marker("stop")),
        ("episode", t0 + 500 * MS, marker("stop")),  # not recording: ignored
    ]
    bag = write_timeline(tmp_path / "bag", messages)
    bag_to_dataset(bag, tmp_path / "data", reward_topic=None)
    (trajectory,) = load_dataset(tmp_path / "data", strict=True)
    arrays = trajectory.arrays
    np.testing.assert_array_equal(arrays["image"], images)
    np.testing.assert_allclose(arrays["pose"], np.array(poses), atol=1e-6)
    np.testing.assert_array_equal(arrays["action"], [[0, 0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0, 0],
                                                     [0, 1, 0, 0, 0, 0], [0, 0, -0.25, 0, 0, 0]])
    np.testing.assert_array_equal(arrays["cost"], [0, 1, 0, 0])
    assert trajectory.meta["dropped_actions"] == 1
    assert trajectory.meta["start_ns"] == t0 and trajectory.meta["stop_ns"] == t0 + 395 * MS


def test_missing_topics_are_named(tmp_path: Path):
    bag = write_demo_bag(tmp_path / "bag", [demo_trajectory(2)], topics=BagTopics(cost=None))
    with pytest.raises(BagError) as info:
        bag_to_dataset(bag, tmp_path / "data", image_topic="/cam/image")
    message = str(info.value)
    assert "image topic '/cam/image'" in message
    assert "cost topic '/fosp/cost'" in message
    assert "/camera/camera/color/image_raw (sensor_msgs/msg/Image)" in message  # what exists
    assert not (tmp_path / "data").exists()


def test_wrong_message_type_is_named(tmp_path: Path):
    bag = write_demo_bag(tmp_path / "bag", [demo_trajectory(2)])
    with pytest.raises(BagError, match="pose topic '/fosp/reward' has type std_msgs/msg/Float32"):
        bag_to_dataset(bag, tmp_path / "data", pose_topic="/fosp/reward")


def test_missing_bag_and_non_bag_directory(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        bag_to_dataset(tmp_path / "nope", tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a readable rosbag2"):
        bag_to_dataset(tmp_path / "empty", tmp_path / "data")


def _image_msg(encoding: str, rows: np.ndarray, width: int, step: int):
    """Image message whose data is ``rows`` (height x step bytes) verbatim."""
    types = typestore().types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="")
    h, w = rows.shape[0], width
    return types["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding,
                                          is_bigendian=0, step=step,
                                          data=rows.reshape(-1).astype(np.uint8))


def test_unsupported_encoding_is_named():
    msg = _image_msg("mono8", np.zeros((64, 64), np.uint8), 64, 64)
    with pytest.raises(BagError, match="unsupported image encoding 'mono8'"):
        image_from_msg(msg, "/camera/image")


def test_padded_rows_are_cropped_by_step():
    rgb = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    padded = np.zeros((64, 64 * 3 + 8), np.uint8)
    padded[:, : 64 * 3] = rgb.reshape(64, -1)
    padded[:, 64 * 3 :] = 255  # padding bytes must not leak into the image
    np.testing.assert_array_equal(image_from_msg(_image_msg("rgb8", padded, 64, 64 * 3 + 8)), rgb)


def test_cli_from_bag(tmp_path: Path, capsys):
    # Recorded as the fosp_ros graph publishes it: [reward, cost] together on /fosp/labels,
    # which is what the CLI reads by default.
    graph_topics = BagTopics(reward=None, cost=None, labels="/fosp/labels")
    bag = write_demo_bag(tmp_path / "bag", [demo_trajectory(3), demo_trajectory(2, seed=9)],
                         topics=graph_topics)
    assert main(["dataset", "from-bag", str(bag), "--out", str(tmp_path / "data"),
                 "--task", "safereach", "--rate", "10"]) == 0
    assert "wrote 2 trajectories" in capsys.readouterr().out
    assert len(load_dataset(tmp_path / "data", strict=True)) == 2
    assert main(["dataset", "from-bag", str(bag), "--out", str(tmp_path / "other"),
                 "--action-topic", "/teleop/action"]) == 2
    assert "action topic '/teleop/action'" in capsys.readouterr().err
