"""Helpers for tests that run fosp nodes as separate processes over real DDS on loopback."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

REPO = Path(__file__).resolve().parents[1]
_domains = itertools.count((os.getpid() % 50) * 4 + 10)


def new_domain_id() -> int:
    """A ROS_DOMAIN_ID per test (0-232 are valid), so parallel runs never see each other."""
    return next(_domains) % 200 + 10


def ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # traffic stays on loopback
    env.setdefault("MUJOCO_GL", "egl")
    return env


class NodeProcess:
    """``python -m module --ros-args ...`` in its own process; stopped with SIGINT."""

    def __init__(self, module: str, domain_id: int, params: dict[str, object] | None = None,
                 log_dir: Path | None = None):
        args = [sys.executable, "-m", module, "--ros-args"]
        for key, value in (params or {}).items():
            args += ["-p", f"{key}:={value}"]
        self.log_path = (log_dir or Path("/tmp")) / f"{module.rsplit('.', 1)[-1]}-{domain_id}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=ros_env(domain_id), cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class RosClient:
    """An rclpy node in this process, spun on a background thread, in its own context."""

    def __init__(self, domain_id: int, name: str = "test_client"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under it
            pass

    def call(self, srv_type, name: str, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available")
        future = client.call_async(srv_type.Request())
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {name} did not answer")
            time.sleep(0.01)
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2.0)


def stop_all(procs) -> None:
    """Stop every process, then fail naming those that did not exit cleanly (none is left)."""
    codes = [(p, p.stop()) for p in procs]
    failed = [f"{p.log_path.name} exited {code}:\n{p.log()}" for p, code in codes if code != 0]
    assert not failed, "\n".join(failed)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
