"""recorder: image, pose, action, reward and cost at the control rate -> dataset trajectories.

One trajectory per episode, in the dataset format of ``fosp_core.data.dataset`` (``fosp pretrain``
reads it directly). Episodes start and stop on ``/fosp/episode`` ("start" / "stop", e.g. from
the SpaceMouse's first button) or the ``/fosp/record/start`` and ``/fosp/record/stop``
services. An episode also ends by itself after ``episode_steps`` steps, as the paper's
80-step trajectories do.

Rows follow the dataset's convention, one per action (each action is one control step: the
teleop and policy nodes publish one per tick). The action stored is the one the arm carried
out, as ``franka_interface`` reports it on ``executed_action`` for each action it handled:
while the shield holds the arm (a latched stop, an action that arrived stale) that is zeros,
not the action the operator pushed, so no row pairs an action with a motion that did not
happen. Without ``franka_interface`` nothing moves the arm and nothing is recorded. At "start"
the latest observation becomes row 0. When the next action arrives, the step of the previous
one is over, so a row holds the latest observation, the previous action, and the labels seen
since it was sent (a flag seen at any point counts). A timer would drift against the action
stream and pair observations with the wrong actions. Every trajectory is written atomically
when its episode ends, so a killed recorder loses at most the episode in progress.

An executed action whose DDS source timestamp is older than the episode's "start" is not a
step of it: a recorder that lags may handle "start" before the previous episode's last
actions. The timestamp is ``franka_interface``'s system clock; on another machine, the two
clocks must agree (chrony or PTP). rclpy before Iron (Humble) gives no timestamp, and there
every action after "start" counts.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from fosp_core.data.dataset import DatasetWriter, rows_to_arrays
from fosp_core.data.images import to_policy_image
from fosp_core.envs.state_layout import STATE_DIM
from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_from_msg, image_from_msg, pose_from_msg
from fosp_ros.runtime import (
    POSE_QOS,
    config_parameter,
    run_nodes,
    source_timestamp,
    subscribe_with_info,
)

ACTION_QUEUE = 100  # 10 s of actions at the control rate


class Recorder(Node):
    def __init__(self, **node_kwargs):
        super().__init__("recorder", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        out = self.declare_parameter("out", "data/teleop").get_parameter_value().string_value
        self.task = self.declare_parameter("task", self.cfg.env.task).get_parameter_value() \
            .string_value
        self.behaviour = self.declare_parameter("behaviour", "teleop").get_parameter_value() \
            .string_value
        self.writer = DatasetWriter(out)
        self.size = self.cfg.env.image_size
        self.max_steps = self.cfg.env.episode_steps
        self._lock = threading.Lock()
        self._image: np.ndarray | None = None
        self._pose: np.ndarray | None = None
        self._state: np.ndarray | None = None
        self._pending: np.ndarray | None = None  # last action, its step not yet recorded
        self._labels = np.zeros(2)  # max over the current step
        self._rows: list[dict] | None = None  # None: not recording
        self._started_ns = 0  # when the episode being recorded started (system clock)

        t = self.cfg.ros.topics
        self.create_subscription(Image, t.image, self._on_image, 10)
        self.create_subscription(PoseStamped, t.pose, self._on_pose, POSE_QOS)
        self.create_subscription(Float32MultiArray, t.sim_state, self._on_state, 10)
        # Every action is a row: a recorder that falls behind must queue them, not drop them.
        subscribe_with_info(self, Float32MultiArray, t.executed_action, self._on_action,
                            ACTION_QUEUE)
        self.create_subscription(Float32MultiArray, t.labels, self._on_labels, ACTION_QUEUE)
        self.create_subscription(String, t.episode, self._on_episode, 10)
        self.create_service(Trigger, "/fosp/record/start", self._service(self.start))
        self.create_service(Trigger, "/fosp/record/stop", self._service(self.stop))
        self.status = self.create_publisher(String, t.record_status, 10)
        self.get_logger().info(f"recorder: writing to {out} ({len(self.writer)} episodes there)")

    # ---- inputs (latest value wins) ------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        image = to_policy_image(image_from_msg(msg), self.size)
        with self._lock:
            self._image = image

    def _on_pose(self, msg: PoseStamped) -> None:
        with self._lock:
            self._pose = pose_from_msg(msg)

    def _on_state(self, msg: Float32MultiArray) -> None:
        with self._lock:
            self._state = array_from_msg(msg)

    def _on_action(self, msg: Float32MultiArray, info) -> None:
        action = array_from_msg(msg)
        if action.shape != (6,) or not np.all(np.isfinite(action)):
            return  # franka_interface reports none such; a stray publisher's is no step
        with self._lock:
            if self._rows is None:
                return
            if 0 < source_timestamp(info) < self._started_ns:
                # Carried out before "start", handled after it: a recorder that lags (or the
                # multi-threaded executor taking "start" first) must not put the previous
                # episode's last actions into this one.
                return
            self._close_step()
            self._pending = np.clip(action, -1.0, 1.0)
            full = len(self._rows) > self.max_steps
        if full:
            self.stop()

    def _close_step(self) -> None:
        """Append the row of the pending action's step (caller holds the lock)."""
        if self._pending is None:
            return
        self._rows.append(dict(self._observation(), action=self._pending,
                               reward=float(self._labels[0]), cost=float(self._labels[1])))
        self._pending, self._labels = None, np.zeros(2)

    def _on_labels(self, msg: Float32MultiArray) -> None:
        labels = array_from_msg(msg)[:2]
        with self._lock:
            self._labels = np.maximum(self._labels, labels)

    def _on_episode(self, msg: String) -> None:
        command = msg.data.strip().lower()
        if command == "start":
            self.start()
        elif command == "stop":
            self.stop()
        elif command == "toggle":
            self.stop() if self._rows is not None else self.start()

    # ---- episodes ------------------------------------------------------------------------
    def _observation(self) -> dict | None:
        if self._image is None or self._pose is None:
            return None
        state = self._state if self._state is not None else np.zeros(STATE_DIM)
        return {"image": self._image, "pose": self._pose, "state": state}

    def start(self) -> str:
        with self._lock:
            if self._rows is not None:
                return "already recording"
            obs = self._observation()
            if obs is None:
                return "no image or pose received yet"
            self._rows = [dict(obs, action=np.zeros(6), reward=0.0, cost=0.0)]
            self._started_ns = time.time_ns()
            self._pending, self._labels = None, np.zeros(2)
        self._report(f"recording episode {len(self.writer)}")
        return "recording"

    def stop(self) -> str:
        with self._lock:
            if self._rows is not None and len(self._rows) <= self.max_steps:
                self._close_step()
            rows, self._rows = self._rows, None
        if rows is None:
            return "not recording"
        if len(rows) < 2:
            self._report("episode discarded: no steps recorded")
            return "discarded"
        return self._save(rows)

    def _save(self, rows: list[dict]) -> str:
        arrays = rows_to_arrays(rows, rows[0]["image"].shape[0], STATE_DIM)
        meta = {"task": self.task, "behaviour": self.behaviour, "seed": None, "layout": {},
                "source": "ros", "state_available": self._state is not None}
        path = self.writer.add(arrays, meta)
        records = self.writer.records
        successes = sum(r["success"] for r in records)
        violations = sum(r["violation"] for r in records)
        self._report(f"saved {path.name} ({len(rows) - 1} steps, "
                     f"success={bool(arrays['reward'].any())}, "
                     f"violation={bool(arrays['cost'].any())}); "
                     f"{len(records)} episodes: {successes} successful, {violations} violating")
        return f"saved {path.name}"

    def _report(self, text: str) -> None:
        self.get_logger().info(text)
        self.status.publish(String(data=text))

    def _service(self, action):
        def handle(_request, response):
            message = action()
            response.success = message in ("recording",) or message.startswith("saved")
            response.message = message
            return response

        return handle


def main(args: list[str] | None = None) -> int:
    return run_nodes([Recorder], args)


if __name__ == "__main__":
    raise SystemExit(main())
