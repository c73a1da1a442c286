"""Helpers for tests that run fosp nodes as separate processes over real DDS on loopback."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fosp_ros.ros_client import RosClient  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
_domains = itertools.count((os.getpid() % 22) * 4)


def new_domain_id() -> int:
    """A ROS_DOMAIN_ID per test, so parallel runs never see each other.

    Only 10-99: DDS binds ports from 7400 + 250 * id, and above 101 they fall in Linux's
    ephemeral range (32768+), where other sockets may take them (ROS recommends 0-101).
    """
    return next(_domains) % 90 + 10


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

    def _dump_stacks(self) -> None:
        """Ask a hung node for its threads' stacks (run_nodes registers SIGUSR1), into its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT, then SIGTERM, then SIGKILL, each after ``timeout`` s: ros2 launch's order.

        ``timeout`` is longer than a node may take to close (the learner lets its round finish
        its current step, joins its worker and saves).
        """
        for attempt, sig in enumerate((signal.SIGINT, signal.SIGTERM, signal.SIGKILL)):
            if self.proc.poll() is not None:
                break
            if attempt:
                self._dump_stacks()
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


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
