"""fosp_core never imports ROS: it must run (train, evaluate, collect) where ROS is absent."""

import subprocess
import sys

from tests.ros_graph import REPO


def test_fosp_core_imports_no_ros():
    code = """
import importlib, pkgutil, sys
import fosp_core
for info in pkgutil.walk_packages(fosp_core.__path__, "fosp_core."):
    importlib.import_module(info.name)
from fosp_core.cli import build_parser
build_parser()
ros = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "rosidl_runtime_py",
             "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs"))
print(ros)
assert not ros, ros
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
