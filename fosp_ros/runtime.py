"""Running rclpy nodes: one place for init, the executor and a clean shutdown.

rclpy can abort at interpreter exit if the executor is not shut down and its threads joined
before ``rclpy.shutdown()``; every node's ``main`` goes through ``run_nodes``.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_nodes(factories: list[Callable[[], Node]], args: list[str] | None = None) -> int:
    """Create the nodes, spin them on one multi-threaded executor until SIGINT/SIGTERM.

    Both signals are rclpy's to handle (``rclpy.init`` installs C handlers that wake the
    executor): a Python ``signal.signal`` handler would only run once the main thread leaves
    rcl_wait, which an idle node never does.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    executor = MultiThreadedExecutor()
    nodes: list[Node] = []
    # `kill -USR1 PID` prints every thread's stack to stderr: how to see where a node hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        for factory in factories:
            nodes.append(factory())
            executor.add_node(nodes[-1])
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGINT shuts the context down from a signal handler; if that lands while spin() is
        # building its wait set, rclpy raises this instead of ExternalShutdownException.
        if rclpy.ok():
            raise
    finally:
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
