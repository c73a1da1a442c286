"""run_nodes: a node stops cleanly on SIGINT (Ctrl-C) and on SIGTERM (ros2 launch, docker stop)."""

import signal
import subprocess

import pytest

from tests.ros_graph import NodeProcess, RosClient, new_domain_id, wait_for


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_idle_node_exits_cleanly_on_signal(sig, tmp_path):
    # The sim labeler has no timer: with nothing to relay its executor waits in rcl_wait, where
    # a Python-level signal handler never runs (an earlier SIGTERM handler of ours did not).
    domain = new_domain_id()
    node = NodeProcess("fosp_ros.labeler", domain, log_dir=tmp_path)
    client = RosClient(domain)
    try:
        wait_for(lambda: "labeler" in client.node.get_node_names(), 30, "the labeler")
    finally:
        client.close()
    node.proc.send_signal(sig)
    try:
        code = node.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        node.stop()
        pytest.fail(f"labeler still running 15 s after {sig.name}:\n{node.log()}")
    assert code == 0, node.log()
