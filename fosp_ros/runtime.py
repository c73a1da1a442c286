"""Running rclpy nodes: one place for init, the executor and a clean shutdown.

rclpy can abort at interpreter exit if the executor is not shut down and its threads joined
before ``rclpy.shutdown()``; every node's ``main`` goes through ``run_nodes``.
"""

from __future__ import annotations

import faulthandler
import re
import signal
import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription

# How long the executor may wait before run_nodes looks at its stop flag again: the most a
# SIGINT/SIGTERM waits to be noticed.
STOP_POLL_S = 0.1
SWITCH_INTERVAL_S = 0.0005  # the GIL hand-over interval of every node process (see run_nodes)

# The arm's pose. franka_ros2's franka_robot_state_broadcaster publishes current_pose
# best-effort, keep last 1, at up to 1 kHz (since v2.4.0 on Humble, v3.3.0 on Jazzy; reliable
# before). A reliable subscriber never matches a best-effort publisher and DDS reports nothing,
# so every pose subscriber is best-effort: that matches both kinds of publisher. Depth 1: only
# the newest pose matters, and at 1 kHz a deeper queue holds nothing but stale ones.
POSE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


def run_nodes(factories: list[Callable[[], Node]], args: list[str] | None = None) -> int:
    """Create the nodes, spin them on one multi-threaded executor until SIGINT/SIGTERM.

    The signals are handled here, not by rclpy. A process started with SIGINT ignored (a
    shell's background job, and so every node of a test run started that way) keeps it
    ignored in Python; rclpy's handler (Kilted wheels) then relies on waking the executor
    alone, and that missed SIGINTs sent in the first instants of ``spin()``: a lone labeler
    stayed in rcl_wait for good in 3 of 16 tries. A Python handler only runs when the main
    thread is in Python, so the executor waits at most ``STOP_POLL_S`` at a time. The ROS
    context stays valid until the nodes are closed, so their threads never publish into a
    dead one.
    """
    # A thread that waits for the GIL gets it only when the holder's switch interval runs out
    # (5 ms by default), and a policy step is dozens of torch calls that each give the GIL
    # back: beside the executor's and the simulator's busy Python threads, each of those
    # waits adds up to a step many times as long (docs/status.md has the figures).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    rclpy.init(args=args if args is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # `kill -USR1 PID` prints every thread's stack to stderr: how to see where a node hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    executor = MultiThreadedExecutor()
    nodes: list[Node] = []
    try:
        for factory in factories:
            if stop.is_set():
                break
            try:
                nodes.append(factory())
            except (ValueError, OSError, ImportError, ParameterException) as err:
                # A bad config file or parameter (or a parameter of the wrong type), a device
                # that is not there (spacenavd not running, no camera) or its optional driver
                # package: one line, as the CLI says it, no traceback.
                name = re.sub(r"(?<!^)(?=[A-Z])", "_", getattr(factory, "__name__", "node"))
                print(f"{name.lower()}: error: {err}", file=sys.stderr)  # SimRobot: sim_robot
                return 2
            executor.add_node(nodes[-1])
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except ExternalShutdownException:
        pass
    finally:
        # Long work in a callback (a fine-tuning round a /fosp/finetune call waits for) is
        # told to end now: the executor below waits for every callback under way.
        for node in nodes:
            request_stop = getattr(node, "request_stop", None)
            if request_stop is not None:
                request_stop()
        # rclpy's MultiThreadedExecutor.shutdown destroys its guard condition before it waits
        # for its threads, and a callback still running then ends by triggering that guard:
        # "The following exception was never retrieved: cannot use Destroyable ...", on every
        # Ctrl-C that caught a callback under way (Kilted 9.1.2, measured 3 of 3). Waiting
        # for the worker threads first lets them finish against a live guard.
        # Its ThreadPoolExecutor is private: where an rclpy has none, shut down as before.
        pool = getattr(executor, "_executor", None)
        if pool is not None:
            pool.shutdown(wait=True)
        executor.shutdown(timeout_sec=2.0)
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def config_parameter(node: Node) -> str:
    """The ``config`` parameter of every fosp node: the project YAML's path ('' = default)."""
    return node.declare_parameter("config", "").get_parameter_value().string_value


def subscribe_with_info(node: Node, msg_type, topic: str, callback,
                        qos: int | QoSProfile) -> bool:
    """Subscribe ``callback(msg, info)``, info being the message info (its DDS source
    timestamp). rclpy before Iron (Humble) hands callbacks no info: there ``info`` is None.
    ``qos``: a depth (reliable) or a profile. Returns whether the info is given."""
    if hasattr(Subscription, "CallbackType"):  # rclpy >= Iron: two-argument callbacks
        node.create_subscription(msg_type, topic, callback, qos)
        return True
    node.create_subscription(msg_type, topic, lambda msg: callback(msg, None), qos)
    return False


def source_timestamp(info) -> int:
    """When the publisher wrote the message (its system clock, ns); 0 where unknown."""
    return (info or {}).get("source_timestamp") or 0


def message_age(info) -> float:
    """Seconds since the publisher wrote the message, from its DDS source timestamp (system
    clock, ns), so a message that waited in a queue is not taken for a fresh one; the two
    machines' clocks must agree (chrony / PTP). 0 where there is none (Humble). Negative (the
    publisher's clock is ahead) counts as 0."""
    stamp = source_timestamp(info)
    return max(0.0, (time.time_ns() - stamp) * 1e-9) if stamp > 0 else 0.0
