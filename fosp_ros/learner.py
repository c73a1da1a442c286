"""learner: stores every trajectory, fine-tunes after each one, sends new weights to the policy.

Can run on another machine (a GPU box): it only talks ROS. On ``/fosp/trajectory`` it receives
each finished episode as the bytes of a dataset file, writes it to ``OUT/online_data`` *before*
training on it (a restart loses nothing: the stored trajectories and ``OUT/learner.pt`` are
reloaded), adds it to the replay, and, with ``auto_finetune``, runs a round of ``grad_steps``
gradient steps. ``/fosp/finetune`` (std_srvs/Trigger) asks for a round on demand; its answer
reports steps, losses and duration. After every round the acting weights go out on
``/fosp/weights`` (latched, so a policy that starts later gets them) and the learner's state is
checkpointed. Rounds run on a worker thread, one at a time.

Parameters: ``run`` (pretrained run; '' = the shipped model, which acts on the simulator's
state), ``out`` ('' = RUN/online), ``data`` (offline dataset; '' = the one the run was trained
on; a run that records none, as the shipped models, fine-tunes on the online trajectories
alone and says so), ``grad_steps`` (40, as the paper),
``auto_finetune``, ``pex``, ``device``, ``seed``, ``recipe`` (a recipe of config/recipes, or
a YAML file; '' = the run's own) and ``set``: config overrides, applied after the recipe, as
``fosp finetune --set`` takes them, a string array, e.g.
``-p set:='["fosp.online_actor_loss=safe_success", "fosp.online_hold_weight=0.25"]'``.
The policy node gets the changed config with the weights.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import UInt8MultiArray
from std_srvs.srv import Trigger

from fosp_core.data.dataset import DatasetWriter, load_dataset, trajectory_from_bytes
from fosp_core.learning.finetune import Learner, RoundLog, round_summary, weights_to_bytes
from fosp_core.learning.recipes import recipe_of_run, with_recipe
from fosp_core.learning.runs import LEARNER_FILE, run_dataset
from fosp_core.util.config import dotted_overrides, save_yaml
from fosp_core.util.files import load_tensors
from fosp_ros.config import shipped_model_path
from fosp_ros.policy import LATCHED
from fosp_ros.runtime import run_nodes


class LearnerNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("learner", **node_kwargs)
        self.declare_parameter("config", "")  # the graph's YAML; the run holds the agent's
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("run", ""), ("out", ""), ("data", ""), ("grad_steps", 40), ("auto_finetune", True),
            ("pex", True), ("device", "cpu"), ("seed", 0), ("skip_bad", False),
            ("recipe", ""))}
        run = Path(p["run"]) if p["run"] else shipped_model_path()
        self.out = Path(p["out"]) if p["out"] else run / "online"
        try:
            data = run_dataset(run, p["data"] or None)
        except FileNotFoundError:
            data = None
            self.get_logger().warning(
                f"learner: {run} records no offline dataset (pass -p data:=DIR, or data:= to "
                "the launch file): fine-tuning on the online trajectories alone, from the "
                "first one on")
        self.grad_steps = int(p["grad_steps"])
        self.auto = bool(p["auto_finetune"])
        # An empty string array has no type of its own in ROS, so 'set' is declared typed,
        # without a default.
        self.declare_parameter("set", Parameter.Type.STRING_ARRAY)
        try:
            overrides = dotted_overrides(list(self.get_parameter("set").value))
        except ParameterUninitializedException:
            overrides = {}
        # The recipe's fine-tuning settings (the one named, else the run's own), then 'set'.
        recipe = recipe_of_run(p["recipe"] or None, run)
        overrides = with_recipe(recipe, "finetune", overrides)
        pex = bool(p["pex"]) and (recipe is None or recipe.pex)
        self.learner = Learner.from_run(run, data, pex=pex, device=p["device"],
                                        seed=p["seed"], overrides=overrides,
                                        skip_bad=p["skip_bad"])
        self.writer = DatasetWriter(self.out / "online_data")
        # The config fine-tuned with (the run's, plus 'set'): `fosp eval --run OUT` reads it.
        save_yaml(self.learner.agent.config, self.out / "config.yaml")
        self._restore()
        self.curves = RoundLog(self.out, self.learner.steps)  # OUT/tb

        self.weights_pub = self.create_publisher(UInt8MultiArray, "/fosp/weights", LATCHED)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(UInt8MultiArray, "/fosp/trajectory", self._on_trajectory,
                                 reliable)
        self.create_service(Trigger, "/fosp/finetune", self._on_finetune,
                            callback_group=ReentrantCallbackGroup())
        self._rounds: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="finetune", daemon=True)
        self._worker.start()
        self.rounds_done = 0
        self._publish_weights()
        self._saved_steps = self.learner.steps  # the steps learner.pt holds
        self.get_logger().info(f"learner: {run}, {len(self.learner.replay)} trajectories in "
                               f"replay, {self.learner.steps} steps so far, storing to "
                               f"{self.out}")

    def _restore(self) -> None:
        """After a restart: stored trajectories, the saved state, then any stored after it.

        A crash between storing a trajectory and the next checkpoint leaves more files than
        the checkpoint knows; those rejoin the replay after the saved state is restored.
        """
        stored = load_dataset(self.out / "online_data").trajectories
        checkpoint = self.out / LEARNER_FILE
        known = 0
        if checkpoint.is_file():
            state = load_tensors(checkpoint)
            known = self.learner.restore(state, [t.arrays for t in stored])
        for trajectory in stored[known:]:
            self.learner.add_trajectory(trajectory.arrays)

    def _on_trajectory(self, msg: UInt8MultiArray) -> None:
        try:
            arrays, meta = trajectory_from_bytes(bytes(msg.data), "/fosp/trajectory")
        except ValueError as err:  # DatasetError is one
            self.get_logger().error(f"dropped a bad trajectory: {err}")
            return
        path = self.writer.add(arrays, meta)  # on disk before anything trains on it
        self.learner.add_trajectory(arrays)
        self.get_logger().info(f"stored {path.name}: success={bool(arrays['reward'].any())} "
                               f"violation={bool(arrays['cost'].any())}")
        if self.auto:
            self._rounds.put(None)

    def _on_finetune(self, _request, response):
        done: queue.Queue = queue.Queue()
        self._rounds.put(done)
        while True:
            try:
                stats = done.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._worker.is_alive():  # stopped before it took this round
                    stats = {"error": "the learner is shutting down"}
                    break
        response.success = "error" not in stats
        response.message = stats.get("error") or (
            f"steps={int(stats['steps'])} duration_s={stats['duration_s']:.2f} "
            + " ".join(f"{k}={v:.4g}" for k, v in round_summary(stats).items())
            + f" total_steps={self.learner.steps} trajectories={self.learner.trajectories}")
        return response

    def _work(self) -> None:
        while True:
            reply = self._rounds.get()
            if self._stopping.is_set():
                return  # a caller waiting for this round hears so from _on_finetune
            try:
                stats = self.learner.train(self.grad_steps, stop=self._stopping)
                self._save()
                self.curves.add(self.learner.steps, stats)
                if not self._stopping.is_set():
                    self._publish_weights()
                self.rounds_done += 1
            except Exception as err:  # report to the caller; the node keeps serving
                self.get_logger().error(f"fine-tuning round failed: {err!r}")
                stats = {"error": f"fine-tuning round failed: {err!r}"}
            if reply is not None:
                reply.put(stats)

    def _publish_weights(self) -> None:
        msg = UInt8MultiArray()
        msg.data = weights_to_bytes(self.learner.snapshot())
        self.weights_pub.publish(msg)

    def _save(self) -> None:
        """learner.pt, written atomically (a stop while saving leaves the previous one)."""
        self.learner.save(self.out / LEARNER_FILE)
        self._saved_steps = self.learner.steps

    def request_stop(self) -> None:
        """On SIGINT, before the executor waits for its callbacks: the round in progress ends
        after its current step, so a /fosp/finetune call waiting for it returns at once."""
        self._stopping.set()
        self._rounds.put(None)

    def close(self) -> None:
        self.request_stop()
        self._worker.join(timeout=30.0)
        if self.learner.steps != self._saved_steps:  # the worker saved after its last step
            self._save()
        self.curves.close()


def main(args: list[str] | None = None) -> int:
    return run_nodes([LearnerNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
