"""labeler: reward and cost for every control step, published as [reward, cost] on ``labels``.

Sources (parameter ``source``):
- ``sim``: relays the twin's ground truth (``sim_robot`` already applies the paper's Fig. 8
  labelling: cost from the first touch until the obstacle is at rest, reward while touching).
- ``operator``: the paper labels by hand. An operator sets the current flags with
  ``/fosp/label/reward`` and ``/fosp/label/cost`` (std_srvs/SetBool) or from device buttons
  via the Bool topics ``/fosp/label/reward_flag`` and ``/fosp/label/cost_flag``; the flags
  are published at the control rate until cleared.
"""

from __future__ import annotations

import threading

from rclpy.node import Node
from std_msgs.msg import Bool, Float32MultiArray
from std_srvs.srv import SetBool

from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_from_msg, array_to_msg
from fosp_ros.runtime import config_parameter, run_nodes

SOURCES = ("sim", "operator")


class Labeler(Node):
    def __init__(self, **node_kwargs):
        super().__init__("labeler", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        self.source = self.declare_parameter("source", "sim").get_parameter_value().string_value
        if self.source not in SOURCES:
            raise ValueError(f"labeler source must be one of {SOURCES}, not {self.source!r}")
        topics = self.cfg.ros.topics
        self.pub = self.create_publisher(Float32MultiArray, topics.labels, 10)
        self._flags = {"reward": False, "cost": False}
        self._lock = threading.Lock()
        if self.source == "sim":
            self.create_subscription(Float32MultiArray, topics.sim_contacts, self._on_contacts, 10)
        else:
            for name in ("reward", "cost"):
                self.create_service(SetBool, f"/fosp/label/{name}", self._setter(name))
                self.create_subscription(Bool, f"/fosp/label/{name}_flag",
                                         lambda msg, n=name: self._set(n, msg.data), 10)
            self.create_timer(1.0 / self.cfg.ros.control_rate_hz, self._publish_flags)

    def _on_contacts(self, msg: Float32MultiArray) -> None:
        _, _, reward, cost = array_from_msg(msg)
        self.pub.publish(array_to_msg([reward, cost]))

    def _set(self, name: str, value: bool) -> None:
        with self._lock:
            self._flags[name] = bool(value)

    def _setter(self, name: str):
        def handle(request, response):
            self._set(name, request.data)
            response.success, response.message = True, f"{name} = {int(request.data)}"
            return response

        return handle

    def _publish_flags(self) -> None:
        with self._lock:
            labels = [float(self._flags["reward"]), float(self._flags["cost"])]
        self.pub.publish(array_to_msg(labels))


def main(args: list[str] | None = None) -> int:
    return run_nodes([Labeler], args)


if __name__ == "__main__":
    raise SystemExit(main())
