"""policy: runs episodes with the acting API and safe policy expansion at the control rate.

Each episode: reset (``/fosp/sim/reset`` with the simulated robot, ``/fosp/home`` on hardware),
then ``episode_steps`` control steps. Every tick turns the latest camera image and pose into an
action with ``fosp_core.learning.finetune.PexPolicy`` and publishes it; ``franka_interface``
shields it.
The finished trajectory (dataset row convention, labels from the labeler) goes to the learner
on ``/fosp/trajectory`` as the bytes of a dataset file. New weights arrive on
``/fosp/weights`` at any time and are swapped in between episodes, so a fine-tuning round in the
learner never stalls this loop. While the image, pose or state was published longer than
``ros.max_obs_age`` ago (a stalled camera or robot stream, or a sample that waited in this
node's queue), the episode waits instead of acting on it, and the shield holds the arm. Each
row stores the action the arm carried out, as
``franka_interface`` reports it (``executed_action``, one report per action, in order): zeros
where the shield held the arm (a latched stop, a stale action), so the learner never pairs an
action with a motion that did not happen; ``shield_held`` in the trajectory's meta counts such
steps. The reports are matched to the actions in order when the episode ends (one may arrive
after the next tick: a late tick is followed by an immediate one); a report stamped before the
episode's reset belongs to the previous episode and is dropped.

Parameters: ``run`` (a pretrained run, or a fine-tuned one such as the learner's
``RUN/online``, to act with until a learner sends weights; '' = wait for them),
``episodes`` (0 = until stopped), ``autostart``, ``reset_service``, ``deterministic``,
``device``, ``seed``, ``recipe`` (a recipe that acts by the most likely choice turns on
``deterministic``), ``wait_for_weights`` (default true: while a learner is connected, the
next episode starts only with weights newer than the last episode's, as in the paper's
protocol of fine-tuning after each trajectory; at most ``weights_timeout`` seconds).
Services: ``/fosp/policy/start``, ``/fosp/policy/stop`` (Trigger).
Topics: ``/fosp/pex`` (Float32MultiArray [chosen, q~ offline, q~ online, p offline, p online]).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from fosp_core.data.dataset import rows_to_arrays, trajectory_to_bytes
from fosp_core.data.images import to_policy_image
from fosp_core.learning.finetune import EpisodeLog, PexPolicy, weights_from_bytes
from fosp_core.learning.finetune_run import load_policy
from fosp_core.learning.recipes import load_recipe
from fosp_core.util.stats import rate_text
from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_from_msg, array_to_msg, image_from_msg, pose_from_msg
from fosp_ros.runtime import (
    POSE_QOS,
    config_parameter,
    message_age,
    run_nodes,
    source_timestamp,
    subscribe_with_info,
)

# Weights are published once per round and must reach a policy that starts later.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Policy(Node):
    def __init__(self, **node_kwargs):
        super().__init__("policy", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("run", ""), ("episodes", 0), ("autostart", True), ("reset_service", "/fosp/home"),
            ("deterministic", False), ("device", "cpu"), ("seed", 0),
            ("wait_for_weights", True), ("weights_timeout", 300.0), ("recipe", ""))}
        if p["recipe"]:  # a recipe that acts by the most likely choice makes the policy do so
            p["deterministic"] = p["deterministic"] or load_recipe(p["recipe"]).deterministic
        self.params = p
        # Until the learner's weights arrive, if one is connected.
        self.policy = load_policy(p["run"], p["device"], p["seed"]) if p["run"] else None
        self._pending_weights: dict | None = None
        self._lock = threading.Lock()
        self._obs: dict[str, np.ndarray] = {}
        self._obs_time: dict[str, float] = {}  # when each input was published (monotonic)
        self._labels = np.zeros(2)
        self._executed: list[np.ndarray] = []  # franka_interface's reports, this episode
        self._started_ns = 0  # when this episode's reports began to count (system clock)
        self.size = self.cfg.env.image_size
        self.steps_per_episode = self.cfg.env.episode_steps
        self.period = 1.0 / self.cfg.ros.control_rate_hz
        self.running = bool(p["autostart"])
        self.episodes_done = 0
        self.successes = self.violations = 0  # over the episodes done, for the summary
        self.step_ms: list[float] = []  # policy.step latency, for the benchmark
        # Counted over every episode since the node started (each report gives the totals).
        self.late_ticks = 0  # episode ticks that started more than one period late
        self.stale_ticks = 0  # episode ticks skipped because an input was older than allowed
        self._episode: dict | None = None
        self._resetting = False
        self._weights_received = 0  # count of weight messages so far
        self._awaiting: tuple[int, float] | None = None  # (count at episode end, since when)
        self._retry_reset_at = 0.0  # a refused reset (a reflex being recovered) is asked again
        self._refusal = ""

        t = self.cfg.ros.topics
        subscribe_with_info(self, Image, t.image, self._on_image, 10)
        subscribe_with_info(self, PoseStamped, t.pose, self._on_pose, POSE_QOS)
        subscribe_with_info(self, Float32MultiArray, t.sim_state, self._on_state, 10)
        self.create_subscription(Float32MultiArray, t.labels, self._on_labels, 10)
        self.create_subscription(String, t.shield_status, self._on_shield_status, 10)
        # Every report counts (they are matched to the actions in order): queue a stall's worth.
        subscribe_with_info(self, Float32MultiArray, t.executed_action, self._on_executed, 100)
        self.create_subscription(UInt8MultiArray, "/fosp/weights", self._on_weights, LATCHED)
        self.action_pub = self.create_publisher(Float32MultiArray, t.action, 10)
        self.pex_pub = self.create_publisher(Float32MultiArray, "/fosp/pex", 10)
        self.status_pub = self.create_publisher(String, "/fosp/policy/status", 10)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.traj_pub = self.create_publisher(UInt8MultiArray, "/fosp/trajectory", reliable)
        self.reset_client = self.create_client(Trigger, p["reset_service"],
                                               callback_group=ReentrantCallbackGroup())
        self.create_service(Trigger, "/fosp/policy/start", self._on_start)
        self.create_service(Trigger, "/fosp/policy/stop", self._on_stop)
        # The control loop has a group of its own: no other callback can delay a tick.
        self._next_tick = time.monotonic()
        self.create_timer(self.period, self._tick, callback_group=MutuallyExclusiveCallbackGroup())

    # ---- inputs ------------------------------------------------------------------------------
    def _on_image(self, msg: Image, info) -> None:
        self._set_obs("image", to_policy_image(image_from_msg(msg), self.size), info)

    def _on_pose(self, msg: PoseStamped, info) -> None:
        self._set_obs("pose", pose_from_msg(msg).astype(np.float32), info)

    def _on_state(self, msg: Float32MultiArray, info) -> None:
        self._set_obs("state", array_from_msg(msg).astype(np.float32), info)

    def _set_obs(self, key: str, value: np.ndarray, info) -> None:
        # An input's age runs from when it was published, not from when this callback ran: a
        # busy executor works through its queue late, and an old sample handled now is still
        # old. A publisher whose clock lags by more than max_obs_age makes every input stale,
        # and the policy waits.
        published = time.monotonic() - message_age(info)
        with self._lock:
            self._obs[key], self._obs_time[key] = value, published

    def _on_labels(self, msg: Float32MultiArray) -> None:
        with self._lock:
            self._labels = np.maximum(self._labels, array_from_msg(msg)[:2])

    def _on_shield_status(self, msg: String) -> None:
        # A reflex (fosp_ros.reflex) during an episode: the arm hit something hard enough to
        # stop. The row it happened at is marked; the episode goes on with the arm held.
        episode = self._episode
        if msg.data == "reflex" and episode is not None and "reflex_at" not in episode:
            episode["reflex_at"] = len(episode["rows"]) - 1

    def _on_executed(self, msg: Float32MultiArray, info) -> None:
        with self._lock:
            # A report of the previous episode's last action can arrive after the reset
            # (a lagging executor): it would shift every report by one, so it is dropped
            # by its DDS source timestamp. Without one (Humble) every report counts.
            if 0 < source_timestamp(info) < self._started_ns:
                return
            self._executed.append(array_from_msg(msg).astype(np.float32))

    def _on_weights(self, msg: UInt8MultiArray) -> None:
        weights = weights_from_bytes(bytes(msg.data))
        with self._lock:
            self._pending_weights = weights
            self._weights_received += 1
        self._report(f"weights of learner step {weights.get('step')} received")

    def _on_start(self, _request, response):
        self.running = True
        response.success, response.message = True, "running episodes"
        return response

    def _on_stop(self, _request, response):
        self.running = False
        response.success, response.message = True, "stops after the current episode"
        return response

    # ---- control loop ------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        # Only ticks that drive the arm count; an idle loop waiting for weights may lag.
        if self._episode is not None and now - self._next_tick > self.period:
            self.late_ticks += 1
        self._next_tick = max(self._next_tick + self.period, now)
        if self._episode is None:
            self._maybe_start_episode()
            return
        with self._lock:
            age = now - min(self._obs_time[k] for k in self._input_keys())
        if age > self.cfg.ros.max_obs_age:
            # Acting on a frozen camera image or pose would steer blind. Without a new action
            # the shield holds the arm at its last target; the step waits for fresh input,
            # so the next row still shows what this step's action did.
            self.stale_ticks += 1
            self.get_logger().warning(f"input {age:.1f} s old ({'/'.join(self._input_keys())}):"
                                      " the episode waits for it", throttle_duration_sec=5.0)
            return
        with self._lock:
            obs = dict(self._obs)
            labels, self._labels = self._labels, np.zeros(2)
        episode = self._episode
        if episode["t"] > 0:  # the row of the previous step: its result and labels
            episode["rows"].append(dict(obs, action=episode["last_action"],
                                        reward=labels[0], cost=labels[1]))
        if episode["t"] == self.steps_per_episode:
            self._finish_episode()
            return
        start = time.perf_counter()
        decision = self.policy.step(self._policy_obs(obs), self.params["deterministic"],
                                    touching_target=bool(labels[0] > 0))
        self.step_ms.append(1e3 * (time.perf_counter() - start))
        self.action_pub.publish(array_to_msg(decision.action))
        self.pex_pub.publish(array_to_msg([float(decision.chosen == "online"),
                                           *np.nan_to_num(decision.q_tilde),
                                           *decision.probabilities]))
        episode["last_action"] = decision.action
        log = episode["log"]
        log.add(decision)  # its stopped_at / held_at equal t only at the step they began
        if log.stopped_at == episode["t"]:
            self._report(f"foresight stop at step {episode['t']}: the world model foresees a "
                         f"cost of {decision.foreseen_cost:.2f}; holding still until the "
                         "episode ends")
        if log.held_at == episode["t"]:
            self._report(f"target touched at step {episode['t']}: holding still until the "
                         "episode ends (fosp.hold_on_success)")
        episode["t"] += 1

    def _policy_obs(self, obs: dict) -> dict:
        if self.policy.config.obs_mode == "state":
            return {"state": obs["state"]}
        return {"image": obs["image"], "pose": obs["pose"]}

    def _input_keys(self) -> tuple[str, ...]:
        """What the policy acts on; the pose is recorded in every mode."""
        state = self.policy is not None and self.policy.config.obs_mode == "state"
        return ("state", "pose") if state else ("image", "pose")

    def _ready(self) -> bool:
        with self._lock:
            return all(k in self._obs for k in self._input_keys())

    def _maybe_start_episode(self) -> None:
        if self._resetting or not self.running:
            return
        limit = self.params["episodes"]
        if limit and self.episodes_done >= limit:
            return
        if self._awaiting is not None:
            count, since = self._awaiting
            learner = self.count_publishers("/fosp/weights") > 0
            waited = time.monotonic() - since
            if learner and self._weights_received <= count and \
                    waited < self.params["weights_timeout"]:
                return  # the learner is still fine-tuning on the last trajectory
            self._awaiting = None
        with self._lock:
            weights, self._pending_weights = self._pending_weights, None
        if weights is not None:  # swap between episodes only
            if self.policy is None:
                self.policy = PexPolicy.from_weights(weights, self.params["device"],
                                                     self.params["seed"])
            else:
                self.policy.load_weights(weights)
        if self.policy is None or not self.reset_client.service_is_ready() or \
                time.monotonic() < self._retry_reset_at:
            return
        self._resetting = True
        self.reset_client.call_async(Trigger.Request()).add_done_callback(self._on_reset_done)

    def _on_reset_done(self, future) -> None:
        answer = future.result()
        if answer is not None and not answer.success:  # e.g. error recovery after a reflex
            if answer.message != self._refusal:
                self._report(f"reset refused, asking again: {answer.message}")
            self._refusal, self._retry_reset_at = answer.message, time.monotonic() + 0.5
            self._resetting = False
            return
        self._refusal = ""
        time.sleep(2 * self.period)  # let a fresh image and pose of the new layout arrive
        if not self._ready():
            self._resetting = False
            return
        with self._lock:
            first = dict(self._obs)
            self._labels = np.zeros(2)
            self._executed = []  # reports of this episode's actions from here on
            self._started_ns = time.time_ns()
        self.policy.reset()
        self._episode = {"t": 0,
                         "rows": [dict(first, action=np.zeros(6, np.float32), reward=0.0,
                                       cost=0.0)],
                         "last_action": np.zeros(6, np.float32), "log": EpisodeLog()}
        self._resetting = False

    def _executed_actions(self, rows: list[dict]) -> int:
        """Each row's action becomes the one the arm carried out; returns how many steps the
        shield held the arm. The reports are matched to the actions by their order, so they
        are used only if there is exactly one per action; otherwise (no franka_interface, a
        report lost before the endpoints matched, another node sending actions) the actions
        stay as sent, with a warning."""
        steps = len(rows) - 1
        deadline = time.monotonic() + 1.0  # the last report may still be on its way
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._executed) >= steps:
                    break
            if self.count_publishers(self.cfg.ros.topics.executed_action) == 0:
                break
            time.sleep(0.01)
        time.sleep(2 * self.period)  # one report too many would show now
        with self._lock:
            executed = list(self._executed)
        if len(executed) != steps:
            self.get_logger().warning(
                f"{len(executed)} reports of what the arm did for {steps} actions (is "
                "franka_interface running? does another node send actions?): the episode's "
                "actions are stored as sent", throttle_duration_sec=60.0)
            return 0
        held = 0
        for row, action in zip(rows[1:], executed):
            held += bool(row["action"].any() and not action.any())
            row["action"] = action
        return held

    def _finish_episode(self) -> None:
        episode, self._episode = self._episode, None
        episode["shield_held"] = self._executed_actions(episode["rows"])
        reflex_at = episode.get("reflex_at")
        if reflex_at is not None:
            # A reflex is a contact over the collision thresholds: a cost event, whatever the
            # labeler saw.
            episode["rows"][reflex_at]["cost"] = 1.0
        arrays = rows_to_arrays(episode["rows"], self.size, self.policy.config.state_dim)
        meta = {"task": self.cfg.env.task, "behaviour": "policy", "seed": None, "layout": {},
                "source": "ros", **episode["log"].meta(), "episode": self.episodes_done,
                "shield_held": episode["shield_held"], "reflex_at": reflex_at}
        msg = UInt8MultiArray()
        msg.data = trajectory_to_bytes(arrays, meta)
        self.traj_pub.publish(msg)
        self.episodes_done += 1
        if self.params["wait_for_weights"]:
            self._awaiting = (self._weights_received, time.monotonic())
        chosen = episode["log"].chosen
        online = chosen["online"] / max(1, sum(chosen.values()))
        p50, p99 = (np.percentile(self.step_ms, [50, 99]) if self.step_ms else (0.0, 0.0))
        success, violation = bool(arrays["reward"].any()), bool(arrays["cost"].any())
        self.successes += success
        self.violations += violation
        self._report(f"episode {self.episodes_done}: success={success} "
                     f"violation={violation} online={online:.2f} "
                     f"stopped_at={episode['log'].stopped_at} "
                     f"step_ms_p50={p50:.1f} step_ms_p99={p99:.1f} late_ticks={self.late_ticks} "
                     f"stale_ticks={self.stale_ticks} shield_held={episode['shield_held']} "
                     f"reflex={reflex_at is not None}")
        if self.episodes_done == self.params["episodes"]:  # an evaluation's last episode
            n = self.episodes_done
            self._report(f"{n} episodes done: success {rate_text(self.successes, n)}, "
                         f"violating {rate_text(self.violations, n)}")

    def _report(self, text: str) -> None:
        self.get_logger().info(text)
        self.status_pub.publish(String(data=text))


def main(args: list[str] | None = None) -> int:
    return run_nodes([Policy], args)


if __name__ == "__main__":
    raise SystemExit(main())
