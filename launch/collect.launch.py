"""Teleoperated demonstrations: ``ros2 launch fosp_teleop collect.launch.py``.

Arguments: ``use_sim`` (true: the MuJoCo twin stands in for franka_ros2 and the camera),
``out`` (dataset directory), ``device`` (spacenavd | spacenav_topics | pyspacemouse; the
keyboard needs a terminal: ``ros2 run fosp_teleop teleop --ros-args -p device:=keyboard``),
``camera`` (on the robot: fosp | realsense-ros | none), ``controller`` ('' = the config's
``ros.controller``), ``config`` ('' = the installed config/safereach.yaml), ``task``
(simulated task). Every argument is checked before a node starts
(``fosp_ros.graph.launch_plan``); the nodes are ``fosp_ros.graph``'s, the ones
``fosp bringup collect`` starts in one process.
"""

from fosp_ros.launch_description import launch_description

GRAPH = "collect"
ARGUMENTS = {"use_sim": "true", "config": "", "out": "data/teleop", "device": "spacenavd",
             "task": "", "camera": "fosp", "controller": ""}


def generate_launch_description():
    return launch_description(GRAPH, ARGUMENTS)
