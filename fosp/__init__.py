"""The ``fosp`` command line, above the libraries: fosp_core (learning, the twin), fosp_ros
(the ROS graph) and fosp_teleop (teleoperation)."""
