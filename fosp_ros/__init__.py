"""ROS 2 nodes for FOSP: thin rclpy adapters over ``fosp_core`` (camera, Franka interface with
the safety shield, simulated robot, labeler, policy, learner). The nodes arrive with the ROS
graph work; this package is importable without ROS until then."""
